//! `/v1/migrations`: start, watch and abort partition moves.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use osproxy_control::ControlPlane;
use osproxy_core::Placement;
use osproxy_migrate::controller::{Controller, MigrationError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::json_response;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    index: String,
    partition: String,
    to: Placement,
    #[serde(default)]
    delete_source: bool,
    #[serde(default)]
    max_docs_per_second: Option<u64>,
}

fn error(e: MigrationError) -> Response<Full<Bytes>> {
    let (status, m) = match e {
        MigrationError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
        MigrationError::Conflict(m) => (StatusCode::CONFLICT, m),
        MigrationError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        MigrationError::NotFound(m) => (StatusCode::NOT_FOUND, m),
    };
    json_response(status, &json!({"error": m}))
}

fn record_json(record: &osproxy_control::store::MigrationRecord, epoch: u64) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    v["epoch"] = json!(epoch);
    v
}

pub(crate) async fn route(
    control: &ControlPlane,
    controller: Option<&std::sync::Arc<Controller>>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let rest = path
        .trim_start_matches("/v1/migrations")
        .trim_start_matches('/');
    let snap = control.load();
    match (method, rest.split_once('/')) {
        (&Method::GET, None) if rest.is_empty() => {
            let mut all: Vec<Value> = snap.migrations().map(|(r, e)| record_json(r, *e)).collect();
            all.sort_by(|a, b| {
                (a["index"].as_str(), a["partition"].as_str())
                    .cmp(&(b["index"].as_str(), b["partition"].as_str()))
            });
            json_response(StatusCode::OK, &json!({"migrations": all}))
        }
        (&Method::GET, Some((index, partition))) => match snap.migration(index, partition) {
            Some((r, e)) => json_response(StatusCode::OK, &record_json(r, *e)),
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no migration of partition {partition:?} of {index:?}")}),
            ),
        },
        (&Method::POST, None) if rest.is_empty() => {
            let Some(controller) = controller else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no migration controller here"}),
                );
            };
            let start: Start = match serde_json::from_slice(body) {
                Ok(s) => s,
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("the body must be {{\"index\", \"partition\", \"to\": <placement>[, \"delete_source\"]}}: {e}")}),
                    )
                }
            };
            match controller
                .start(
                    &start.index,
                    &start.partition,
                    start.to,
                    start.delete_source,
                    start.max_docs_per_second.filter(|r| *r > 0),
                )
                .await
            {
                Ok(r) => json_response(StatusCode::ACCEPTED, &record_json(&r, 0)),
                Err(e) => error(e),
            }
        }
        (&Method::DELETE, Some((index, partition))) => {
            let Some(controller) = controller else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no migration controller here"}),
                );
            };
            match controller.abort(index, partition).await {
                Ok(r) => json_response(StatusCode::OK, &record_json(&r, 0)),
                Err(e) => error(e),
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET /v1/migrations[/{index}/{partition}], POST /v1/migrations, DELETE /v1/migrations/{index}/{partition}"}),
        ),
    }
}
