//! What every compare-and-swap route of the admin API shares: the `?epoch`
//! parameter and the answers to a refused, failed or lost write.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use osproxy_control::WriteError;
use serde_json::json;

use crate::json_response;

/// A refused or failed write (conflicts are answered by each route, with
/// what it read).
pub(crate) fn write_error(e: WriteError) -> Response<Full<Bytes>> {
    match e {
        WriteError::Invalid(m) => json_response(StatusCode::BAD_REQUEST, &json!({"error": m})),
        WriteError::Unavailable(m) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": format!("the control store did not take the write: {m}; nothing was changed, retry when it is back")}),
        ),
        WriteError::Unknown(m) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": format!("the control store did not confirm the write: {m}; it may or may not have been applied: read the current value and its epoch before retrying")}),
        ),
        WriteError::Conflict(c) => json_response(
            StatusCode::CONFLICT,
            &json!({"error": "changed since it was read; read it and retry with its epoch", "current_epoch": c.epoch}),
        ),
    }
}

/// A lost compare-and-swap on `what`: 409 with the epoch it has now.
pub(crate) fn changed(what: &str, current: Option<u64>) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::CONFLICT,
        &json!({"error": format!("{what} changed since it was read (or exists while ?epoch was absent); read it and retry with its epoch"), "current_epoch": current}),
    )
}

/// The 400 of a DELETE that names no epoch.
pub(crate) fn epoch_missing() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": "DELETE needs ?epoch=N, the epoch you read"}),
    )
}

/// `?epoch=N`, absent when not given.
pub(crate) fn epoch_param(query: Option<&str>) -> Result<Option<u64>, &'static str> {
    match query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("epoch="))
    {
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| "epoch must be a number"),
        None => Ok(None),
    }
}
