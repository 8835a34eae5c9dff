//! Who is calling: an edge (its credential, and the fleet protocol header)
//! or an admin (an API token). Extractors, so a handler cannot forget.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use outpost_protocol::{FLEET_PROTOCOL, FLEET_PROTOCOL_HEADER};

use super::{AppState, peer_text};
use crate::{Actor, ManagerError};

pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_header(&parts.headers)
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_header(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub fn peer(parts: &Parts) -> String {
    peer_text(
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    )
}

/// Refuses a call without our protocol version.
pub fn check_protocol(parts: &Parts) -> Result<(), ManagerError> {
    let version = parts
        .headers
        .get(FLEET_PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    match version {
        Some(FLEET_PROTOCOL) => Ok(()),
        Some(other) => Err(ManagerError::BadRequest(format!(
            "fleet protocol {other} is not spoken here: this manager speaks {FLEET_PROTOCOL}"
        ))),
        None => Err(ManagerError::BadRequest(format!(
            "missing header {FLEET_PROTOCOL_HEADER}: {FLEET_PROTOCOL}"
        ))),
    }
}

/// An authenticated edge call: the site.
pub struct EdgeSite(pub String);

impl FromRequestParts<AppState> for EdgeSite {
    type Rejection = ManagerError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_protocol(parts)?;
        let credential = bearer(parts).ok_or_else(|| {
            ManagerError::Unauthorized("missing Authorization: Bearer <edge credential>".into())
        })?;
        Ok(Self(state.authenticate_edge(credential)?))
    }
}

/// An admin call with an API token: who, for the audit log.
pub struct Admin(pub Actor);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ManagerError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ManagerError::Unauthorized("missing Authorization: Bearer <admin API token>".into())
        })?;
        let label = state
            .authenticate_api_token(token)?
            .ok_or_else(|| ManagerError::Unauthorized("unknown or revoked API token".into()))?;
        Ok(Self(Actor {
            who: format!("token:{label}"),
            from: peer(parts),
        }))
    }
}

/// The caller's address, for calls without a credential (enrolment).
pub struct Peer(pub String);

impl FromRequestParts<AppState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(peer(parts)))
    }
}

/// A call that speaks our fleet protocol version (enrolment, before any
/// credential exists).
pub struct FleetProtocol;

impl FromRequestParts<AppState> for FleetProtocol {
    type Rejection = ManagerError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        check_protocol(parts)?;
        Ok(Self)
    }
}
