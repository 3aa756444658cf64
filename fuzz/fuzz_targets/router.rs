//! The appliance's HTTP router in-process (no socket): a real `App` on a temp data dir with
//! one local user, driven with arbitrary methods, paths, headers, cookies, bearer tokens,
//! forwarded addresses and bodies (raw bytes or the API's JSON shapes with arbitrary fields).
//! A panic, a 500, or an answer that says JSON and is not, is a finding.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use edgeauth::app::App;
use edgeauth::auth::accounts::NewUser;
use edgeauth::config::Config;
use edgeauth::crypto::Secret;
use edgeauth::domain::{Source, Tenant, UserKey, Username};
use edgeauth::http::extract::Peer;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const USER: &str = "alice";
const PASSWORD: &str = "alice-password-1";

struct World {
    rt: tokio::runtime::Runtime,
    router: Router,
    /// A session id of the user, made at start (a fuzzed logout may end it: that is a path too).
    session: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "[server]\ndata_dir = {:?}\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n\
             [argon2]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n\
             [regulation]\nmax_retries = 50\nmax_retries_per_ip = 200\n",
            dir.path().join("data")
        );
        let config = Config::parse(&text, "fuzz.toml", dir.path()).expect("fuzz config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let app: Arc<App> = App::open(config).expect("app");
        let key = UserKey::new(
            Tenant::default_tenant(),
            Username::parse(USER).expect("username"),
        );
        rt.block_on(app.auth.add(NewUser {
            key,
            profile: Default::default(),
            roles: vec!["staff".into()],
            groups: vec![],
            source: Source::Local,
            password: Secret::new(PASSWORD),
        }))
        .expect("add the user");
        let router = edgeauth::http::router(app);
        let login = serde_json::json!({"username": USER, "password": PASSWORD}).to_string();
        let req = Request::post("/api/v1/login")
            .header(header::CONTENT_TYPE, "application/json")
            .extension(Peer(SocketAddr::from(([127, 0, 0, 1], 40000))))
            .body(Body::from(login))
            .expect("login request");
        let res = rt.block_on(router.clone().oneshot(req)).expect("login");
        let body = rt
            .block_on(axum::body::to_bytes(res.into_body(), 1 << 20))
            .expect("login body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("login JSON");
        let session = v["session_id"].as_str().expect("a session id").to_owned();
        World {
            rt,
            router,
            session,
            _dir: dir,
        }
    })
}

const PATHS: &[&str] = &[
    "/api/v1/login",
    "/api/v1/session",
    "/api/v1/logout",
    "/api/v1/password",
    "/api/v1/status",
    "/api/v1/verify",
    "/healthz",
    "/readyz",
    "/metrics",
    "/login",
    "/logout",
    "/password",
    "/status",
    "/static/logo",
];

const METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];

const HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-uri",
    "x-original-uri",
    "x-original-url",
    "x-original-method",
    "x-forwarded-method",
    "x-requested-with",
    "x-real-ip",
    "accept",
    "host",
    "origin",
];

#[derive(Arbitrary, Debug)]
enum Path {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Credential {
    None,
    /// The user's real session, as a cookie or a bearer.
    SessionCookie,
    SessionBearer,
    Cookie(String),
    Bearer(String),
}

#[derive(Arbitrary, Debug)]
enum Text {
    User,
    Password,
    Other(String),
}

impl Text {
    fn value(&self) -> serde_json::Value {
        match self {
            Text::User => USER.into(),
            Text::Password => PASSWORD.into(),
            Text::Other(s) => s.as_str().into(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Empty,
    Raw(Vec<u8>),
    Login {
        username: Text,
        password: Text,
        tenant: Option<String>,
    },
    Password {
        username: Text,
        old_password: Text,
        new_password: Text,
        tenant: Option<String>,
    },
    /// An object with arbitrary keys and string values.
    Object(Vec<(String, String)>),
    /// A browser form (`application/x-www-form-urlencoded`), as the pages take it.
    Form(Vec<(String, String)>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    path: Path,
    query: Option<String>,
    peer: (bool, [u8; 16], u16),
    credential: Credential,
    headers: Vec<(Name, Vec<u8>)>,
    json_content_type: bool,
    payload: Payload,
}

fn body(p: &Payload) -> Vec<u8> {
    let obj = |pairs: Vec<(&str, serde_json::Value)>| {
        let m: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::Value::Object(m).to_string().into_bytes()
    };
    match p {
        Payload::Empty => Vec::new(),
        Payload::Raw(b) => b.clone(),
        Payload::Login {
            username,
            password,
            tenant,
        } => {
            let mut v = vec![
                ("username", username.value()),
                ("password", password.value()),
            ];
            if let Some(t) = tenant {
                v.push(("tenant", t.as_str().into()));
            }
            obj(v)
        }
        Payload::Password {
            username,
            old_password,
            new_password,
            tenant,
        } => {
            let mut v = vec![
                ("username", username.value()),
                ("old_password", old_password.value()),
                ("new_password", new_password.value()),
            ];
            if let Some(t) = tenant {
                v.push(("tenant", t.as_str().into()));
            }
            obj(v)
        }
        Payload::Form(pairs) => url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes(),
        Payload::Object(pairs) => obj(pairs
            .iter()
            .map(|(k, v)| (k.as_str(), serde_json::Value::from(v.as_str())))
            .collect()),
    }
}

fuzz_target!(|input: Input| {
    let w = world();
    let method = Method::from_bytes(METHODS[usize::from(input.method) % METHODS.len()].as_bytes())
        .unwrap_or(Method::GET);
    let mut uri = match &input.path {
        Path::Known(i) => PATHS[usize::from(*i) % PATHS.len()].to_owned(),
        Path::Raw(s) => s.clone(),
    };
    if let Some(q) = &input.query {
        uri.push('?');
        uri.push_str(q);
    }
    let (v6, bytes, port) = input.peer;
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    let Ok(mut req) = Request::builder()
        .method(method)
        .uri(uri)
        .extension(Peer(SocketAddr::new(ip, port)))
        .body(Body::from(body(&input.payload)))
    else {
        return; // not an HTTP request hyper would have passed on
    };
    let h = req.headers_mut();
    if matches!(input.payload, Payload::Form(_)) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    } else if input.json_content_type {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    match &input.credential {
        Credential::None => {}
        Credential::SessionCookie
        | Credential::Cookie(_)
        | Credential::SessionBearer
        | Credential::Bearer(_) => {
            let (cookie, token) = match &input.credential {
                Credential::SessionCookie => (true, w.session.as_str()),
                Credential::SessionBearer => (false, w.session.as_str()),
                Credential::Cookie(s) => (true, s.as_str()),
                Credential::Bearer(s) => (false, s.as_str()),
                Credential::None => return,
            };
            let (name, value) = if cookie {
                (header::COOKIE, format!("edgeauth_session={token}"))
            } else {
                (header::AUTHORIZATION, format!("Bearer {token}"))
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
    }
    for (name, value) in &input.headers {
        let name = match name {
            Name::Known(i) => HeaderName::from_static(HEADERS[usize::from(*i) % HEADERS.len()]),
            Name::Raw(s) => match HeaderName::from_bytes(s.as_bytes()) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.append(name, v);
        }
    }
    let Ok(res) = w.rt.block_on(w.router.clone().oneshot(req));
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes =
        w.rt.block_on(axum::body::to_bytes(res.into_body(), 4 << 20))
            .unwrap_or_default();
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 on {input:?}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if json && !bytes.is_empty() {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
            "says JSON, is not: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
});
