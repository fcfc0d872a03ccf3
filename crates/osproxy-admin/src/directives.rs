//! `/v1/directives`: the fleet's diagnostics directive set, read whole,
//! replaced whole (strict decoder, compare-and-swap on its epoch) or
//! cleared.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use osproxy_control::{ControlPlane, WriteError};
use serde_json::json;

use crate::json_response;
use crate::writes::{changed, epoch_param, write_error};

pub(crate) async fn route(
    control: &ControlPlane,
    method: &Method,
    query: Option<&str>,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let epoch = match epoch_param(query) {
        Ok(e) => e,
        Err(m) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": m})),
    };
    let conflict = |current| changed("the directive set", current);
    match *method {
        Method::GET => {
            let snap = control.load();
            let (set, epoch) = match snap.directives() {
                Some((set, epoch)) => (serde_json::to_value(&**set).unwrap_or_default(), *epoch),
                None => (json!({"directives": []}), 0),
            };
            let mut out = set;
            out["epoch"] = json!(epoch);
            json_response(StatusCode::OK, &out)
        }
        Method::PUT => match control.put_directives(body, epoch).await {
            Ok(e) => json_response(StatusCode::OK, &json!({"epoch": e})),
            Err(WriteError::Conflict(c)) => conflict(c.epoch),
            Err(WriteError::Invalid(m)) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("directive set refused, the previous set stays: {m}")}),
            ),
            Err(e) => write_error(e),
        },
        Method::DELETE => {
            let Some(epoch) = epoch else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "DELETE needs ?epoch=N, the epoch you read"}),
                );
            };
            match control.clear_directives(epoch).await {
                Ok(()) => json_response(StatusCode::OK, &json!({"cleared": true})),
                Err(WriteError::Conflict(c)) => conflict(c.epoch),
                Err(e) => write_error(e),
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET, PUT or DELETE the directive set"}),
        ),
    }
}
