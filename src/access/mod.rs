//! Access rules: which requests forward-auth lets through, and for whom.
//!
//! [`Rules`] is compiled once from `[access]` (`crate::config::access` holds the syntax) and
//! held by `App` as `app.access`. For a request, [`Rules::find`] picks the first rule whose
//! request keys (hosts, paths, path_regex, methods, networks) all match, or the default
//! policy; [`Matched::decide`] then looks at the signed-in [`Subject`], if any. It is a pure
//! matcher: no store, no clock, and no allocation per request (it runs for every request a
//! proxy asks about).
//!
//! The path is normalised before matching ([`path`]): a request whose path (or, for a rule
//! with `networks`, client address) is unclear is denied by the first rule whose answer would
//! depend on it, never let through by a bypass or allow rule by accident.

use std::fmt;
use std::net::IpAddr;

pub mod path;
mod rule;

use crate::auth::principal::Subject;
use crate::config::access::{AccessConfig, DefaultPolicy, Require};

pub use crate::config::access::RulePolicy as Policy;
pub use path::Unclear;
pub use rule::{Item, Key, SubjectCheck, Test};
use rule::{Rule, SubjectRule};

/// What forward-auth knows of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The host the client asked for (a port and any case are ignored).
    pub host: &'a str,
    /// The raw request path, as the client sent it (a query is ignored).
    pub path: &'a str,
    pub method: &'a str,
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
}

/// The access rules, compiled.
#[derive(Debug)]
pub struct Rules {
    rules: Box<[Rule]>,
    default: DefaultPolicy,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(&AccessConfig::default())
    }
}

/// The host as rules compare it: without a port or a trailing dot.
fn bare_host(host: &str) -> &str {
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.find(']').map_or(host, |i| &host[..i + 2]),
        None => match host.rfind(':') {
            Some(i) if !host[..i].contains(':') => &host[..i],
            _ => host,
        },
    };
    host.strip_suffix('.').unwrap_or(host)
}

impl Rules {
    /// Compiles a checked `[access]` section (`Config::validate` has already refused bad rules).
    pub fn new(config: &AccessConfig) -> Rules {
        Rules {
            rules: config
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| Rule::compile(i, r))
                .collect(),
            default: config.default_policy,
        }
    }

    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that decides `req`: the first whose request keys all match, else the default.
    pub fn find(&self, req: &Request<'_>) -> Matched<'_> {
        self.walk(req, |_, _| {})
    }

    /// Like [`Rules::find`], and tells `seen` how each rule before the deciding one fared
    /// (`edgeauth access check` prints it).
    pub fn walk(&self, req: &Request<'_>, mut seen: impl FnMut(usize, Test)) -> Matched<'_> {
        let host = bare_host(req.host);
        let ip = req.ip.map(|ip| ip.to_canonical());
        path::with_paths(req.path, |paths| {
            for rule in &self.rules {
                let test = rule.test(host, req.method, ip, paths);
                seen(rule.index, test);
                match test {
                    Test::Miss(_) => continue,
                    Test::Match => return self.matched(Hit::Rule(rule)),
                    Test::Unclear(why) => return self.matched(Hit::Unclear(rule, why)),
                }
            }
            self.matched(Hit::Default)
        })
    }

    fn matched<'r>(&'r self, hit: Hit<'r>) -> Matched<'r> {
        Matched {
            hit,
            default: self.default,
        }
    }

    /// The rule at `index` as the config writes it, on one line.
    pub fn describe(&self, index: usize) -> Option<&str> {
        self.rules.get(index).map(|r| &*r.describe)
    }
}

#[derive(Debug, Clone, Copy)]
enum Hit<'r> {
    Rule(&'r Rule),
    Unclear(&'r Rule, Unclear),
    Default,
}

/// The rule (or default policy) that decides a request, before the subject is known.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'r> {
    hit: Hit<'r>,
    default: DefaultPolicy,
}

/// What forward-auth answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No identity needed: 200.
    Bypass,
    /// 200, with the identity headers.
    Allow,
    /// Not signed in, and the rule needs someone: 401, or a redirect to the login page.
    SignIn,
    /// 403.
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Bypass => "bypass",
            Verdict::Allow => "allow",
            Verdict::SignIn => "sign in",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a decision went the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why<'r> {
    /// A bypass rule.
    Bypass,
    /// A deny rule.
    DenyRule,
    /// The default policy `deny`.
    DefaultDeny,
    /// The request is unclear where the rule looks: denied.
    Unclear(Unclear),
    /// No one is signed in, and the rule (or default policy) needs someone.
    NotSignedIn,
    /// Any signed-in user will do.
    SignedIn,
    /// What the rule's subject keys say of the signed-in subject.
    Subject(SubjectCheck<'r>),
}

/// The answer for one request and subject.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'r> {
    pub verdict: Verdict,
    /// The deciding rule's index in `access.rules`; `None`: the default policy.
    pub rule: Option<usize>,
    pub why: Why<'r>,
    subject_rule: Option<&'r SubjectRule>,
    default: DefaultPolicy,
}

impl<'r> Matched<'r> {
    /// The deciding rule's policy; the default policy `signed_in` reads as allow, and an
    /// unclear request as deny.
    pub fn policy(&self) -> Policy {
        match self.hit {
            Hit::Rule(r) => r.policy,
            Hit::Unclear(..) => Policy::Deny,
            Hit::Default => match self.default {
                DefaultPolicy::SignedIn => Policy::Allow,
                DefaultPolicy::Deny => Policy::Deny,
            },
        }
    }

    /// Should a bearer JWT be introspected online (RFC 7662) for this rule?
    pub fn introspect(&self) -> bool {
        matches!(self.hit, Hit::Rule(r) if r.introspect)
    }

    /// The deciding rule's index; `None`: the default policy.
    pub fn rule(&self) -> Option<usize> {
        match self.hit {
            Hit::Rule(r) | Hit::Unclear(r, _) => Some(r.index),
            Hit::Default => None,
        }
    }

    /// The answer for `subject` (`None`: no one is signed in).
    pub fn decide(&self, subject: Option<&Subject<'_>>) -> Decision<'r> {
        let (verdict, why, subject_rule) = match self.hit {
            Hit::Unclear(_, why) => (Verdict::Deny, Why::Unclear(why), None),
            Hit::Rule(r) => match r.policy {
                Policy::Bypass => (Verdict::Bypass, Why::Bypass, None),
                Policy::Deny => (Verdict::Deny, Why::DenyRule, None),
                Policy::Allow => match (subject, &r.subject) {
                    (None, s) => (Verdict::SignIn, Why::NotSignedIn, s.as_ref()),
                    (Some(_), None) => (Verdict::Allow, Why::SignedIn, None),
                    (Some(subject), Some(s)) => {
                        let check = s.check(subject);
                        let verdict = if check.allows() {
                            Verdict::Allow
                        } else {
                            Verdict::Deny
                        };
                        (verdict, Why::Subject(check), Some(s))
                    }
                },
            },
            Hit::Default => match (self.default, subject) {
                (DefaultPolicy::Deny, _) => (Verdict::Deny, Why::DefaultDeny, None),
                (DefaultPolicy::SignedIn, None) => (Verdict::SignIn, Why::NotSignedIn, None),
                (DefaultPolicy::SignedIn, Some(_)) => (Verdict::Allow, Why::SignedIn, None),
            },
        };
        Decision {
            verdict,
            rule: self.rule(),
            why,
            subject_rule,
            default: self.default,
        }
    }
}

impl Decision<'_> {
    /// One line on who decided and why, for `edgeauth access check` and debug logs.
    pub fn explain(&self) -> Explain<'_> {
        Explain(self)
    }
}

/// See [`Decision::explain`].
pub struct Explain<'a>(&'a Decision<'a>);

impl fmt::Display for Explain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        match d.rule {
            Some(i) => write!(f, "access.rules[{i}] decides {}: ", d.verdict)?,
            None => write!(
                f,
                "no rule matches; access.default_policy = {:?} decides {}: ",
                d.default.as_str(),
                d.verdict
            )?,
        }
        let list = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if let Some(s) = d.subject_rule {
                let mut first = true;
                for item in s.items() {
                    write!(f, "{}{item}", if first { "" } else { ", " })?;
                    first = false;
                }
            }
            Ok(())
        };
        match d.why {
            Why::Bypass => f.write_str("a bypass rule; no sign-in needed"),
            Why::DenyRule => f.write_str("a deny rule"),
            Why::DefaultDeny => f.write_str("the strict default refuses what no rule allows"),
            Why::Unclear(u) => write!(f, "{}, so the request is refused", u.as_str()),
            Why::NotSignedIn => match d.subject_rule {
                Some(s) if s.items().next().is_some() => {
                    let how = match s.require() {
                        Require::Any => "any",
                        Require::All => "all",
                    };
                    write!(
                        f,
                        "no one is signed in; the rule needs a user with {how} of: "
                    )?;
                    list(f)
                }
                Some(_) => {
                    f.write_str("no one is signed in; the rule needs a user of a tenant it names")
                }
                None => f.write_str("no one is signed in; any signed-in user will do"),
            },
            Why::SignedIn => f.write_str("any signed-in user will do"),
            Why::Subject(check) => match check {
                SubjectCheck::InTenant => f.write_str("the user is in a tenant the rule names"),
                SubjectCheck::Held(item) => write!(f, "the user has {item}"),
                SubjectCheck::AllHeld => {
                    f.write_str("the user has all of: ")?;
                    list(f)
                }
                SubjectCheck::NoneHeld => {
                    f.write_str("the user has none of: ")?;
                    list(f)
                }
                SubjectCheck::Missing(item) => {
                    write!(f, "require = \"all\" and the user lacks {item}")
                }
                SubjectCheck::WrongTenant => {
                    f.write_str("the user's tenant is not one the rule names")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
