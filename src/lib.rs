//! edgeauth: the site's login endpoint on the local network.
//!
//! It verifies staff against Keycloak when it can and keeps the site authenticating through
//! long outages from what it holds in an embedded redb store. The binary (`src/main.rs`) is a
//! thin shell over this library so that tests and benchmarks drive the same code.
//!
//! Layers, from the top down (docs/ARCHITECTURE.md has the map; imports only point down):
//! * the top: [`cli`], [`serve`] and [`error`] parse, run and map errors to exit codes;
//! * the composition root: [`app`] builds every service from its narrow parts; only the top,
//!   [`http`], [`admin`] and the task runners ([`maintenance`]) see `App`;
//! * [`access`]: the access rules forward-auth asks about a request and a principal's subject;
//! * services: [`auth`] (login, sessions, principal, passwords, accounts, token refresher) and
//!   [`sync`] (the durable queue, replay, pull);
//! * rules: [`policy`] (degraded mode, regulation, offline window and grace) and [`status`];
//! * [`upstream`]: Keycloak as a stateful dependency (realms, breaker, health, monitor);
//!   [`keycloak`]: its protocols, stateless;
//! * leaves: [`store`] (the only thing that touches the database), [`crypto`], [`clock`],
//!   [`config`], [`domain`], [`metrics`], [`tls`].

pub mod access;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod http;
pub mod keycloak;
pub mod logsafe;
pub mod logsink;
pub mod maintenance;
pub mod metrics;
pub mod policy;
pub mod serve;
pub mod status;
pub mod store;
pub mod sync;
pub mod tls;
pub mod upstream;
