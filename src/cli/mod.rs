//! Command line (design §7): clap definitions and their handlers.
//!
//! Admin commands go to the running server over its admin socket when there is one, and open
//! the database directly when there is not; the operator never has to know which.
//! Passwords never come from argv: a prompt on a TTY, or `--password-stdin`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::admin::socket::{self, Reach};
use crate::admin::{AdminRequest, execute};
use crate::app::App;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::crypto::Secret;
use crate::domain::DEFAULT_TENANT;
use crate::error::AppError;

/// `println!` for the CLI: through [`out::line`], so a closed pipe is not a panic.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::out::line(format_args!($($t)*))
    };
}

mod access;
mod ops;
mod out;
mod user;

pub use access::{AccessCommand, CheckArgs};
use ops::{diagnose, init, sync};
use user::user;

#[derive(Debug, Parser)]
#[command(
    name = "edgeauth",
    version,
    about = "The site's login endpoint, in front of Keycloak and through its outages"
)]
pub struct Cli {
    /// Config file (TOML). Without it and without EDGEAUTH_CONFIG: the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance.
    Serve,
    /// Write a config, a data dir with its sealing key, and a self-signed TLS certificate.
    Init(InitArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Replay the sync queue and pull central changes now, or manage the queue.
    Sync(SyncArgs),
    /// Mode, Keycloak, sessions and alerts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check, back up or restore the database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Check the way to Keycloak: DNS, TCP, TLS and certificate expiry, discovery, JWKS,
    /// clock skew, client credentials, health. One line each; exit 1 if any fails.
    Diagnose {
        #[arg(long)]
        json: bool,
        /// The tenant whose realm and client to check.
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Access rules: `access check` says which rule decides a request and why.
    #[command(subcommand)]
    Access(AccessCommand),
    /// The newest audit rows (logins, logouts, password and account changes).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder for edgeauth.toml and tls/.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Data folder written into the config (relative paths are taken from --dir).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Address of the TLS listener.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses for the certificate (repeatable).
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UserRef {
    pub name: String,
    #[arg(long, default_value = DEFAULT_TENANT)]
    pub tenant: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (asks for the password, or reads it with --password-stdin).
    Add {
        #[command(flatten)]
        user: UserRef,
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// A local user (lives only on this appliance, never sent to Keycloak).
        #[arg(long)]
        local: bool,
        #[arg(long)]
        password_stdin: bool,
        /// E-mail of a new Keycloak user (Keycloak 26 needs e-mail and names before a
        /// password login works).
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
    },
    /// List users.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one user.
    Show {
        #[command(flatten)]
        user: UserRef,
        #[arg(long)]
        json: bool,
    },
    /// Disable a user and end their sessions.
    Disable(UserRef),
    /// Enable a user.
    Enable(UserRef),
    /// Remove a user and their sessions.
    Remove(UserRef),
    /// Change a user's groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Set a user's password and end their sessions.
    Passwd {
        #[command(flatten)]
        user: UserRef,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Run one cycle and print what it did (the default without other flags).
    #[arg(long)]
    pub once: bool,
    /// List pending, failed and dead items (never their payloads).
    #[arg(long, conflicts_with_all = ["once", "retry", "drop"])]
    pub list: bool,
    /// Put a dead item back in the queue.
    #[arg(long, value_name = "ID", conflicts_with_all = ["once", "drop"])]
    pub retry: Option<u64>,
    /// Delete a dead or finished item.
    #[arg(long, value_name = "ID", conflicts_with = "once")]
    pub drop: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add the user to a group (in Keycloak too, for Keycloak users).
    Add {
        name: String,
        group: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Remove the user from a group.
    Remove {
        name: String,
        group: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Verify every record (and, when the server is stopped, every page's checksum); the
    /// file is never modified.
    Check,
    /// Write a consistent copy of the database to FILE (works while serving).
    Backup { file: PathBuf },
    /// Replace the database with FILE (a snapshot or backup), after checking it: integrity,
    /// schema, and that seal.key is the key it was sealed with. The server must be stopped;
    /// the replaced file is kept beside it.
    Restore { file: PathBuf },
}

pub fn run(cli: Cli) -> Result<(), AppError> {
    let is_serve = matches!(cli.command, Command::Serve);
    init_logging(if is_serve { "info" } else { "warn" }, is_serve);
    if let Command::Init(args) = &cli.command {
        return init(args);
    }
    let (config, source) = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => crate::serve::run(config, source),
        Command::Init(_) => Ok(()),
        Command::User(cmd) => user(&config, cmd),
        Command::Status { json } => {
            let v = admin(&config, AdminRequest::Status)?;
            if json {
                print_json(&v)
            } else {
                print_status(&v)
            }
            Ok(())
        }
        Command::Db(DbCommand::Check) => {
            let v = match socket::call(&config.server.data_dir, &AdminRequest::DbCheck) {
                Reach::Answered(r) => r?,
                Reach::NoServer => {
                    let path = config.server.data_dir.join(crate::store::DB_FILE);
                    let c = crate::store::backup::check_file(&path)
                        .map_err(|e| e.with_restore(crate::app::restore_hint(&config)))?;
                    serde_json::to_value(&c.rows).unwrap_or_default()
                }
            };
            outln!(
                "database OK: {} users, {} sessions, {} audit rows, {} regulation counters",
                v["users"],
                v["sessions"],
                v["audit"],
                v["regulation"]
            );
            Ok(())
        }
        Command::Db(DbCommand::Backup { file }) => {
            let path = absolute(&file)?;
            let v = admin(&config, AdminRequest::DbBackup { path: path.clone() })?;
            outln!(
                "backup written to {} ({} users, {} sessions)",
                path.display(),
                v["rows"]["users"],
                v["rows"]["sessions"]
            );
            Ok(())
        }
        Command::Db(DbCommand::Restore { file }) => ops::restore(&config, &absolute(&file)?),
        Command::Diagnose { json, tenant } => diagnose(&config, json, &tenant),
        Command::Sync(args) => sync(&config, args),
        Command::Access(cmd) => access::access(&config, cmd),
        Command::Audit { limit, json } => {
            let v = admin(&config, AdminRequest::Audit { limit })?;
            if json {
                print_json(&v);
            } else {
                for row in v.as_array().into_iter().flatten() {
                    outln!(
                        "{:>6} {} {:<15} {}@{} {} {}{}",
                        row["id"],
                        row["at"].as_u64().map(rfc3339).unwrap_or_default(),
                        row["event"].as_str().unwrap_or(""),
                        row["username"].as_str().unwrap_or(""),
                        row["tenant"].as_str().unwrap_or(""),
                        row["outcome"].as_str().unwrap_or(""),
                        row["client_ip"]
                            .as_str()
                            .map(|i| format!(" from {i}"))
                            .unwrap_or_default(),
                        row["auth_mode"]
                            .as_str()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default(),
                    );
                }
            }
            Ok(())
        }
    }
}

/// The server logs through [`crate::logsink`] (the access log must not cost a write per
/// request); the other commands write to stderr directly.
fn init_logging(default: &str, server: bool) {
    let env = env_logger::Env::new().filter_or("EDGEAUTH_LOG", default);
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_target(false);
    if server && let Some(w) = crate::logsink::start() {
        builder.target(env_logger::Target::Pipe(Box::new(w)));
    }
    let _ = builder.try_init();
}

fn absolute(p: &Path) -> Result<PathBuf, AppError> {
    std::path::absolute(p).map_err(|e| AppError::Usage(format!("{}: {e}", p.display())))
}

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Runtime(format!("cannot start the async runtime: {e}")))
}

/// Sends the request to the running server, or runs it on the database directly. When the
/// database is locked but no server answers yet (one is starting, or another command holds
/// it for a moment), it tries both again for a few seconds before giving up.
fn admin(config: &Config, req: AdminRequest) -> Result<Value, AppError> {
    let started = std::time::Instant::now();
    loop {
        match socket::call(&config.server.data_dir, &req) {
            Reach::Answered(r) => return r,
            Reach::NoServer => match App::open(config.clone()) {
                Ok(app) => {
                    let app: Arc<App> = app;
                    return runtime()?.block_on(execute(&app, req));
                }
                Err(AppError::Store(crate::store::StoreError::Locked { .. }))
                    if started.elapsed() < crate::serve::LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            },
        }
    }
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<Secret, AppError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| AppError::Usage(format!("cannot read the password from stdin: {e}")))?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            return Err(AppError::Usage("no password on stdin".into()));
        }
        return Ok(Secret::new(pw));
    }
    if !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(
            "no terminal to ask for the password; pipe it in with --password-stdin".into(),
        ));
    }
    let pw = rpassword::prompt_password("Password: ")
        .map_err(|e| AppError::Usage(format!("cannot read the password: {e}")))?;
    if confirm {
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| AppError::Usage(format!("cannot read the password: {e}")))?;
        if again != pw {
            return Err(AppError::Usage("the two passwords differ".into()));
        }
    }
    Ok(Secret::new(pw))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_status(v: &Value) {
    let k = &v["keycloak"];
    outln!("mode:      {}", str_of(&v["mode"]));
    outln!("keycloak:  {}", str_of(&k["status"]));
    let s = &v["sessions"];
    outln!(
        "sessions:  {} active ({} keycloak, {} cached, {} local), {} expiring within the hour",
        s["active"],
        s["keycloak"],
        s["cached"],
        s["local"],
        s["expiring_soon"]
    );
    outln!("users:     {}", v["users"]);
    let q = &v["sync"];
    outln!(
        "sync:      {} pending, {} failed, {} dead",
        q["pending"],
        q["failed"],
        q["dead"]
    );
    outln!("started:   {}", str_of(&v["started_at"]));
    let st = &v["storage"];
    outln!(
        "storage:   {}{}",
        str_of(&st["status"]),
        st["detail"]
            .as_str()
            .map(|d| format!(" since {}: {d}", str_of(&st["since"])))
            .unwrap_or_default()
    );
    let b = &v["backup"];
    match b["last_snapshot"].as_object() {
        Some(s) => outln!(
            "snapshot:  {} {} ({} kept, key id {})",
            s.get("at").and_then(Value::as_str).unwrap_or(""),
            s.get("file").and_then(Value::as_str).unwrap_or(""),
            b["kept"],
            s.get("seal_key_id").and_then(Value::as_str).unwrap_or("")
        ),
        None => outln!("snapshot:  none yet (in {})", str_of(&b["dir"])),
    }
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        outln!("alerts:    none");
    }
    for a in alerts {
        outln!(
            "ALERT {} [{}] since {}: {}",
            str_of(&a["name"]),
            str_of(&a["severity"]),
            str_of(&a["since"]),
            str_of(&a["message"])
        );
    }
}
