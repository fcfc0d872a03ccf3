//! `/v1/placements/{index}[/{partition}]`: read the placement table, and set
//! one partition's placement with compare-and-swap on its epoch.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use osproxy_control::{ControlPlane, Entry, WriteError};
use osproxy_core::{PartitionId, Placement};
use serde_json::{json, Value};

use crate::json_response;
use crate::writes::{changed, epoch_missing, epoch_param, write_error};

fn entry_json(index: &str, partition: &str, e: &Entry) -> Value {
    match &e.migrating {
        None => {
            json!({"index": index, "partition": partition, "placement": &*e.placement, "epoch": e.epoch, "state": "active"})
        }
        Some(m) => {
            json!({"index": index, "partition": partition, "placement": &*e.placement, "epoch": e.epoch,
                          "state": "migrating", "to": &*m.to, "phase": m.phase})
        }
    }
}

pub(crate) async fn route(
    control: &ControlPlane,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    if path == "/v1/catalogue" || path == "/v1/catalogue/" {
        return catalogue_list(control, method);
    }
    if path.starts_with("/v1/catalogue/") {
        return catalogue(control, method, path, query, body).await;
    }
    let rest = path.trim_start_matches("/v1/placements/");
    if !path.starts_with("/v1/placements/") || rest.is_empty() {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no admin route {path}")}),
        );
    }
    let snap = control.load();
    let (index, partition) = match rest.split_once('/') {
        Some((i, p)) => (i, Some(p)),
        None => (rest, None),
    };
    let Some(logical) = snap.index(index) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("{index:?} is not a logical index of the catalogue")}),
        );
    };
    match (method, partition) {
        (&Method::GET, None) => {
            let entries: Vec<Value> = snap
                .entries(index)
                .into_iter()
                .map(|(p, e)| entry_json(index, p, e))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"index": index, "default": &*logical.default, "entries": entries, "revision": snap.revision()}),
            )
        }
        (&Method::GET, Some(p)) => {
            let Ok(partition) = PartitionId::new(p) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "a partition id is 1 to 128 of [A-Za-z0-9_.-]"}),
                );
            };
            match snap.entry(index, &partition) {
                Some(e) => json_response(StatusCode::OK, &entry_json(index, p, e)),
                None => json_response(
                    StatusCode::OK,
                    &json!({"index": index, "partition": p, "placement": &*logical.default, "epoch": 0, "state": "active", "default": true}),
                ),
            }
        }
        (&Method::PUT, Some(p)) => {
            let Ok(partition) = PartitionId::new(p) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "a partition id is 1 to 128 of [A-Za-z0-9_.-]"}),
                );
            };
            let placement: Placement = match serde_json::from_slice(body) {
                Ok(pl) => pl,
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("the body is not a placement value: {e}")}),
                    )
                }
            };
            let epoch = match epoch_param(query) {
                Ok(e) => e,
                Err(m) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": m})),
            };
            match control
                .set_placement(index, &partition, placement, epoch)
                .await
            {
                Ok(e) => json_response(StatusCode::OK, &entry_json(index, p, &e)),
                Err(WriteError::Conflict(c)) => json_response(
                    StatusCode::CONFLICT,
                    &json!({"error": "the entry changed since it was read (or exists while ?epoch was absent); read it and retry with its epoch",
                            "current": c.entry.as_ref().map(|e| entry_json(index, p, e)),
                            "current_epoch": c.epoch}),
                ),
                Err(e) => write_error(e),
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET a table or an entry; PUT an entry"}),
        ),
    }
}

/// `GET /v1/catalogue/{index}`: one logical index's rules.
async fn catalogue(
    control: &ControlPlane,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let index = path.trim_start_matches("/v1/catalogue/");
    let epoch = match epoch_param(query) {
        Ok(e) => e,
        Err(m) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": m})),
    };
    let conflict = |current| changed("the logical index", current);
    match *method {
        Method::GET => {}
        Method::PUT => {
            let mut spec: Value = match serde_json::from_slice(body) {
                Ok(Value::Object(m)) => Value::Object(m),
                _ => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "the body must be a JSON object like a [[indices]] entry"}),
                    )
                }
            };
            spec["name"] = Value::from(index);
            let idx: osproxy_config::IndexConfig = match serde_json::from_value(spec) {
                Ok(i) => i,
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("not a catalogue entry: {e}")}),
                    )
                }
            };
            return match control.put_index(&idx, epoch).await {
                Ok(e) => json_response(StatusCode::OK, &json!({"name": index, "epoch": e})),
                Err(WriteError::Conflict(c)) => conflict(c.epoch),
                Err(e) => write_error(e),
            };
        }
        Method::DELETE => {
            let Some(epoch) = epoch else {
                return epoch_missing();
            };
            return match control.delete_index(index, epoch).await {
                Ok(()) => json_response(StatusCode::OK, &json!({"name": index, "deleted": true})),
                Err(WriteError::Conflict(c)) => conflict(c.epoch),
                Err(e) => write_error(e),
            };
        }
        _ => {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "GET, PUT or DELETE a logical index"}),
            )
        }
    }
    let snap = control.load();
    let Some(l) = snap.index(index) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("{index:?} is not a logical index of the catalogue")}),
        );
    };
    let partition = match &l.partition {
        osproxy_control::PartitionRule::Principal => json!({"from": "principal"}),
        osproxy_control::PartitionRule::Header(h) => json!({"header": h}),
        osproxy_control::PartitionRule::Body(f) => json!({"body": f}),
    };
    json_response(
        StatusCode::OK,
        &json!({"name": l.name, "partition": partition, "id": l.id_template.to_string(), "field": l.field,
                "default": &*l.default, "allow_scripts": l.allow_scripts, "epoch": l.epoch, "revision": snap.revision()}),
    )
}

/// `GET /v1/catalogue`: every logical index's name and epoch.
fn catalogue_list(control: &ControlPlane, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET the catalogue; PUT or DELETE /v1/catalogue/{index}"}),
        );
    }
    let snap = control.load();
    let mut indices: Vec<Value> = snap
        .indices()
        .map(|l| json!({"name": l.name, "default": &*l.default, "epoch": l.epoch, "entries": snap.entries(&l.name).len()}))
        .collect();
    indices.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json_response(
        StatusCode::OK,
        &json!({"indices": indices, "revision": snap.revision()}),
    )
}
