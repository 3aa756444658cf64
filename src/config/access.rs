//! `[access]`: the access rules as the operator writes them, checked as they are read.
//!
//! This is the syntax of a rule: every value is parsed into a checked form here (a host
//! pattern, a normalised path prefix, a compiled anchored regex, a method, a CIDR network, a
//! username), so a bad value stops the start with its key, such as
//! `access.rules[3].networks[0]`. What a rule *matches* is `crate::access`'s, which builds its
//! matcher from these values; `access` imports `config`, never the other way round.
//!
//! Regexes use `regex-lite`, not `regex`: path regexes are short and run against short paths,
//! where its matcher (no DFA, no Unicode tables) is fast enough, and it adds about a tenth of
//! `regex`'s size to a binary with an 8 MB budget. The cost: no `\p{..}` Unicode classes.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::domain::{Tenant, Username};

/// The most rules a config may hold, and the longest regex (a typo guard, not a site limit).
pub const MAX_RULES: usize = 1000;
const MAX_REGEX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// What decides a request no rule matches.
    pub default_policy: DefaultPolicy,
    /// The rules, in order: the first whose request keys match decides.
    pub rules: Vec<RuleConfig>,
}

/// `access.default_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    /// Any signed-in user is allowed; everyone else is sent to sign in.
    #[default]
    SignedIn,
    /// Everything no rule allows is refused (403).
    Deny,
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::SignedIn => "signed_in",
            DefaultPolicy::Deny => "deny",
        }
    }
}

/// A rule's `policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RulePolicy {
    /// No identity needed (health checks, static assets, public paths).
    Bypass,
    /// Allowed when the subject matches (any signed-in user when the rule names none).
    Allow,
    /// Refused.
    Deny,
}

impl RulePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RulePolicy::Bypass => "bypass",
            RulePolicy::Allow => "allow",
            RulePolicy::Deny => "deny",
        }
    }
}

/// How a rule's subject items combine: any one of them, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    #[default]
    Any,
    All,
}

/// One `[[access.rules]]`. The request keys (`hosts`, `paths`, `path_regex`, `methods`,
/// `networks`) all must match when given (AND), and within a key any entry may (OR). A key
/// left out matches everything; an empty list is refused (it would match nothing).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostPattern>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<PathPrefix>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<PathRegex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Method>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    pub policy: RulePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<Username>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Name>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_roles: Option<Vec<ClientRole>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Name>>,
    /// The subject's tenant must be one of these (on top of `require`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<Tenant>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<Require>,
    /// Bearer JWTs are introspected online (RFC 7662) for this rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub introspect: bool,
}

impl RuleConfig {
    /// Does the rule name any request key? One that names none matches every request.
    pub fn has_request_keys(&self) -> bool {
        self.hosts.is_some()
            || self.paths.is_some()
            || self.path_regex.is_some()
            || self.methods.is_some()
            || self.networks.is_some()
    }

    /// The subject keys the rule names, by key name.
    fn subject_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("users", self.users.is_some()),
            ("roles", self.roles.is_some()),
            ("client_roles", self.client_roles.is_some()),
            ("groups", self.groups.is_some()),
            ("tenants", self.tenants.is_some()),
            ("require", self.require.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
    }

    /// The rules no type can express, as (key under the rule, message).
    fn check(&self) -> Result<(), (&'static str, String)> {
        let empty = |key: &'static str, len: Option<usize>| match len {
            Some(0) => Err((
                key,
                "is an empty list, which matches nothing; leave the key out to match everything"
                    .to_owned(),
            )),
            _ => Ok(()),
        };
        empty("hosts", self.hosts.as_ref().map(Vec::len))?;
        empty("paths", self.paths.as_ref().map(Vec::len))?;
        empty("methods", self.methods.as_ref().map(Vec::len))?;
        empty("networks", self.networks.as_ref().map(Vec::len))?;
        empty("users", self.users.as_ref().map(Vec::len))?;
        empty("roles", self.roles.as_ref().map(Vec::len))?;
        empty("client_roles", self.client_roles.as_ref().map(Vec::len))?;
        empty("groups", self.groups.as_ref().map(Vec::len))?;
        empty("tenants", self.tenants.as_ref().map(Vec::len))?;
        if self.policy != RulePolicy::Allow {
            if let Some(key) = self.subject_keys().next() {
                return Err((
                    key,
                    format!(
                        "only applies to policy = \"allow\"; a {} rule decides without looking at the user",
                        self.policy.as_str()
                    ),
                ));
            }
            if self.introspect {
                return Err((
                    "introspect",
                    format!(
                        "only applies to policy = \"allow\"; a {} rule never looks at a token",
                        self.policy.as_str()
                    ),
                ));
            }
        }
        if self.require == Some(Require::All) && self.users.as_ref().is_some_and(|u| u.len() > 1) {
            return Err((
                "users",
                "names more than one user with require = \"all\", which no one can match"
                    .to_owned(),
            ));
        }
        if self.require.is_some()
            && self.users.is_none()
            && self.roles.is_none()
            && self.client_roles.is_none()
            && self.groups.is_none()
        {
            return Err((
                "require",
                "needs users, roles, client_roles or groups to combine".to_owned(),
            ));
        }
        Ok(())
    }
}

impl AccessConfig {
    /// The rules no type can express, as (key, message); keys are `access.rules[i].key`.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        if self.rules.len() > MAX_RULES {
            return Err((
                "access.rules".into(),
                format!("has {} rules, at most {MAX_RULES}", self.rules.len()),
            ));
        }
        let mut catch_all: Option<usize> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(first) = catch_all {
                return Err((
                    format!("access.rules[{i}]"),
                    format!(
                        "is never reached: access.rules[{first}] names no hosts, paths, path_regex, methods or networks, so it matches every request"
                    ),
                ));
            }
            rule.check()
                .map_err(|(key, why)| (format!("access.rules[{i}].{key}"), why))?;
            if !rule.has_request_keys() {
                catch_all = Some(i);
            }
        }
        Ok(())
    }
}

macro_rules! string_form {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $t::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// `pos.site.lan` (exact) or `*.site.lan` (any name under it, at any depth, not the name
/// itself); lower-cased, no port. Internationalised names are written in punycode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern(String);
string_form!(HostPattern);

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let bracketed = name.starts_with('[') && name.ends_with(']');
        let ok = if bracketed {
            lower == name
                && name[1..name.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()
        } else {
            !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if ok {
            Ok(HostPattern(lower))
        } else {
            Err(format!(
                "{s:?} is not a host name: write pos.site.lan, *.site.lan (any name under site.lan) or an IP address, without a port"
            ))
        }
    }

    /// `Some(".site.lan")` for `*.site.lan`.
    pub fn wildcard_suffix(&self) -> Option<&str> {
        self.0.strip_prefix('*')
    }
}

/// A path prefix in normal form (`/api`, `/static/`): it matches itself and what lies under it
/// at a segment boundary (`/api` matches `/api` and `/api/x`, not `/apiary`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);
string_form!(PathPrefix);

impl PathPrefix {
    pub fn parse(s: &str) -> Result<Self, String> {
        let why = if !s.starts_with('/') {
            Some("it must start with '/'")
        } else if s
            .bytes()
            .any(|b| b.is_ascii_control() || b" %\\;?#".contains(&b))
        {
            Some("it holds a space, '%', '\\', ';', '?', '#' or a control character")
        } else if s.contains("//") {
            Some("it holds an empty segment ('//')")
        } else if s.split('/').any(|seg| seg == "." || seg == "..") {
            Some("it holds a '.' or '..' segment")
        } else {
            None
        };
        match why {
            None => Ok(PathPrefix(s.to_owned())),
            Some(why) => Err(format!(
                "{s:?} is not a path prefix in normal form: {why} (write the decoded path, such as \"/api\" or \"/files/\")"
            )),
        }
    }
}

/// A regex the whole normalised path must match (it is anchored at both ends).
#[derive(Clone)]
pub struct PathRegex {
    source: String,
    regex: regex_lite::Regex,
}

impl PathRegex {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() > MAX_REGEX {
            return Err(format!(
                "is {} characters long, at most {MAX_REGEX}",
                s.len()
            ));
        }
        regex_lite::RegexBuilder::new(&format!("^(?:{s})$"))
            .build()
            .map(|regex| PathRegex {
                source: s.to_owned(),
                regex,
            })
            .map_err(|e| format!("{s:?} is not a regex: {}", super::one_line(&e.to_string())))
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
    /// The compiled regex, anchored as `^(?:PATTERN)$`.
    pub fn regex(&self) -> &regex_lite::Regex {
        &self.regex
    }
}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl<'de> Deserialize<'de> for PathRegex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathRegex::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PathRegex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// An HTTP method, upper-cased (`GET`, `POST`, `PROPFIND`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Method(String);
string_form!(Method);

impl Method {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_');
        if ok {
            Ok(Method(s.to_ascii_uppercase()))
        } else {
            Err(format!(
                "{s:?} is not an HTTP method (such as \"GET\" or \"POST\")"
            ))
        }
    }
}

/// A client network in CIDR form (`10.0.0.0/8`, `fd00::/8`); a bare address is one host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(IpNet);

impl Network {
    pub fn parse(s: &str) -> Result<Self, String> {
        let net = match s.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match s.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "{s:?} is not a CIDR network (such as \"10.0.0.0/8\" or \"fd00::/8\")"
                    ));
                }
            },
        };
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has bits set past its prefix length; write the network, {}",
                net.trunc()
            ));
        }
        Ok(Network(net))
    }
    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Network::parse(&s)
    }
}

impl From<Network> for String {
    fn from(v: Network) -> String {
        v.0.to_string()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A role or group name as Keycloak writes it (case matters): not empty, no control
/// characters. Groups may be written as paths (`/staff/cashiers`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);
string_form!(Name);

impl Name {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
            Err(format!(
                "{s:?} is not a role or group name: 1 to 255 characters, no control characters"
            ))
        } else {
            Ok(Name(s.to_owned()))
        }
    }
}

/// A client role, `client:role` (a role of the Keycloak client `client`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientRole(String);
string_form!(ClientRole);

impl ClientRole {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((c, r))
                if !c.is_empty()
                    && !r.is_empty()
                    && s.len() <= 511
                    && !s.chars().any(char::is_control) =>
            {
                Ok(ClientRole(s.to_owned()))
            }
            _ => Err(format!(
                "{s:?} is not a client role: write it as \"client:role\", such as \"pos:cashier\""
            )),
        }
    }
}
