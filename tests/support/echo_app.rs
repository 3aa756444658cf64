//! A tiny protected web app for the proxy and browser tests: it answers every request with a
//! page that names the app and the user it was told about, and echoes each identity header it
//! received back as `X-Echo-<name>` (so a test sees exactly what reached the app, and that a
//! header a client forged did not).
//!
//! One thread per connection, one request per connection (`Connection: close`), loopback only;
//! the accept loop ends when the app is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct EchoApp {
    pub name: String,
    pub port: u16,
    stop: Arc<AtomicBool>,
}

/// The request headers the app echoes (lower-case): the identity headers edgeauth's verify
/// sets and the forwarding headers a proxy adds.
fn echoed(name: &str) -> bool {
    name.starts_with("remote-") || name.starts_with("x-forwarded-") || name == "x-real-ip"
}

impl EchoApp {
    pub fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, app) = (stop.clone(), name.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    let app = app.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &app);
                    });
                }
            }
        });
        EchoApp {
            name: name.to_owned(),
            port,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, app: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "content-length" {
                content_length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    if content_length > 0 {
        let mut body = vec![0; content_length.min(1 << 20)];
        std::io::Read::read_exact(&mut reader, &mut body)?;
    }
    let user = headers
        .iter()
        .find(|(k, _)| k == "remote-user")
        .map_or("nobody", |(_, v)| v.as_str());
    let mut rows = String::new();
    let mut echo = String::new();
    for (k, v) in headers.iter().filter(|(k, _)| echoed(k)) {
        rows.push_str(&format!(
            "<tr><th>{k}</th><td id=\"h-{k}\">{v}</td></tr>",
            k = escape(k),
            v = escape(v)
        ));
        // Only visible ASCII goes back into a header (a test app, but no header injection).
        if v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            echo.push_str(&format!("x-echo-{k}: {v}\r\n"));
        }
    }
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{app}</title></head>\
         <body><h1 id=\"app\">{app}</h1><p>Signed in as <strong id=\"user\">{user}</strong></p>\
         <p id=\"path\">{path}</p><table id=\"headers\">{rows}</table></body></html>\n",
        app = escape(app),
        user = escape(user),
        path = escape(&path),
    );
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         x-echo-app: {app}\r\n{echo}connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
