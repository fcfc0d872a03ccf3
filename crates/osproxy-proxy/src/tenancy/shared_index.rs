//! The shared physical index of a logical index: created from the
//! catalogue's declaration before first use, its partition field checked to
//! be `keyword`, its name checked to be a concrete index.

use bytes::Bytes;
use http::HeaderMap;
use osproxy_control::LogicalIndex;
use osproxy_core::{ErrorCode, ProxyError};
use percent_encoding::utf8_percent_encode;

use super::{reverse, Target, Tenancy, SEGMENT};

impl Tenancy {
    /// Makes sure a shared physical index maps the partition field as
    /// `keyword` before anything is written to or searched in it: a
    /// dynamically mapped `text` field would be tokenised, and a term filter
    /// on `acme` would also match `acme-eu`. The index is created with that
    /// mapping when missing; an index that maps the field otherwise is
    /// refused. Checked once per index and worker.
    pub(crate) async fn ensure_shared_mapping(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        if !t.shared() {
            return Ok(());
        }
        let known = |v: &std::collections::HashMap<String, std::collections::HashSet<String>>| {
            v.get(&t.cluster.id)
                .is_some_and(|set| set.contains(&verified_key(t)))
        };
        if self.verified.lock().map(|v| known(&v)).unwrap_or(false) {
            return Ok(());
        }
        // A preparation exchange, not the request's own: the trace goes on
        // in the stage it was in.
        let stage = crate::diagnostics::stage();
        let outcome = self.prepare_shared_mapping(t).await;
        if let Some(stage) = stage {
            crate::diagnostics::enter(stage);
        }
        outcome
    }

    async fn prepare_shared_mapping(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        let field = serde_json::Value::from(t.logical.field.as_str()).to_string();
        let properties = format!("{{\"properties\":{{{field}:{{\"type\":\"keyword\"}}}}}}");
        let headers = HeaderMap::new();
        let mapping_path = t.path("_mapping", None, "");
        for _ in 0..2 {
            let (parts, body) = self
                .exchange(
                    t,
                    http::Method::PUT,
                    &mapping_path,
                    &headers,
                    Some(Bytes::from(properties.clone())),
                )
                .await?;
            if parts.status.is_success() {
                self.check_concrete_index(t).await?;
                if let Ok(mut v) = self.verified.lock() {
                    v.entry(t.cluster.id.clone())
                        .or_default()
                        .insert(verified_key(t));
                }
                return Ok(());
            }
            if parts.status != http::StatusCode::NOT_FOUND {
                let reason = String::from_utf8_lossy(&reverse::error(&body, t, None))
                    .chars()
                    .take(500)
                    .collect::<String>();
                return Err(ProxyError::new(
                    ErrorCode::Internal,
                    format!("the shared index of logical index {:?} does not map the partition field as keyword, so a filter on it would not isolate tenants; osproxy refuses to use it (cluster said: {reason})", t.logical.name),
                ));
            }
            // Missing: create it from the catalogue's declaration with the
            // field mapped, then check again (a concurrent creation answers
            // resource_already_exists).
            let create = shared_create_body(&t.logical, None).to_string();
            let index_path = format!("/{}", utf8_percent_encode(t.physical_index(), SEGMENT));
            self.exchange(
                t,
                http::Method::PUT,
                &index_path,
                &headers,
                Some(Bytes::from(create)),
            )
            .await?;
        }
        Err(ProxyError::new(
            ErrorCode::UpstreamUnavailable,
            "the shared index could not be prepared; retry",
        )
        .retryable(true))
    }

    /// Refuses a shared physical name that is an alias rather than an index:
    /// `PUT {alias}/_mapping` succeeds too, and an alias someone else made
    /// could point the partition's documents into an index of theirs.
    async fn check_concrete_index(&self, t: &Target<'_>) -> Result<(), ProxyError> {
        let path = format!(
            "/{}?filter_path=*.settings.index.provided_name",
            utf8_percent_encode(t.physical_index(), SEGMENT)
        );
        let (parts, body) = self
            .read(t, http::Method::GET, &path, &HeaderMap::new(), None)
            .await?;
        let names: Vec<String> =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
        if parts.status.is_success() && names.len() == 1 && names[0] == t.physical_index() {
            return Ok(());
        }
        Err(ProxyError::new(
            ErrorCode::Internal,
            format!("the shared index of logical index {:?} is not a concrete index of that name (an alias, or several indices, answer to it); osproxy refuses to use it", t.logical.name),
        ))
    }
}

/// The create-index body of a shared physical index: the catalogue's
/// declared settings and mappings, with `extra` (an operator's or a
/// tenant's already checked create body) laid over them, and the partition
/// field mapped as `keyword`.
pub(crate) fn shared_create_body(
    logical: &LogicalIndex,
    extra: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let object = |v: Option<&Value>| v.and_then(Value::as_object).cloned().unwrap_or_default();
    let mut settings = object(logical.settings.as_deref());
    let mut mappings = object(logical.mappings.as_deref());
    if let Some(extra) = extra {
        settings.extend(object(extra.get("settings")));
        for (k, v) in object(extra.get("mappings")) {
            match (k.as_str(), mappings.get_mut("properties")) {
                ("properties", Some(Value::Object(props))) => props.extend(object(Some(&v))),
                _ => {
                    mappings.insert(k, v);
                }
            }
        }
    }
    let props = mappings
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(props) = props {
        props.insert(logical.field.clone(), json!({"type": "keyword"}));
    }
    let mut body = Map::new();
    if !settings.is_empty() {
        body.insert("settings".into(), Value::Object(settings));
    }
    body.insert("mappings".into(), Value::Object(mappings));
    if let Some(aliases) = extra.and_then(|e| e.get("aliases")) {
        body.insert("aliases".into(), aliases.clone());
    }
    Value::Object(body)
}

/// What the verified set remembers: the physical index *and* the partition
/// field, so a catalogue change of the field is checked again.
fn verified_key(t: &Target<'_>) -> String {
    format!("{}\u{0}{}", t.physical_index(), t.logical.field)
}
