//! `edgeauth access check`: which access rule decides a request, and why, so an operator can
//! debug a policy without a browser. The rules are the config file's (as `serve` would load
//! it); the user is read like `user show` reads it (over the admin socket while serving, else
//! from the store). Exit 0 for any decision; bad input is one line and a non-zero exit.

use std::net::IpAddr;

use axum::http::Uri;

use super::*;
use crate::access::{Request, Rules, Test, Verdict, path};
use crate::auth::principal::{Subject, Via};
use crate::domain::AuthMode;

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Which access rule decides a request and why: the rules tried, the verdict, and the
    /// subject item that matched or was missing. Without --user: no one signed in.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The URL the client asks for, such as https://pos.site.lan/till.
    #[arg(long)]
    pub url: String,
    /// The signed-in user (their roles and groups as this appliance holds them).
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long, default_value = DEFAULT_TENANT)]
    pub tenant: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The client's address (rules with networks need it).
    #[arg(long, value_name = "IP")]
    pub from: Option<String>,
}

/// The user as access rules see them.
struct Held {
    tenant: String,
    username: String,
    roles: Vec<String>,
    client_roles: Vec<String>,
    groups: Vec<String>,
    local: bool,
    enabled: bool,
}

impl Held {
    fn from_view(v: &Value) -> Held {
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        Held {
            tenant: str_of(&v["tenant"]).to_owned(),
            username: str_of(&v["username"]).to_owned(),
            roles: list("roles"),
            client_roles: list("client_roles"),
            groups: list("groups"),
            local: str_of(&v["source"]) == "local",
            enabled: v["enabled"].as_bool().unwrap_or(true),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            tenant: &self.tenant,
            username: &self.username,
            name: None,
            email: None,
            roles: &self.roles,
            client_roles: &self.client_roles,
            groups: &self.groups,
            auth_mode: if self.local {
                AuthMode::Local
            } else {
                AuthMode::Keycloak
            },
            via: Via::Session,
        }
    }
}

fn usage(msg: String) -> AppError {
    AppError::Usage(msg)
}

pub(super) fn access(config: &Config, cmd: AccessCommand) -> Result<(), AppError> {
    let AccessCommand::Check(args) = cmd;
    let uri: Uri = args.url.parse().map_err(|e| {
        usage(format!(
            "--url \"{}\" is not a URL: {e}",
            crate::logsafe::clean(&args.url)
        ))
    })?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host = match uri.host() {
        Some(h) if scheme_ok && !h.is_empty() => h.to_ascii_lowercase(),
        _ => {
            return Err(usage(format!(
                "--url \"{}\" must be an absolute http or https URL, such as https://pos.site.lan/till",
                crate::logsafe::clean(&args.url)
            )));
        }
    };
    let raw_path = uri.path_and_query().map_or("/", |p| p.as_str());
    let method = crate::config::access::Method::parse(&args.method)
        .map_err(|e| usage(format!("--method: {e}")))?;
    let ip: Option<IpAddr> = match &args.from {
        Some(s) => Some(s.parse().map_err(|_| {
            usage(format!(
                "--from \"{}\" is not an IP address",
                crate::logsafe::clean(s)
            ))
        })?),
        None => None,
    };
    let held = match &args.user {
        Some(name) => Some(Held::from_view(&admin(
            config,
            AdminRequest::UserShow {
                tenant: args.tenant.clone(),
                username: name.clone(),
            },
        )?)),
        None => None,
    };

    let rules = Rules::new(&config.access);
    outln!(
        "request:   {} {}://{host}{raw_path} from {}",
        method,
        uri.scheme_str().unwrap_or("https"),
        ip.map_or("an unknown address (give --from)".into(), |i| i.to_string())
    );
    match path::readings(raw_path) {
        Ok(r) => match r.as_slice() {
            [one] => outln!("path:      {}", crate::logsafe::clean(one)),
            [a, b, ..] => outln!(
                "path:      {} (as plain characters) or {} (as separators): rules that look at the path must agree on both",
                crate::logsafe::clean(a),
                crate::logsafe::clean(b)
            ),
            [] => {}
        },
        Err(why) => outln!("path:      cannot be normalised: {}", why.as_str()),
    }
    match &held {
        Some(h) => {
            outln!("user:      {}@{}", h.username, h.tenant);
            let list = |v: &[String]| match v {
                [] => "none".to_owned(),
                v => v.join(", "),
            };
            outln!("  roles:        {}", list(&h.roles));
            outln!("  client roles: {}", list(&h.client_roles));
            outln!("  groups:       {}", list(&h.groups));
            if !h.enabled {
                outln!(
                    "  note: this user is disabled and cannot sign in; the decision below is for them signed in"
                );
            }
        }
        None => outln!("user:      none (not signed in; give --user to check a user)"),
    }
    outln!(
        "rules:     {} in {}, access.default_policy = {:?}",
        rules.len(),
        config.origin,
        rules.default_policy().as_str()
    );
    let request = Request {
        host: &host,
        path: raw_path,
        method: method.as_str(),
        ip,
    };
    let matched = rules.walk(&request, |i, test| {
        let rule = rules.describe(i).unwrap_or_default();
        let outcome = match test {
            Test::Match => "matches".to_owned(),
            Test::Miss(key) => format!("skipped: its {key} do not match"),
            Test::Unclear(why) => format!("cannot tell: {}", why.as_str()),
        };
        outln!("  access.rules[{i}] {{ {rule} }}: {outcome}");
    });
    let subject = held.as_ref().map(Held::subject);
    let decision = matched.decide(subject.as_ref());
    let answer = match decision.verdict {
        Verdict::Bypass => "bypass (200, no sign-in needed)",
        Verdict::Allow => "allow (200)",
        Verdict::SignIn => "sign in (401, or a redirect to the login page)",
        Verdict::Deny => "deny (403)",
    };
    outln!("verdict:   {answer}");
    outln!("why:       {}", decision.explain());
    if matched.introspect() {
        outln!("note:      bearer tokens are introspected online for this rule");
    }
    Ok(())
}
