//! edgeauth: the site's login endpoint on the local network.
//!
//! It verifies staff against Keycloak when it can and keeps the site authenticating through
//! long outages from what it holds in an embedded redb store. The binary (`src/main.rs`) is a
//! thin shell over this library so that tests and benchmarks drive the same code.
//!
//! Layers, from the outside in: [`cli`] and [`http`] speak to people and programs; [`auth`]
//! holds the login, session and password rules; [`store`] is the only thing that touches the
//! database; [`crypto`] and [`clock`] are leaf utilities every layer may use.

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
pub mod maintenance;
pub mod metrics;
pub mod policy;
pub mod serve;
pub mod status;
pub mod store;
pub mod sync;
pub mod tls;
pub mod upstream;
