//! Resilience: the circuit breaker that keeps logins from waiting on a dead Keycloak, and the
//! health monitor that decides the appliance's mode in the background (design rule 2: probes
//! never sit in the login path).

pub mod breaker;
pub mod monitor;
