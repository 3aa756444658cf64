//! Keycloak's protocols, stateless: the HTTP client and its proxy rule, the OIDC grants, the
//! admin REST API, JWT/JWKS, the classification of every answer (design rule 1) and `diagnose`.
//! Nothing here holds state about Keycloak's health: that is [`crate::upstream`]'s.

pub mod admin;
pub mod client;
pub mod diagnose;
pub mod outcome;
pub mod proxy;
pub mod token;
