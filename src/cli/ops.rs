//! Operations commands: `init` (config, TLS pair, data dir), `diagnose` (the way to
//! Keycloak), `sync` (the queue).

use super::*;

pub(super) fn sync(config: &Config, a: SyncArgs) -> Result<(), AppError> {
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
            outln!("the sync queue is empty");
        }
        for i in items {
            outln!(
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
        outln!(
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
        outln!("{}", serde_json::to_string(&v).unwrap_or_default());
    }
    Ok(())
}

pub(super) fn diagnose(config: &Config, json: bool, tenant: &str) -> Result<(), AppError> {
    if !config.keycloak.enabled() {
        return Err(AppError::Usage(format!(
            "no Keycloak is configured in {} ([keycloak] server); nothing to diagnose",
            config.origin
        )));
    }
    let tenant = crate::domain::Tenant::parse(tenant).map_err(AppError::Usage)?;
    // Reads only: works while serving too, and needs no store.
    let client = crate::upstream::realm::client_for(config, &tenant)?
        .ok_or_else(|| AppError::Usage("no Keycloak configured".into()))?;
    let checks = crate::keycloak::diagnose::run(&client);
    if json {
        print_json(&serde_json::to_value(&checks).unwrap_or_default());
    } else {
        for c in &checks {
            outln!("{} {:<18} {}", c.result.label(), c.name, c.detail);
        }
    }
    if checks.iter().all(|c| c.ok()) {
        Ok(())
    } else {
        Err(AppError::Refused(format!(
            "{} of {} checks failed",
            checks.iter().filter(|c| !c.ok()).count(),
            checks.len()
        )))
    }
}

pub(super) fn init(args: &InitArgs) -> Result<(), AppError> {
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
    outln!("wrote {}", config_path.display());
    outln!(
        "wrote {} (self-signed for {})",
        cert_path.display(),
        names.join(", ")
    );
    outln!("wrote {} (mode 0600)", key_path.display());
    outln!(
        "created {} with the database and its sealing key",
        data_dir.display()
    );
    outln!(
        "next: edgeauth --config {} user add NAME --local",
        config_path.display()
    );
    outln!("then: edgeauth --config {} serve", config_path.display());
    Ok(())
}

/// `edgeauth db restore FILE`: checks FILE (integrity, schema, every record, the sealing key's
/// identity against seal.key) before anything is replaced, refuses while a server runs, and
/// keeps the replaced database beside the new one.
pub(super) fn restore(config: &Config, file: &Path) -> Result<(), AppError> {
    use crate::store::backup::{check_file, key_id_hex, replace_file};
    let dir = &config.server.data_dir;
    if let Reach::Answered(_) = socket::call(dir, &AdminRequest::Status) {
        return Err(AppError::Refused(format!(
            "edgeauth serve is running with data dir {}; stop it first (`systemctl stop edgeauth`), then restore",
            dir.display()
        )));
    }
    let checked = check_file(file)?;
    let key_path = dir.join(crate::crypto::SEAL_KEY_FILE);
    let snapshot_id = checked.seal_key_id.map(key_id_hex);
    if !key_path.exists() {
        return Err(AppError::Refused(format!(
            "{} is missing: put back the seal.key kept with your backups first{}, then restore",
            key_path.display(),
            snapshot_id
                .as_deref()
                .map(|id| format!(
                    " (the one with id {id}, which {} was sealed with)",
                    file.display()
                ))
                .unwrap_or_default()
        )));
    }
    let sealer = crate::crypto::Sealer::load(&key_path)?;
    match checked.seal_key_id {
        Some(id) if id != sealer.id() => {
            return Err(AppError::Refused(format!(
                "{} was sealed with key id {}, but {} has id {}; put back the matching seal.key (kept with that backup) or choose a snapshot made with this key",
                file.display(),
                key_id_hex(id),
                key_path.display(),
                key_id_hex(sealer.id())
            )));
        }
        Some(_) => {}
        None => eprintln!(
            "edgeauth: warning: {} records no sealing key identity (made before edgeauth recorded one); sealed Keycloak tokens and queued passwords in it open only with the key it was made with",
            file.display()
        ),
    }
    crate::store::ensure_private_dir(dir)?;
    let dest = dir.join(crate::store::DB_FILE);
    let now = crate::store::unix_now();
    let kept = replace_file(file, &dest, now)?;
    // The restored file opens as the server will open it (and is adopted by this key if it
    // recorded none).
    drop(App::open(config.clone())?);
    outln!(
        "restored {} into {} ({} users, {} sessions, {} audit rows; key id {})",
        file.display(),
        dest.display(),
        checked.rows.users,
        checked.rows.sessions,
        checked.rows.audit,
        key_id_hex(sealer.id())
    );
    if let Some(k) = kept {
        outln!("the replaced database is kept as {}", k.display());
    }
    Ok(())
}
