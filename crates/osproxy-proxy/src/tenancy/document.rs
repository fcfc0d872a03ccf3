//! Single-document endpoints of a logical index: index, create, get,
//! exists, `_source`, delete, `_update`.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use osproxy_core::{ErrorCode, ProxyError};
use osproxy_observe::trace::{Change, Name, Value};
use osproxy_rewrite::members::{edit_members, Edit};
use osproxy_rewrite::source::{inject_field, strip_field};
use osproxy_upstream::ClientBody;
use percent_encoding::percent_decode_str;

use super::params::{rewrite_query, Op};
use super::reverse::Placed;
use super::{json_response, read_json, reverse, Target, Tenancy};
use crate::body::ResponseBody;

/// `/{index}/{endpoint}[/{id}]`, decoded.
struct DocPath {
    endpoint: String,
    id: Option<String>,
}

fn doc_path(path: &str) -> Result<DocPath, ProxyError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ProxyError::new(ErrorCode::BadRequest, "the document id is not UTF-8"))
    };
    match segs.as_slice() {
        [_, endpoint] => Ok(DocPath {
            endpoint: decode(endpoint)?,
            id: None,
        }),
        [_, endpoint, id] => Ok(DocPath {
            endpoint: decode(endpoint)?,
            id: Some(decode(id)?),
        }),
        _ => Err(ProxyError::new(
            ErrorCode::UnsupportedEndpoint,
            "unknown document endpoint for a logical index",
        )),
    }
}

/// A request body: still streaming, or already read (to find the partition).
pub(crate) enum Body {
    Stream(ClientBody),
    Read(Bytes),
}

pub(crate) async fn serve(
    tenancy: &Tenancy,
    t: &Target<'_>,
    req: http::request::Parts,
    body: Body,
) -> Result<Response<ResponseBody>, ProxyError> {
    let DocPath { endpoint, id } = doc_path(req.uri.path())?;
    let method = req.method.clone();
    let op = match (endpoint.as_str(), &method, id.is_some()) {
        ("_doc", &Method::POST, false) | ("_doc" | "_create", &Method::PUT | &Method::POST, true) => Op::Write,
        ("_doc" | "_source", &Method::GET | &Method::HEAD, true) => Op::Get,
        ("_doc", &Method::DELETE, true) => Op::Delete,
        ("_update", &Method::POST, true) => Op::Update,
        _ => {
            return Err(ProxyError::new(
                ErrorCode::UnsupportedEndpoint,
                format!("{method} on `{endpoint}` is not a document operation osproxy serves for logical indices"),
            ))
        }
    };
    if let Some(id) = &id {
        if id.is_empty() || id.len() > 512 {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                "a document id is 1 to 512 bytes",
            ));
        }
    }
    let shared = t.shared();
    // An id is needed to scope a shared document; mint one like OpenSearch would.
    let logical_id = match (&id, shared) {
        (Some(id), _) => Some(id.clone()),
        (None, true) => Some(tenancy.mint_id()),
        (None, false) => None,
    };
    let physical_id = logical_id.as_deref().map(|id| t.physical_id(id));
    let query = rewrite_query(req.uri.query(), op, shared, t.partition.as_str())?.encode();
    if shared {
        crate::diagnostics::with(|tr| {
            tr.change(Change::Added, Name::fixed("_id.partition_scope"));
            tr.change(Change::Added, Name::fixed("routing"));
        });
    }
    tenancy.ensure_shared_mapping(t).await?;
    // Auto-id POST becomes PUT with the minted id (create-only, like an auto id).
    let (method, endpoint) = match (id.is_none(), physical_id.is_some()) {
        (true, true) => (Method::PUT, "_create".to_string()),
        _ => (method, endpoint),
    };
    let path = t.path(&endpoint, physical_id.as_deref(), &query);

    let headers = req.headers;
    let body = match op {
        Op::Write | Op::Update => {
            let raw = match body {
                Body::Read(b) => b,
                Body::Stream(s) => read_json(s).await?.into_bytes(),
            };
            if let (Op::Update, osproxy_control::PartitionRule::Body(f)) =
                (op, &t.logical.partition)
            {
                super::update_keeps_partition(&raw, f, t.partition.as_str())?;
            }
            Some(if shared {
                Bytes::from(confine_body(&raw, op, t)?)
            } else {
                raw
            })
        }
        _ => None,
    };
    let (parts, resp_body) = if body.is_some() || method == Method::DELETE {
        let answer = tenancy
            .write(t, method.clone(), &path, &headers, body)
            .await?;
        if answer.0.status.is_success() {
            crate::limits::item(t.partition.as_str(), 1, 0);
        }
        answer
    } else {
        tenancy
            .read(t, method.clone(), &path, &headers, body)
            .await?
    };
    let ids = physical_id.as_deref().zip(logical_id.as_deref());
    let out = if method == Method::HEAD {
        Vec::new()
    } else if parts.status.is_client_error() || parts.status.is_server_error() {
        if parts.status == StatusCode::NOT_FOUND
            && endpoint != "_source"
            && !reverse::is_error(&resp_body)
        {
            // `found: false` / `result: not_found` answers are documents.
            unreadable(reverse::document_of(&resp_body, t, ids), parts.status)?
        } else {
            reverse::error(&resp_body, t, ids)
        }
    } else if endpoint == "_source" {
        if shared {
            unreadable(
                strip_field(&resp_body, &t.logical.field).map(|c| c.into_owned()),
                parts.status,
            )?
        } else {
            resp_body.to_vec()
        }
    } else {
        unreadable(reverse::document_of(&resp_body, t, ids), parts.status)?
    };
    let mut resp = json_response(parts, out);
    if method == Method::HEAD {
        // Keep the upstream's answer shape: status only.
        *resp.body_mut() = ResponseBody::empty();
    }
    Ok(resp)
}

/// A reversed answer, or the error that says the cluster's answer could not
/// be read: an answer that does not scan is never handed on as it came (it
/// could hold the physical index, id and partition field). A write it
/// answered for did happen: the status says so.
fn unreadable(
    reversed: Result<Vec<u8>, osproxy_rewrite::SourceError>,
    status: StatusCode,
) -> Result<Vec<u8>, ProxyError> {
    reversed.map_err(|e| {
        ProxyError::new(
            ErrorCode::UpstreamUnavailable,
            format!("the cluster answered {status} with a body that could not be read ({e}); it is not passed on unreversed"),
        )
    })
}

/// The injected field on a document (index/create) or on the `doc` and
/// `upsert` of an update; scripts refused unless the catalogue allows them.
pub(crate) fn confine_body(raw: &[u8], op: Op, t: &Target<'_>) -> Result<Vec<u8>, ProxyError> {
    let field = &t.logical.field;
    crate::diagnostics::with(|tr| {
        tr.record("body_bytes_in", Value::Bytes(raw.len() as u64));
        tr.change(Change::Added, Name::ident(field));
    });
    let partition = t.partition.as_str();
    let bad = |e: osproxy_rewrite::source::SourceError| {
        ProxyError::new(ErrorCode::BadRequest, e.to_string())
    };
    match op {
        Op::Update => {
            let mut failure = None;
            let mut saw_script = false;
            let edited = edit_members(raw, |key, value| match key {
                "doc" | "upsert" => match inject_field(value, field, partition) {
                    Ok(v) => Edit::Replace(v),
                    Err(e) => {
                        failure = Some(bad(e));
                        Edit::Keep
                    }
                },
                "script" | "scripted_upsert" => {
                    saw_script = true;
                    Edit::Keep
                }
                _ => Edit::Keep,
            })
            .map_err(bad)?;
            if let Some(e) = failure {
                return Err(e);
            }
            if saw_script && !t.logical.allow_scripts {
                return Err(ProxyError::new(
                    ErrorCode::BadRequest,
                    "scripted updates are refused in a shared placement: a script could change or read the partition field; update with a partial `doc` instead",
                ));
            }
            Ok(edited.into_owned())
        }
        _ => inject_field(raw, field, partition).map_err(bad),
    }
}
