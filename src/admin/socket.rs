//! The admin socket: `admin.sock` in the data dir, mode 0600, one JSON request line and one
//! JSON response line per connection. redb lets one process open the database, so while
//! `serve` runs this is how `edgeauth user ...` and friends reach it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::{AdminRequest, AdminResponse, execute};
use crate::app::App;
use crate::error::AppError;

pub const SOCKET_FILE: &str = "admin.sock";
/// Longest request line accepted (a user add with many roles is well under this).
const MAX_LINE: usize = 64 * 1024;
/// How long a CLI waits for the server's answer (hashing a password takes well under this).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the socket (replacing a stale file: the caller holds the database lock, so no other
/// server owns it) with mode 0600.
pub fn bind(data_dir: &Path) -> Result<UnixListener, AppError> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| {
        AppError::Runtime(format!(
            "cannot create the admin socket {}: {e}",
            path.display()
        ))
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        AppError::Runtime(format!(
            "cannot restrict the admin socket {}: {e}",
            path.display()
        ))
    })?;
    Ok(listener)
}

/// Answers admin requests until `stop` turns true, then removes the socket file.
pub async fn serve(app: Arc<App>, listener: UnixListener, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { log::warn!("admin socket accept failed: {e}"); continue; }
            },
            _ = stop.changed() => break,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_LINE as u64));
            let response: AdminResponse = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<AdminRequest>(&line) {
                    Ok(req) => execute(&app, req).await.into(),
                    Err(e) => Err::<serde_json::Value, _>(AppError::Usage(format!(
                        "bad admin request: {e}"
                    )))
                    .into(),
                },
                Err(e) => Err::<serde_json::Value, _>(AppError::Runtime(format!(
                    "admin socket read: {e}"
                )))
                .into(),
            };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
    let _ = std::fs::remove_file(socket_path(app.data_dir()));
}

/// The result of trying the socket from a CLI process.
pub enum Reach {
    /// The server answered.
    Answered(Result<serde_json::Value, AppError>),
    /// No server listens: open the database directly.
    NoServer,
}

/// Sends `req` to a running server, if there is one.
pub fn call(data_dir: &Path, req: &AdminRequest) -> Reach {
    let path = socket_path(data_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(_) => return Reach::NoServer,
    };
    let mut run = || -> Result<serde_json::Value, AppError> {
        let io =
            |e: std::io::Error| AppError::Runtime(format!("admin socket {}: {e}", path.display()));
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
        let mut line = serde_json::to_vec(req).map_err(|e| AppError::Runtime(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
        match serde_json::from_str::<AdminResponse>(&answer) {
            Ok(AdminResponse::Ok { data }) => Ok(data),
            Ok(AdminResponse::Err { exit_code, message }) => {
                Err(AppError::Remote(exit_code, message))
            }
            Err(e) => Err(AppError::Runtime(format!(
                "the server's answer could not be read: {e}"
            ))),
        }
    };
    Reach::Answered(run())
}
