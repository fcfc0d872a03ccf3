//! Logical index management: create, exists, mapping, settings, refresh and
//! delete of a logical index, applied to the caller's physical index. A
//! shared physical index belongs to every partition of the logical index, so
//! what would affect the others (deleting it, changing its mapping) is
//! refused there.

use bytes::Bytes;
use http::{Method, Response};
use osproxy_core::{ErrorCode, ProxyError};
use osproxy_upstream::ClientBody;
use serde_json::{Map, Value};

use super::{json_response, read_json, reverse, Target, Tenancy};
use crate::auth::Principal;
use crate::body::ResponseBody;

/// An index-level write (create, delete, mapping change): admitted and
/// acknowledged under the lease like a document write, and refused while
/// the partition moves — the copy carries documents and the mapping it was
/// started with, not later index-level changes.
async fn index_write(
    tenancy: &Tenancy,
    t: &Target<'_>,
    method: Method,
    path: &str,
    headers: &http::HeaderMap,
    body: Option<Bytes>,
) -> Result<Response<ResponseBody>, ProxyError> {
    if t.migrating.is_some() {
        return Err(ProxyError::new(
            ErrorCode::PartitionMoving,
            format!(
                "this partition of logical index {:?} is being moved to another placement; index-level changes (create, delete, mappings) wait until the move is over",
                t.logical.name
            ),
        )
        .retryable(true));
    }
    let (p, b) = tenancy.write(t, method, path, headers, body).await?;
    Ok(json_response(p, reverse::error(&b, t, None)))
}

pub(crate) async fn serve(
    tenancy: &Tenancy,
    t: &Target<'_>,
    parts: http::request::Parts,
    body: ClientBody,
    principal: Option<&Principal>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let segments: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let endpoint = segments.get(1).copied();
    if segments.len() > 2 {
        return Err(unsupported(&parts.method, parts.uri.path()));
    }
    let method = parts.method.clone();
    let shared = t.shared();
    let index_path = t.path("", None, "").trim_end_matches('/').to_string();
    match (endpoint, &method) {
        (None, &Method::HEAD) => {
            let (p, _) = tenancy
                .read(t, Method::HEAD, &index_path, &parts.headers, None)
                .await?;
            let mut resp = Response::new(ResponseBody::empty());
            *resp.status_mut() = p.status;
            Ok(resp)
        }
        (None, &Method::PUT) => {
            let raw = read_json(body).await?;
            no_percolator(&raw, t, principal)?;
            let create = if shared {
                let operator = principal.is_some_and(|p| p.operator);
                if !operator {
                    tenant_shape_only(&raw, t)?;
                }
                // Checks the body's own mapping of the partition field.
                let checked = with_partition_field(&raw, &t.logical.field)?;
                let body: Map<String, Value> =
                    serde_json::from_slice(&checked).map_err(bad_json)?;
                if !operator {
                    consistent_with_declared(&body, t)?;
                }
                Bytes::from(super::shared_create_body(&t.logical, Some(&body)).to_string())
            } else {
                // An alias is a name in the cluster's namespace: it could
                // claim another partition's index before that is created.
                // A default or final pipeline can set a document's `_index`.
                let body = serde_json::from_slice::<Value>(&raw).ok();
                let named = |key: &str| body.as_ref().is_some_and(|v| mentions_key(v, key));
                let refused = if body.as_ref().is_some_and(|v| v.get("aliases").is_some()) {
                    Some("`aliases`")
                } else if body.as_ref().is_some_and(names_a_pipeline) || named("search_pipeline") {
                    Some("a default or final pipeline")
                } else {
                    None
                };
                if let (Some(what), false) = (refused, principal.is_some_and(|p| p.operator)) {
                    return Err(ProxyError::new(
                        ErrorCode::OperatorRequired,
                        format!("{what} in the create-index body of logical index {:?} could reach indices outside this partition's own; only an operator may set it", t.logical.name),
                    ));
                }
                raw.into_bytes()
            };
            index_write(
                tenancy,
                t,
                Method::PUT,
                &index_path,
                &parts.headers,
                Some(create),
            )
            .await
        }
        (None, &Method::DELETE) => {
            if shared {
                return Err(ProxyError::new(
                    ErrorCode::BadRequest,
                    format!("logical index {:?} lives in a shared index holding other tenants' data; it cannot be deleted from here (delete your documents instead)", t.logical.name),
                ));
            }
            index_write(
                tenancy,
                t,
                Method::DELETE,
                &index_path,
                &parts.headers,
                None,
            )
            .await
        }
        (Some("_mapping" | "_mappings"), &Method::GET) | (Some("_settings"), &Method::GET) => {
            let path = format!("{index_path}/{}", endpoint.unwrap_or_default());
            let (p, b) = tenancy
                .read(t, Method::GET, &path, &parts.headers, None)
                .await?;
            if !p.status.is_success() {
                return Ok(json_response(p, reverse::error(&b, t, None)));
            }
            if shared && endpoint != Some("_settings") {
                return Ok(json_response(p, declared_mapping(t)));
            }
            Ok(json_response(p, logical_view(&b, t)))
        }
        (Some("_mapping" | "_mappings"), &Method::PUT | &Method::POST) => {
            if shared && !principal.is_some_and(|p| p.operator) {
                return Err(ProxyError::new(
                    ErrorCode::OperatorRequired,
                    format!("the mapping of logical index {:?} is shared by every tenant of its shared placement; only an operator may change it", t.logical.name),
                ));
            }
            let raw = read_json(body).await?;
            no_percolator(&raw, t, principal)?;
            if shared && mentions_field(&raw, &t.logical.field) {
                return Err(ProxyError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "the mapping of `{}` is osproxy's partition field and cannot be changed",
                        t.logical.field
                    ),
                ));
            }
            let path = format!("{index_path}/_mapping");
            index_write(
                tenancy,
                t,
                Method::PUT,
                &path,
                &parts.headers,
                Some(raw.into_bytes()),
            )
            .await
        }
        (Some("_refresh"), &Method::POST | &Method::GET) => {
            let path = format!("{index_path}/_refresh");
            let (p, b) = tenancy
                .exchange(t, Method::POST, &path, &parts.headers, None)
                .await?;
            Ok(json_response(p, reverse::error(&b, t, None)))
        }
        _ => Err(unsupported(&method, parts.uri.path())),
    }
}

fn unsupported(method: &Method, path: &str) -> ProxyError {
    let shown: String = path.chars().take(200).collect();
    ProxyError::new(
        ErrorCode::UnsupportedEndpoint,
        format!("{method} {shown} is not served for logical indices in this version"),
    )
}

fn bad_json(e: serde_json::Error) -> ProxyError {
    ProxyError::new(
        ErrorCode::BadRequest,
        format!("the request body is not valid JSON: {e}"),
    )
}

/// A create-index body with the partition field mapped as `keyword`; a body
/// that maps the field itself is refused.
fn with_partition_field(raw: &Bytes, field: &str) -> Result<Bytes, ProxyError> {
    let mut v: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(raw).map_err(bad_json)?
    };
    let Some(root) = v.as_object_mut() else {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            "the create-index body must be a JSON object",
        ));
    };
    let mappings = root
        .entry("mappings")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(mappings) = mappings.as_object_mut() else {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            "`mappings` must be an object",
        ));
    };
    let properties = mappings
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(properties) = properties.as_object_mut() else {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            "`mappings.properties` must be an object",
        ));
    };
    // `_tenant.` is `_tenant` to OpenSearch's mapping parser (it drops a
    // name's trailing dots), and `_tenant.x` a path below it.
    if properties
        .keys()
        .any(|k| osproxy_rewrite::source::names_field(k, field))
    {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            format!("`{field}` is osproxy's partition field; remove it from the mappings"),
        ));
    }
    properties.insert(field.to_string(), serde_json::json!({"type": "keyword"}));
    Ok(Bytes::from(v.to_string()))
}

/// What a tenant (not an operator) may put in the create-index body of a
/// shared placement: field definitions under `mappings.properties`, and
/// nothing that shapes the index for the other tenants in it — no
/// `settings` (a default pipeline, analysers), no `aliases`, no dynamic
/// templates or `dynamic` switch, and no `copy_to` (which could write into
/// the partition field or another tenant's field).
fn tenant_shape_only(raw: &[u8], t: &Target<'_>) -> Result<(), ProxyError> {
    let refuse = |what: &str| {
        ProxyError::new(
            ErrorCode::OperatorRequired,
            format!("{what} in the create-index body of logical index {:?} would shape the shared index of every tenant in its placement; only an operator may set it", t.logical.name),
        )
    };
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(raw).map_err(bad_json)?;
    let Some(root) = v.as_object() else {
        return Ok(()); // refused as not an object further on
    };
    for (key, value) in root {
        if key != "mappings" {
            return Err(refuse(&format!("`{key}`")));
        }
        let Some(m) = value.as_object() else {
            continue;
        };
        if let Some(other) = m.keys().find(|k| *k != "properties") {
            return Err(refuse(&format!("`mappings.{other}`")));
        }
        if let Some(props) = m.get("properties") {
            if mentions_key(props, "copy_to") {
                return Err(refuse("`copy_to`"));
            }
            // Found by review: an alias field to `_index` (or `_routing`)
            // would answer the shared index's name under a field of the
            // tenant's choosing, past every check on metadata fields.
            if is_alias_field(props) {
                return Err(refuse("a field of `type: alias`"));
            }
        }
    }
    Ok(())
}

/// Where the catalogue declares the shared index's mappings, a tenant's
/// create body may only repeat declared field definitions: it cannot
/// shape the index for the others in it.
fn consistent_with_declared(body: &Map<String, Value>, t: &Target<'_>) -> Result<(), ProxyError> {
    let Some(declared) = t.logical.mappings.as_deref() else {
        return Ok(());
    };
    let given = body
        .get("mappings")
        .and_then(|m| m.get("properties"))
        .and_then(Value::as_object);
    for (field, def) in given.into_iter().flatten() {
        if field == &t.logical.field {
            continue;
        }
        if osproxy_rewrite::source::names_field(field, &t.logical.field) {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!("`{}` is read by OpenSearch as osproxy's partition field `{}`; remove it from the mappings", field.chars().take(64).collect::<String>(), t.logical.field),
            ));
        }
        if declared.get("properties").and_then(|p| p.get(field)) != Some(def) {
            let shown: String = field.chars().take(64).collect();
            return Err(ProxyError::new(
                ErrorCode::OperatorRequired,
                format!("field `{shown}` is not declared so in the catalogue's mapping of logical index {:?}; the shared index's mapping is the operator's (declare it in the catalogue)", t.logical.name),
            ));
        }
    }
    Ok(())
}

/// A shared placement's mapping as tenants see it: the catalogue's
/// declaration (`{"properties":{}}` when none), never the physical index,
/// whose fields include those other tenants' documents created.
fn declared_mapping(t: &Target<'_>) -> Vec<u8> {
    let mut mappings = t
        .logical
        .mappings
        .as_deref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    mappings
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let mut out = Map::new();
    out.insert(
        t.logical.name.clone(),
        serde_json::json!({ "mappings": Value::Object(mappings) }),
    );
    Value::Object(out).to_string().into_bytes()
}

/// A `percolator` field stores queries that OpenSearch runs (terms lookups
/// and indexed shapes fetched from any index) whenever a document is
/// written: a tenant may not map one.
fn no_percolator(
    raw: &[u8],
    t: &Target<'_>,
    principal: Option<&Principal>,
) -> Result<(), ProxyError> {
    if principal.is_some_and(|p| p.operator) {
        return Ok(());
    }
    fn has(v: &Value) -> bool {
        match v {
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| (k == "type" && v == "percolator") || has(v)),
            Value::Array(a) => a.iter().any(has),
            _ => false,
        }
    }
    let found = serde_json::from_slice::<Value>(raw).is_ok_and(|v| has(&v));
    if found {
        return Err(ProxyError::new(
            ErrorCode::OperatorRequired,
            format!("a `percolator` field in logical index {:?} would run stored queries that can read other indices; only an operator may map one", t.logical.name),
        ));
    }
    Ok(())
}

/// Whether a field anywhere in `v` is declared `"type": "alias"`.
fn is_alias_field(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("type").and_then(Value::as_str) == Some("alias") || m.values().any(is_alias_field)
        }
        Value::Array(a) => a.iter().any(is_alias_field),
        _ => false,
    }
}

/// Whether `key` occurs as an object key anywhere in `v`.
/// Whether a settings body names a default or final pipeline, in any
/// spelling: nested (`{"index":{"default_pipeline":..}}`), dotted
/// (`index.default_pipeline`) or both, the search one too (found by review:
/// `index.search.default_pipeline` ran a search pipeline on every search).
fn names_a_pipeline(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| osproxy_rewrite::search::is_pipeline_setting(k) || names_a_pipeline(v)),
        Value::Array(a) => a.iter().any(names_a_pipeline),
        _ => false,
    }
}

fn mentions_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k == key || mentions_key(v, key)),
        Value::Array(a) => a.iter().any(|v| mentions_key(v, key)),
        _ => false,
    }
}

fn mentions_field(raw: &[u8], field: &str) -> bool {
    serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("properties")?
                .as_object()?
                .keys()
                .find(|k| osproxy_rewrite::source::names_field(k, field))
                .map(|_| ())
        })
        .is_some()
}

/// The index settings a tenant of a shared placement is shown.
const SHARED_SETTINGS: &[&str] = &[
    "number_of_shards",
    "number_of_replicas",
    "refresh_interval",
    "max_result_window",
    "max_inner_result_window",
    "max_terms_count",
    "max_docvalue_fields_search",
    "max_script_fields",
    "max_ngram_diff",
    "max_shingle_diff",
    "analysis",
    "similarity",
    "mapping",
    "highlight",
    "query",
    "sort",
    "knn",
    "knn.algo_param",
    "codec",
    "hidden",
];

/// `{"<physical>": {...}}` as `{"<logical>": {...}}`, the partition field
/// removed from mapping properties in shared placements.
fn logical_view(raw: &[u8], t: &Target<'_>) -> Vec<u8> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(raw) else {
        return raw.to_vec();
    };
    let mut out = Map::new();
    for (_, mut v) in map {
        if t.shared() {
            if let Some(props) = v
                .pointer_mut("/mappings/properties")
                .and_then(Value::as_object_mut)
            {
                props.remove(&t.logical.field);
            }
            // Only settings that describe the logical index as its tenants
            // may know it (found by review: the uuid and creation date,
            // alike for all tenants of the shared index, proved they share
            // it; a clone's `resize.source.*` named its source, and
            // allocation, blocks and pipelines are the operator's).
            if let Some(index) = v
                .pointer_mut("/settings/index")
                .and_then(Value::as_object_mut)
            {
                index.retain(|k, _| SHARED_SETTINGS.contains(&k.as_str()));
            }
            if let Some(settings) = v.get_mut("settings").and_then(Value::as_object_mut) {
                settings.retain(|k, _| k == "index");
            }
            if let Some(root) = v.as_object_mut() {
                root.remove("defaults");
            }
        }
        out.insert(t.logical.name.clone(), v);
    }
    let text = Value::Object(out).to_string();
    reverse::error(text.as_bytes(), t, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: OpenSearch's mapping parser reads `_tenant.` as
    /// `_tenant` (and `_tenant.x` as a path below it), so a mapping may not
    /// name the partition field in those spellings either.
    #[test]
    fn a_mapping_may_not_name_the_partition_field_in_any_spelling() {
        for props in [
            r#"{"_tenant":{}}"#,
            r#"{"_tenant.":{"type":"keyword","ignore_above":1}}"#,
            r#"{"_tenant.t":{"type":"text"}}"#,
        ] {
            let body = format!(r#"{{"mappings":{{"properties":{props}}}}}"#);
            assert!(
                with_partition_field(&Bytes::from(body.clone()), "_tenant").is_err(),
                "{body}"
            );
            assert!(
                mentions_field(format!(r#"{{"properties":{props}}}"#).as_bytes(), "_tenant"),
                "{props}"
            );
        }
        let ok = Bytes::from(r#"{"mappings":{"properties":{"_tenants":{"type":"text"}}}}"#);
        assert!(with_partition_field(&ok, "_tenant").is_ok());
        assert!(!mentions_field(
            br#"{"properties":{"x._tenant":{}}}"#,
            "_tenant"
        ));
    }

    #[test]
    fn a_pipeline_setting_is_seen_in_every_spelling() {
        for body in [
            r#"{"settings":{"index.search.default_pipeline":"p"}}"#,
            r#"{"settings":{"index":{"search":{"default_pipeline":"p"}}}}"#,
            r#"{"settings":{"search.default_pipeline":"p"}}"#,
            r#"{"settings":{"index.final_pipeline":"p"}}"#,
            r#"{"settings":{"default_pipeline":"p"}}"#,
        ] {
            let v: Value = serde_json::from_str(body).unwrap();
            assert!(names_a_pipeline(&v), "{body}");
        }
        let v: Value = serde_json::from_str(r#"{"settings":{"number_of_shards":1}}"#).unwrap();
        assert!(!names_a_pipeline(&v));
    }
}
