//! One compiled access rule: its request part (host, path, method, network) and its subject
//! part, each precompiled from the config so that matching a request allocates nothing.

use std::net::IpAddr;

use ipnet::IpNet;

use super::path::{Paths, Unclear};
use crate::auth::principal::Subject;
use crate::config::access::{Require, RuleConfig, RulePolicy};

/// A host pattern, lower-cased.
#[derive(Debug)]
enum Host {
    Exact(Box<str>),
    /// `*.site.lan` as `.site.lan`: any name that ends with it (not `site.lan` itself).
    Under(Box<str>),
}

impl Host {
    fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(h) => host.eq_ignore_ascii_case(h),
            Host::Under(suffix) => {
                let (h, s) = (host.as_bytes(), suffix.as_bytes());
                h.len() > s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// Why a rule's request part did not match: the first key that did not.
pub type Key = &'static str;

/// How a rule's request part fares against a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Match,
    Miss(Key),
    /// The other keys match and the answer of this key cannot be known.
    Unclear(Unclear),
}

/// One subject item a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'r> {
    User(&'r str),
    Role(&'r str),
    ClientRole(&'r str),
    Group(&'r str),
}

impl Item<'_> {
    fn held_by(self, s: &Subject<'_>) -> bool {
        match self {
            Item::User(u) => s.username == u,
            Item::Role(r) => s.roles.iter().any(|x| x == r),
            Item::ClientRole(r) => s.client_roles.iter().any(|x| x == r),
            // `front-desk` and `/front-desk` name the same top-level group.
            Item::Group(g) => {
                let g = g.strip_prefix('/').unwrap_or(g);
                s.groups
                    .iter()
                    .any(|x| x.strip_prefix('/').unwrap_or(x) == g)
            }
        }
    }
}

impl std::fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::User(v) => write!(f, "user {v:?}"),
            Item::Role(v) => write!(f, "role {v:?}"),
            Item::ClientRole(v) => write!(f, "client role {v:?}"),
            Item::Group(v) => write!(f, "group {v:?}"),
        }
    }
}

/// What the subject part of a rule says of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectCheck<'r> {
    /// The rule names only tenants, and the subject is in one.
    InTenant,
    /// `require = "any"`: this item is held.
    Held(Item<'r>),
    /// `require = "all"`: every item is held.
    AllHeld,
    /// `require = "any"`: none is held.
    NoneHeld,
    /// `require = "all"`: this item is missing.
    Missing(Item<'r>),
    /// The subject's tenant is not one the rule names.
    WrongTenant,
}

impl SubjectCheck<'_> {
    pub fn allows(self) -> bool {
        matches!(
            self,
            SubjectCheck::InTenant | SubjectCheck::Held(_) | SubjectCheck::AllHeld
        )
    }
}

/// The subject keys of an allow rule.
#[derive(Debug)]
pub struct SubjectRule {
    tenants: Box<[Box<str>]>,
    users: Box<[Box<str>]>,
    roles: Box<[Box<str>]>,
    client_roles: Box<[Box<str>]>,
    groups: Box<[Box<str>]>,
    require: Require,
}

impl SubjectRule {
    /// Every item, in the order the config lists the keys.
    pub fn items(&self) -> impl Iterator<Item = Item<'_>> {
        let users = self.users.iter().map(|v| Item::User(v));
        let roles = self.roles.iter().map(|v| Item::Role(v));
        let client = self.client_roles.iter().map(|v| Item::ClientRole(v));
        let groups = self.groups.iter().map(|v| Item::Group(v));
        users.chain(roles).chain(client).chain(groups)
    }

    pub fn require(&self) -> Require {
        self.require
    }

    pub fn check(&self, s: &Subject<'_>) -> SubjectCheck<'_> {
        if !self.tenants.is_empty() && !self.tenants.iter().any(|t| **t == *s.tenant) {
            return SubjectCheck::WrongTenant;
        }
        let mut items = self.items().peekable();
        if items.peek().is_none() {
            return SubjectCheck::InTenant;
        }
        match self.require {
            Require::Any => items
                .find(|i| i.held_by(s))
                .map_or(SubjectCheck::NoneHeld, SubjectCheck::Held),
            Require::All => items
                .find(|i| !i.held_by(s))
                .map_or(SubjectCheck::AllHeld, SubjectCheck::Missing),
        }
    }
}

fn boxed<T: std::fmt::Display>(list: &Option<Vec<T>>) -> Box<[Box<str>]> {
    list.iter()
        .flatten()
        .map(|v| v.to_string().into_boxed_str())
        .collect()
}

/// A rule, compiled.
#[derive(Debug)]
pub struct Rule {
    pub index: usize,
    hosts: Box<[Host]>,
    prefixes: Box<[Box<str>]>,
    regex: Option<regex_lite::Regex>,
    methods: Box<[Box<str>]>,
    networks: Box<[IpNet]>,
    pub policy: RulePolicy,
    /// `None` for an allow rule that names no subject (any signed-in user), and for bypass
    /// and deny rules.
    pub subject: Option<SubjectRule>,
    pub introspect: bool,
    /// The rule as the config writes it, on one line (for `access check` and logs).
    pub describe: Box<str>,
}

impl Rule {
    pub fn compile(index: usize, c: &RuleConfig) -> Rule {
        let hosts = c
            .hosts
            .iter()
            .flatten()
            .map(|h| match h.wildcard_suffix() {
                Some(suffix) => Host::Under(suffix.into()),
                None => Host::Exact(h.as_str().into()),
            })
            .collect();
        let subject = SubjectRule {
            tenants: boxed(&c.tenants),
            users: boxed(&c.users),
            roles: boxed(&c.roles),
            client_roles: boxed(&c.client_roles),
            groups: boxed(&c.groups),
            require: c.require.unwrap_or_default(),
        };
        let names_subject = !subject.tenants.is_empty() || subject.items().next().is_some();
        let describe = toml::to_string(c)
            .map(|t| {
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        Rule {
            index,
            hosts,
            prefixes: boxed(&c.paths),
            regex: c.path_regex.as_ref().map(|r| r.regex().clone()),
            methods: boxed(&c.methods),
            networks: c.networks.iter().flatten().map(|n| n.net()).collect(),
            policy: c.policy,
            subject: (c.policy == RulePolicy::Allow && names_subject).then_some(subject),
            introspect: c.introspect,
            describe: describe.into(),
        }
    }

    fn looks_at_path(&self) -> bool {
        !self.prefixes.is_empty() || self.regex.is_some()
    }

    /// The path key (`paths`, then `path_regex`) that one normalised reading misses, if any.
    fn path_miss(&self, path: &str) -> Option<Key> {
        if !self.prefixes.is_empty() && !self.prefixes.iter().any(|p| under(path, p)) {
            return Some("paths");
        }
        match &self.regex {
            Some(r) if !r.is_match(path) => Some("path_regex"),
            _ => None,
        }
    }

    /// The request part against a request (host without port, method, client address,
    /// normalised path).
    pub fn test(&self, host: &str, method: &str, ip: Option<IpAddr>, paths: Paths<'_>) -> Test {
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.matches(host)) {
            return Test::Miss("hosts");
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return Test::Miss("methods");
        }
        let mut unclear = None;
        if self.looks_at_path() {
            match paths {
                Paths::One(p) => {
                    if let Some(key) = self.path_miss(p) {
                        return Test::Miss(key);
                    }
                }
                Paths::Two(a, b) => match (self.path_miss(a), self.path_miss(b)) {
                    (None, None) => {}
                    (Some(key), Some(_)) => return Test::Miss(key),
                    _ => unclear = Some(Unclear::Ambiguous),
                },
                Paths::Unclear(why) => unclear = Some(why),
            }
        }
        if !self.networks.is_empty() {
            match ip {
                Some(ip) if !self.networks.iter().any(|n| n.contains(&ip)) => {
                    return Test::Miss("networks");
                }
                Some(_) => {}
                None => unclear = unclear.or(Some(Unclear::NoClientAddress)),
            }
        }
        unclear.map_or(Test::Match, Test::Unclear)
    }
}

/// Is `path` the prefix `p` or under it at a segment boundary? A prefix that ends with `/`
/// (`/files/`) matches only what lies under it.
fn under(path: &str, p: &str) -> bool {
    path.starts_with(p)
        && (path.len() == p.len() || p.ends_with('/') || path.as_bytes()[p.len()] == b'/')
}
