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
    /// Check or back up the database.
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
    /// Verify every record (and, when the server is stopped, redb's page structure).
    Check,
    /// Write a consistent copy of the database to FILE (works while serving).
    Backup { file: PathBuf },
}

pub fn run(cli: Cli) -> Result<(), AppError> {
    let is_serve = matches!(cli.command, Command::Serve);
    init_logging(if is_serve { "info" } else { "warn" });
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
            let v = admin(&config, AdminRequest::DbCheck)?;
            println!(
                "database OK: {} users, {} sessions, {} audit rows, {} regulation counters",
                v["users"], v["sessions"], v["audit"], v["regulation"]
            );
            Ok(())
        }
        Command::Db(DbCommand::Backup { file }) => {
            let path = absolute(&file)?;
            let v = admin(&config, AdminRequest::DbBackup { path: path.clone() })?;
            println!(
                "backup written to {} ({} users, {} sessions)",
                path.display(),
                v["rows"]["users"],
                v["rows"]["sessions"]
            );
            Ok(())
        }
        Command::Diagnose { json, tenant } => diagnose(&config, json, &tenant),
        Command::Sync(args) => sync(&config, args),
        Command::Audit { limit, json } => {
            let v = admin(&config, AdminRequest::Audit { limit })?;
            if json {
                print_json(&v);
            } else {
                for row in v.as_array().into_iter().flatten() {
                    println!(
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

fn sync(config: &Config, a: SyncArgs) -> Result<(), AppError> {
    let req = match (a.list, a.retry, a.drop) {
        (true, _, _) => AdminRequest::SyncList,
        (_, Some(id), _) => AdminRequest::SyncRetry { id },
        (_, _, Some(id)) => AdminRequest::SyncDrop { id },
        _ => AdminRequest::SyncOnce,
    };
    let listing = matches!(req, AdminRequest::SyncList);
    let once = matches!(req, AdminRequest::SyncOnce);
    let v = admin(config, req)?;
    if a.json {
        print_json(&v);
    } else if listing {
        let items = v.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            println!("the sync queue is empty");
        }
        for i in items {
            println!(
                "#{:<5} {:<16} {}@{} {} (attempts {}){}",
                i["id"],
                str_of(&i["kind"]),
                str_of(&i["username"]),
                str_of(&i["tenant"]),
                str_of(&i["status"]),
                i["attempts"],
                i["last_error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    } else if once {
        println!(
            "sync: {} replayed, {} superseded, {} failed, {} dead; {} users pulled, {} disabled{}",
            v["replayed"],
            v["superseded"],
            v["failed"],
            v["dead"],
            v["pulled"],
            v["disabled"],
            v["error"]
                .as_str()
                .map(|e| format!("; stopped: {e}"))
                .unwrap_or_default()
        );
    } else {
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    }
    Ok(())
}

fn diagnose(config: &Config, json: bool, tenant: &str) -> Result<(), AppError> {
    if !config.keycloak.enabled() {
        return Err(AppError::Usage(format!(
            "no Keycloak is configured in {} ([keycloak] server); nothing to diagnose",
            config.origin
        )));
    }
    let tenant = crate::domain::Tenant::parse(tenant).map_err(AppError::Usage)?;
    // Works while serving too: the checks need the store only to persist discovery, so a
    // scratch store is used when the real one is locked.
    let mut scratch_dir = None;
    let store = match crate::store::Store::open(&config.server.data_dir) {
        Ok(s) => s,
        Err(crate::store::StoreError::Locked { .. }) => {
            let (dir, s) = tempdir_store()?;
            scratch_dir = Some((dir, ()));
            s
        }
        Err(e) => return Err(e.into()),
    };
    let kc = crate::keycloak::Keycloak::from_config(config, &store, &config.origin)?
        .ok_or_else(|| AppError::Usage("no Keycloak configured".into()))?;
    let checks = crate::keycloak::diagnose::run(&kc.tier(&tenant), &store);
    if json {
        print_json(&serde_json::to_value(&checks).unwrap_or_default());
    } else {
        for c in &checks {
            println!(
                "{} {:<18} {}",
                if c.ok { "OK  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    drop(kc);
    drop(store);
    if let Some((dir, _)) = scratch_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if checks.iter().all(|c| c.ok) {
        Ok(())
    } else {
        Err(AppError::Refused(format!(
            "{} of {} checks failed",
            checks.iter().filter(|c| !c.ok).count(),
            checks.len()
        )))
    }
}

fn tempdir_store() -> Result<(PathBuf, crate::store::Store), AppError> {
    let dir = std::env::temp_dir().join(format!("edgeauth-diagnose-{}", std::process::id()));
    let store = crate::store::Store::open(&dir)?;
    Ok((dir, store))
}

fn init_logging(default: &str) {
    let env = env_logger::Env::new().filter_or("EDGEAUTH_LOG", default);
    let _ = env_logger::Builder::from_env(env)
        .format_target(false)
        .try_init();
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
            Reach::NoServer => {
                let opened = if matches!(req, AdminRequest::DbCheck) {
                    App::open_checked(config.clone())
                } else {
                    App::open(config.clone())
                };
                match opened {
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
                }
            }
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

fn user(config: &Config, cmd: UserCommand) -> Result<(), AppError> {
    match cmd {
        UserCommand::Add {
            user,
            roles,
            groups,
            local,
            password_stdin,
            email,
            first_name,
            last_name,
        } => {
            let password = read_password(password_stdin, true)?;
            let v = admin(
                config,
                AdminRequest::UserAdd {
                    tenant: user.tenant,
                    username: user.name,
                    roles,
                    groups,
                    local,
                    password,
                    profile: crate::keycloak::admin::Profile {
                        email,
                        first_name,
                        last_name,
                    },
                },
            )?;
            println!(
                "added {}@{} ({})",
                str_of(&v["username"]),
                str_of(&v["tenant"]),
                str_of(&v["source"])
            );
        }
        UserCommand::List { tenant, json } => {
            let v = admin(config, AdminRequest::UserList { tenant })?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{:<24} {:<12} {:<9} {:<8} ROLES",
                    "USERNAME", "TENANT", "SOURCE", "ENABLED"
                );
                for u in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<12} {:<9} {:<8} {}",
                        str_of(&u["username"]),
                        str_of(&u["tenant"]),
                        str_of(&u["source"]),
                        if u["enabled"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        join(&u["roles"])
                    );
                }
            }
        }
        UserCommand::Show { user, json } => {
            let v = admin(
                config,
                AdminRequest::UserShow {
                    tenant: user.tenant,
                    username: user.name,
                },
            )?;
            if json {
                print_json(&v);
            } else {
                println!("username:         {}", str_of(&v["username"]));
                println!("tenant:           {}", str_of(&v["tenant"]));
                println!("source:           {}", str_of(&v["source"]));
                println!("enabled:          {}", v["enabled"]);
                println!("roles:            {}", join(&v["roles"]));
                println!("groups:           {}", join(&v["groups"]));
                println!(
                    "created:          {}",
                    v["created_at"].as_u64().map(rfc3339).unwrap_or_default()
                );
                println!(
                    "updated:          {}",
                    v["updated_at"].as_u64().map(rfc3339).unwrap_or_default()
                );
                println!(
                    "last online auth: {}",
                    v["last_online_auth"]
                        .as_u64()
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
        UserCommand::Disable(u) => {
            let v = admin(
                config,
                AdminRequest::UserSetEnabled {
                    tenant: u.tenant.clone(),
                    username: u.name.clone(),
                    enabled: false,
                },
            )?;
            println!(
                "disabled {}@{}; {} sessions ended",
                u.name, u.tenant, v["revoked_sessions"]
            );
        }
        UserCommand::Enable(u) => {
            admin(
                config,
                AdminRequest::UserSetEnabled {
                    tenant: u.tenant.clone(),
                    username: u.name.clone(),
                    enabled: true,
                },
            )?;
            println!("enabled {}@{}", u.name, u.tenant);
        }
        UserCommand::Remove(u) => {
            let v = admin(
                config,
                AdminRequest::UserRemove {
                    tenant: u.tenant.clone(),
                    username: u.name.clone(),
                },
            )?;
            println!(
                "removed {}@{}; {} sessions deleted",
                u.name, u.tenant, v["deleted_sessions"]
            );
        }
        UserCommand::Group(g) => {
            let (name, group, tenant, join) = match g {
                GroupCommand::Add {
                    name,
                    group,
                    tenant,
                } => (name, group, tenant, true),
                GroupCommand::Remove {
                    name,
                    group,
                    tenant,
                } => (name, group, tenant, false),
            };
            let v = admin(
                config,
                AdminRequest::UserGroup {
                    tenant: tenant.clone(),
                    username: name.clone(),
                    group,
                    join,
                },
            )?;
            println!("{name}@{tenant} groups: {}", self::join(&v["groups"]));
        }
        UserCommand::Passwd {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin, true)?;
            let v = admin(
                config,
                AdminRequest::UserPasswd {
                    tenant: user.tenant.clone(),
                    username: user.name.clone(),
                    password,
                },
            )?;
            println!(
                "password set for {}@{}; {} sessions ended",
                user.name, user.tenant, v["revoked_sessions"]
            );
        }
    }
    Ok(())
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
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_status(v: &Value) {
    let k = &v["keycloak"];
    println!("mode:      {}", str_of(&v["mode"]));
    println!("keycloak:  {}", str_of(&k["status"]));
    let s = &v["sessions"];
    println!(
        "sessions:  {} active ({} keycloak, {} cached, {} local), {} expiring within the hour",
        s["active"], s["keycloak"], s["cached"], s["local"], s["expiring_soon"]
    );
    println!("users:     {}", v["users"]);
    let q = &v["sync"];
    println!(
        "sync:      {} pending, {} failed, {} dead",
        q["pending"], q["failed"], q["dead"]
    );
    println!("started:   {}", str_of(&v["started_at"]));
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("alerts:    none");
    }
    for a in alerts {
        println!(
            "ALERT {} [{}] since {}: {}",
            str_of(&a["name"]),
            str_of(&a["severity"]),
            str_of(&a["since"]),
            str_of(&a["message"])
        );
    }
}

fn init(args: &InitArgs) -> Result<(), AppError> {
    let dir = &args.dir;
    let io = |what: &Path, e: std::io::Error| AppError::Runtime(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let config_path = dir.join("edgeauth.toml");
    let tls_dir = dir.join("tls");
    let (cert_path, key_path) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    for p in [&config_path, &cert_path, &key_path] {
        if p.exists() {
            return Err(AppError::Refused(format!(
                "{} already exists; init never overwrites (move it away first)",
                p.display()
            )));
        }
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    if !args.listen.ip().is_unspecified() {
        names.push(args.listen.ip().to_string());
    }
    names.extend(args.sans.iter().cloned());
    let (cert, key) = crate::tls::self_signed(&names).map_err(AppError::Runtime)?;
    std::fs::create_dir_all(&tls_dir).map_err(|e| io(&tls_dir, e))?;
    std::fs::write(&cert_path, cert).map_err(|e| io(&cert_path, e))?;
    crate::crypto::write_private(&key_path, key.as_bytes()).map_err(|e| io(&key_path, e))?;
    let text = format!(
        "# Written by `edgeauth init`. Every key, documented with its default: config/edgeauth.toml\n\
         # in the edgeauth sources. Relative paths are taken from this file's folder.\n\n\
         [server]\nlisten = \"{}\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\ndata_dir = {:?}\n\n\
         # [keycloak]\n# server = \"https://sso.example.org\"\n# realm = \"staff\"\n# client_id = \"edgeauth\"\n\
         # client_secret_file = \"client-secret\"\n",
        args.listen,
        args.data_dir.display().to_string()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config_path)
        .map_err(|e| io(&config_path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io(&config_path, e))?;
    drop(f);
    // Open once so the data dir, the database and the sealing key exist with the right modes.
    let (config, _) = Config::load(Some(&config_path))?;
    let data_dir = config.server.data_dir.clone();
    drop(App::open(config)?);
    println!("wrote {}", config_path.display());
    println!(
        "wrote {} (self-signed for {})",
        cert_path.display(),
        names.join(", ")
    );
    println!("wrote {} (mode 0600)", key_path.display());
    println!(
        "created {} with the database and its sealing key",
        data_dir.display()
    );
    println!(
        "next: edgeauth --config {} user add NAME --local",
        config_path.display()
    );
    println!("then: edgeauth --config {} serve", config_path.display());
    Ok(())
}
