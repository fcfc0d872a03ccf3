//! The metadata of a bulk action line, read as OpenSearch reads it.
//!
//! OpenSearch parses every action line before it runs any item, and a line
//! it cannot parse or validate (an unknown key, `"version":"abc"`, a
//! duplicate key, `if_seq_no` without `if_primary_term`, ...) fails the
//! whole `_bulk` request. osproxy sends one upstream `_bulk` for many client
//! items, so such a line would fail its neighbours too. Each line is
//! therefore read here with OpenSearch's rules (2.19 and 3.x alike, checked
//! against a real node): a line OpenSearch would refuse fails its own item
//! with OpenSearch's message, and a line it accepts is forwarded in a
//! canonical form built from the values read here (numbers as JSON
//! integers, booleans as booleans), so the cluster reads what osproxy read.

use serde_json::value::RawValue;

use super::{push_json_str, ActionLine, BulkOp};

/// Why an action line's metadata is refused: OpenSearch's error type and
/// message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError {
    /// `illegal_argument_exception` (the line does not parse) or
    /// `action_request_validation_exception` (it parses, but the values do
    /// not go together).
    pub kind: &'static str,
    /// OpenSearch's message.
    pub reason: String,
}

impl MetadataError {
    fn parse(reason: impl Into<String>) -> Self {
        MetadataError {
            kind: "illegal_argument_exception",
            reason: reason.into(),
        }
    }
}

/// OpenSearch's validation failure listing `failed`, numbered as it
/// numbers them; none is success.
fn validation<S: AsRef<str>>(failed: &[S]) -> Result<(), MetadataError> {
    if failed.is_empty() {
        return Ok(());
    }
    let mut reason = String::from("Validation Failed: ");
    for (i, f) in failed.iter().enumerate() {
        reason.push_str(&format!("{}: {};", i + 1, f.as_ref()));
    }
    Err(MetadataError {
        kind: "action_request_validation_exception",
        reason,
    })
}

/// OpenSearch's `Versions.MATCH_ANY`: no version given.
const MATCH_ANY: i64 = -3;
/// OpenSearch's `Versions.MATCH_DELETED`.
const MATCH_DELETED: i64 = -4;
/// OpenSearch's `UNASSIGNED_SEQ_NO`.
const UNASSIGNED_SEQ_NO: i64 = -2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum VersionType {
    Internal,
    External,
    ExternalGte,
}

impl VersionType {
    fn name(self) -> &'static str {
        match self {
            VersionType::Internal => "INTERNAL",
            VersionType::External => "EXTERNAL",
            VersionType::ExternalGte => "EXTERNAL_GTE",
        }
    }
    fn wire(self) -> &'static str {
        match self {
            VersionType::Internal => "internal",
            VersionType::External => "external",
            VersionType::ExternalGte => "external_gte",
        }
    }
    fn valid_for_writes(self, version: i64) -> bool {
        match self {
            VersionType::Internal => {
                version > 0 || version == MATCH_ANY || version == MATCH_DELETED
            }
            VersionType::External | VersionType::ExternalGte => version >= 0,
        }
    }
}

/// `_source` in an action line: a boolean, a field pattern, or an object of
/// `includes` and `excludes`.
enum SourceFilter {
    Fetch(bool),
    Pattern(String),
    Filter {
        includes: Vec<String>,
        excludes: Vec<String>,
    },
}

/// Every metadata value OpenSearch reads, besides `_index`, `_id` and
/// `routing` (parsed apart by [`super::parse_action`]).
#[derive(Default)]
struct Metadata {
    op_type: Option<String>,
    version: Option<i64>,
    version_type: Option<VersionType>,
    if_seq_no: Option<i64>,
    if_primary_term: Option<i64>,
    retry_on_conflict: Option<i32>,
    pipeline: Option<String>,
    require_alias: Option<bool>,
    source: Option<SourceFilter>,
}

/// The JSON token OpenSearch names in its messages.
fn token(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "START_OBJECT",
        Some(b'[') => "START_ARRAY",
        Some(b'"') => "VALUE_STRING",
        Some(b't' | b'f') => "VALUE_BOOLEAN",
        Some(b'n') => "VALUE_NULL",
        _ => "VALUE_NUMBER",
    }
}

fn not_simple(name: &str, raw: &str) -> MetadataError {
    MetadataError::parse(format!(
        "Malformed action/metadata line, expected a simple value for field [{name}] but found [{}]",
        token(raw)
    ))
}

/// A scalar's text, as OpenSearch's `parser.text()` gives it; `None` for
/// null (which OpenSearch skips).
fn text(name: &str, raw: &str) -> Result<Option<String>, MetadataError> {
    match raw.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"') => serde_json::from_str::<String>(raw)
            .map(Some)
            .map_err(|e| MetadataError::parse(format!("[{name}] is not a valid string ({e})"))),
        Some(b'{' | b'[') => Err(not_simple(name, raw)),
        _ => Ok(Some(raw.to_string())),
    }
}

/// A number as OpenSearch's lenient `longValue()` reads it: a JSON
/// integer, a string holding one, or a JSON number with a fraction (which
/// OpenSearch truncates); `None` for null. Forms whose reading could differ
/// (exponents, fractions in strings, very long numbers) are refused.
fn long(name: &str, raw: &str, min: i64, max: i64) -> Result<Option<i64>, MetadataError> {
    let (digits, quoted) = match raw.as_bytes().first() {
        Some(b'n') => return Ok(None),
        Some(b'{' | b'[') => return Err(not_simple(name, raw)),
        Some(b't' | b'f') => {
            return Err(MetadataError::parse(format!(
                "[{name}] must be a number, not a boolean ({raw})"
            )))
        }
        Some(b'"') => (
            serde_json::from_str::<String>(raw).map_err(|e| {
                MetadataError::parse(format!("[{name}] is not a valid string ({e})"))
            })?,
            true,
        ),
        _ => (raw.to_string(), false),
    };
    let bad = || {
        MetadataError::parse(format!(
            "For input string: \"{}\" ([{name}] must be an integer)",
            clip(&digits)
        ))
    };
    if digits.len() > 40 {
        return Err(bad());
    }
    // A JSON number's fraction is truncated, as OpenSearch does; nothing
    // else but an optional sign and digits is read.
    // (OpenSearch reads a JSON fraction through a double, so past 2^53 it
    // could round where truncating does not: refused there.)
    let whole = match digits.split_once('.') {
        Some((whole, fraction))
            if !quoted
                && !whole.is_empty()
                && whole.trim_start_matches(['-', '+']).len() <= 15
                && fraction.bytes().all(|b| b.is_ascii_digit()) =>
        {
            whole
        }
        Some(_) => return Err(bad()),
        None => digits.as_str(),
    };
    let unsigned = whole.strip_prefix(['-', '+']).unwrap_or(whole);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value = match whole.parse::<i64>() {
        Ok(v) => v,
        Err(_) if whole == "-0" => 0,
        Err(_) => {
            return Err(MetadataError::parse(format!(
                "Numeric value ({}) out of range of long",
                clip(&digits)
            )))
        }
    };
    if value < min || value > max {
        return Err(MetadataError::parse(format!(
            "Numeric value ({}) out of range of [{name}] ({min} - {max})",
            clip(&digits)
        )));
    }
    Ok(Some(value))
}

/// A boolean as OpenSearch's `booleanValue()` reads it: `true`, `false`, or
/// the strings "true" and "false"; `None` for null.
fn boolean(name: &str, raw: &str) -> Result<Option<bool>, MetadataError> {
    match raw {
        "null" => Ok(None),
        "true" | "\"true\"" => Ok(Some(true)),
        "false" | "\"false\"" => Ok(Some(false)),
        _ if raw.starts_with('{') || raw.starts_with('[') => Err(not_simple(name, raw)),
        _ if raw.starts_with('"') => Err(MetadataError::parse(format!(
            "Failed to parse value [{}] as only [true] or [false] are allowed.",
            clip(&serde_json::from_str::<String>(raw).unwrap_or_default())
        ))),
        _ => Err(MetadataError::parse(format!(
            "Current token ({}) not of boolean type for [{name}]",
            token(raw)
        ))),
    }
}

/// One or more field patterns: a string or an array of strings.
fn patterns(raw: &str) -> Result<Vec<String>, MetadataError> {
    if let Ok(one) = serde_json::from_str::<String>(raw) {
        return Ok(vec![one]);
    }
    serde_json::from_str::<Vec<String>>(raw).map_err(|_| {
        MetadataError::parse(format!(
            "[_source] includes and excludes must be strings or arrays of strings, not {}",
            token(raw)
        ))
    })
}

fn source(raw: &str) -> Result<Option<SourceFilter>, MetadataError> {
    match raw.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b't' | b'f') => Ok(boolean("_source", raw)?.map(SourceFilter::Fetch)),
        Some(b'"') => Ok(text("_source", raw)?.map(SourceFilter::Pattern)),
        Some(b'{') => {
            let super::Members(members) = serde_json::from_str(raw)
                .map_err(|e| MetadataError::parse(format!("[_source] is not an object ({e})")))?;
            let (mut includes, mut excludes) = (None, None);
            for (key, value) in members {
                let slot = match key.as_str() {
                    "includes" | "include" => &mut includes,
                    "excludes" | "exclude" => &mut excludes,
                    _ => {
                        return Err(MetadataError::parse(format!(
                            "Unknown key for a {} in [{}].",
                            token(value.get()),
                            clip(&key)
                        )))
                    }
                };
                if slot.is_some() {
                    return Err(MetadataError::parse(format!(
                        "[_source] gives `{}` more than once",
                        clip(&key)
                    )));
                }
                *slot = Some(patterns(value.get())?);
            }
            Ok(Some(SourceFilter::Filter {
                includes: includes.unwrap_or_default(),
                excludes: excludes.unwrap_or_default(),
            }))
        }
        _ => Err(MetadataError::parse(format!(
            "Expected one of [VALUE_BOOLEAN, START_OBJECT] but found [{}]",
            token(raw)
        ))),
    }
}

/// At most 64 printable characters of a client's text, for a message.
fn clip(s: &str) -> String {
    s.chars().take(64).filter(|c| !c.is_control()).collect()
}

impl Metadata {
    fn read(members: &[(String, Box<RawValue>)]) -> Result<Metadata, MetadataError> {
        let mut m = Metadata::default();
        for (i, (name, raw)) in members.iter().enumerate() {
            if members[..i].iter().any(|(seen, _)| seen == name) {
                return Err(MetadataError::parse(format!(
                    "Duplicate field '{}'",
                    clip(name)
                )));
            }
            let raw = raw.get();
            // OpenSearch skips a null value, whatever its key.
            if raw == "null" {
                continue;
            }
            match name.as_str() {
                "op_type" => m.op_type = text(name, raw)?,
                "version" => m.version = long(name, raw, i64::MIN, i64::MAX)?,
                "version_type" => {
                    m.version_type = match text(name, raw)?.as_deref() {
                        None => None,
                        Some("internal") => Some(VersionType::Internal),
                        Some("external" | "external_gt") => Some(VersionType::External),
                        Some("external_gte") => Some(VersionType::ExternalGte),
                        Some(other) => {
                            return Err(MetadataError::parse(format!(
                                "No version type match [{}]",
                                clip(other)
                            )))
                        }
                    }
                }
                "if_seq_no" => m.if_seq_no = long(name, raw, i64::MIN, i64::MAX)?,
                "if_primary_term" => m.if_primary_term = long(name, raw, i64::MIN, i64::MAX)?,
                "retry_on_conflict" => {
                    m.retry_on_conflict = long(name, raw, i64::from(i32::MIN), i64::from(i32::MAX))?
                        .and_then(|v| i32::try_from(v).ok())
                }
                "pipeline" => m.pipeline = text(name, raw)?,
                "require_alias" => m.require_alias = boolean(name, raw)?,
                "_source" => m.source = source(raw)?,
                _ => {
                    return Err(MetadataError::parse(format!(
                        "Action/metadata line contains an unknown parameter [{}]",
                        clip(name)
                    )))
                }
            }
        }
        Ok(m)
    }

    /// The checks OpenSearch makes while parsing the line and then when it
    /// validates the request, for an item of `op`.
    fn validate(&self, op: BulkOp, has_id: bool) -> Result<(), MetadataError> {
        let version = self.version.unwrap_or(MATCH_ANY);
        let version_type = self.version_type.unwrap_or(VersionType::Internal);
        let seq_no = self.if_seq_no.unwrap_or(UNASSIGNED_SEQ_NO);
        let term = self.if_primary_term.unwrap_or(0);
        if seq_no < 0 && seq_no != UNASSIGNED_SEQ_NO {
            return Err(MetadataError::parse(format!(
                "sequence numbers must be non negative. got [{seq_no}]."
            )));
        }
        if term < 0 {
            return Err(MetadataError::parse(format!(
                "primary term must be non negative. got [{term}]"
            )));
        }
        if op == BulkOp::Update && (version != MATCH_ANY || version_type != VersionType::Internal) {
            return Err(MetadataError::parse(
                "Update requests do not support versioning. Please use `if_seq_no` and `if_primary_term` instead",
            ));
        }
        let mut failed: Vec<String> = Vec::new();
        if matches!(op, BulkOp::Update | BulkOp::Delete) && !has_id {
            failed.push("id is missing".into());
        }
        if op == BulkOp::Index
            && !has_id
            && (version_type != VersionType::Internal || version != MATCH_ANY)
        {
            failed.push("an id must be provided if version type or value are set".into());
        }
        let creates = op == BulkOp::Create
            || (op == BulkOp::Index && self.op_type.as_deref() == Some("create"));
        if creates {
            if version_type != VersionType::Internal {
                failed.push(
                    "create operations only support internal versioning. use index instead".into(),
                );
            } else if version != MATCH_ANY && version != MATCH_DELETED {
                failed.push(
                    "create operations do not support explicit versions. use index instead".into(),
                );
            }
            if seq_no != UNASSIGNED_SEQ_NO || term != 0 {
                failed.push(
                    "create operations do not support compare and set. use index instead".into(),
                );
            }
        } else {
            if op != BulkOp::Update {
                if !version_type.valid_for_writes(version) {
                    failed.push(format!(
                        "illegal version value [{version}] for version type [{}]",
                        version_type.name()
                    ));
                }
                if version_type == VersionType::Internal
                    && version != MATCH_ANY
                    && version != MATCH_DELETED
                {
                    failed.push("internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` and `if_primary_term` instead".into());
                }
                if seq_no != UNASSIGNED_SEQ_NO
                    && (version_type != VersionType::Internal || version != MATCH_ANY)
                {
                    failed.push("compare and write operations can not use versioning".into());
                }
            }
            if op == BulkOp::Update
                && seq_no != UNASSIGNED_SEQ_NO
                && self.retry_on_conflict.unwrap_or(0) > 0
            {
                failed.push("compare and write operations can not be retried".into());
            }
            if term == 0 && seq_no != UNASSIGNED_SEQ_NO {
                failed.push("ifSeqNo is set, but primary term is [0]".into());
            }
            if term != 0 && seq_no == UNASSIGNED_SEQ_NO {
                failed.push(format!(
                    "ifSeqNo is unassigned, but primary term is [{term}]"
                ));
            }
        }
        validation(&failed)
    }

    /// The members to forward, each rendered from the value read.
    fn render(&self, op: BulkOp) -> Result<Vec<(String, Box<RawValue>)>, MetadataError> {
        let mut out: Vec<(&str, Vec<u8>)> = Vec::new();
        let quoted = |s: &str| {
            let mut v = Vec::with_capacity(s.len() + 2);
            push_json_str(&mut v, s);
            v
        };
        // `op_type` changes only an `index` item, and only to `create`.
        if op == BulkOp::Index && self.op_type.as_deref() == Some("create") {
            out.push(("op_type", b"\"create\"".to_vec()));
        }
        if let Some(v) = self.version {
            out.push(("version", v.to_string().into_bytes()));
        }
        if let Some(t) = self.version_type {
            out.push(("version_type", quoted(t.wire())));
        }
        if let Some(v) = self.if_seq_no {
            out.push(("if_seq_no", v.to_string().into_bytes()));
        }
        if let Some(v) = self.if_primary_term {
            out.push(("if_primary_term", v.to_string().into_bytes()));
        }
        if let Some(v) = self.retry_on_conflict {
            out.push(("retry_on_conflict", v.to_string().into_bytes()));
        }
        if let Some(p) = &self.pipeline {
            out.push(("pipeline", quoted(p)));
        }
        if let Some(b) = self.require_alias {
            out.push(("require_alias", b.to_string().into_bytes()));
        }
        match &self.source {
            None => {}
            Some(SourceFilter::Fetch(b)) => out.push(("_source", b.to_string().into_bytes())),
            Some(SourceFilter::Pattern(p)) => out.push(("_source", quoted(p))),
            Some(SourceFilter::Filter { includes, excludes }) => {
                let mut v = b"{\"includes\":[".to_vec();
                for (i, p) in includes.iter().enumerate() {
                    if i > 0 {
                        v.push(b',');
                    }
                    push_json_str(&mut v, p);
                }
                v.extend_from_slice(b"],\"excludes\":[");
                for (i, p) in excludes.iter().enumerate() {
                    if i > 0 {
                        v.push(b',');
                    }
                    push_json_str(&mut v, p);
                }
                v.extend_from_slice(b"]}");
                out.push(("_source", v));
            }
        }
        out.into_iter()
            .map(|(name, value)| {
                let text = String::from_utf8(value)
                    .map_err(|e| MetadataError::parse(format!("[{name}] is not UTF-8 ({e})")))?;
                let raw = RawValue::from_string(text).map_err(|e| {
                    MetadataError::parse(format!("[{name}] cannot be rendered ({e})"))
                })?;
                Ok((name.to_string(), raw))
            })
            .collect()
    }
}

/// Reads the metadata of an action line as OpenSearch does, for an item
/// sent upstream as `op` with an `_id` or not (`has_id`), and returns it in
/// canonical form; a line OpenSearch would refuse is refused here with
/// OpenSearch's message.
pub fn check_metadata(
    op: BulkOp,
    has_id: bool,
    rest: &[(String, Box<RawValue>)],
) -> Result<Vec<(String, Box<RawValue>)>, MetadataError> {
    let m = Metadata::read(rest)?;
    m.validate(op, has_id)?;
    m.render(op)
}

/// [`check_metadata`] for the action line as the client wrote it, its
/// metadata replaced by the canonical form.
///
/// ```
/// use osproxy_rewrite::bulk::{canonical_metadata, parse_action};
/// let mut a = parse_action(br#"{"index":{"_id":"7","version":"5","version_type":"external"}}"#).unwrap();
/// canonical_metadata(&mut a).unwrap();
/// assert_eq!(a.rest[0].1.get(), "5");
/// let mut bad = parse_action(br#"{"index":{"_id":"7","if_seq_no":3}}"#).unwrap();
/// assert!(canonical_metadata(&mut bad).unwrap_err().reason.contains("primary term is [0]"));
/// ```
pub fn canonical_metadata(action: &mut ActionLine) -> Result<(), MetadataError> {
    action.rest = check_metadata(action.op, action.id.is_some(), &action.rest)?;
    Ok(())
}

/// The keys of an update's body, as OpenSearch's `UpdateRequest` reads them.
const UPDATE_KEYS: [&str; 9] = [
    "doc",
    "upsert",
    "script",
    "scripted_upsert",
    "doc_as_upsert",
    "detect_noop",
    "_source",
    "if_seq_no",
    "if_primary_term",
];

fn update_error(reason: impl Into<String>) -> MetadataError {
    MetadataError::parse(reason)
}

/// The most digits (integer and fraction parts) OpenSearch's parser reads
/// in one number (Jackson's `maxNumberLength`; measured on 2.19: a number
/// of 1,499 digits is refused with `stream_constraints_exception`, one of
/// 1,000 is read).
pub const MAX_NUMBER_DIGITS: usize = 1000;

/// The digits of the longest number in a JSON text (outside its strings),
/// or `None` when it holds no number; exponents are not counted.
fn longest_number(body: &[u8]) -> Option<usize> {
    let (mut longest, mut i) = (None, 0);
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let mut digits = 0;
                while i < body.len() && matches!(body[i], b'-' | b'.' | b'0'..=b'9') {
                    digits += usize::from(body[i].is_ascii_digit());
                    i += 1;
                }
                // An exponent's own digits are not the number's length.
                while i < body.len() && matches!(body[i], b'e' | b'E' | b'+' | b'-' | b'0'..=b'9') {
                    i += 1;
                }
                longest = longest.max(Some(digits));
            }
            _ => i += 1,
        }
    }
    longest
}

/// Checks the body of a bulk `update` item as OpenSearch reads it while it
/// parses the bulk (every body is read before any item runs, so one it
/// cannot read fails the whole request): an object of known keys with
/// values of their types, a `doc` or a `script` (not both), and no
/// compare-and-set (`if_seq_no` in the action line, `metadata`) together
/// with an upsert. `if_seq_no` and `if_primary_term` in the body are
/// refused: osproxy reads them from the action line only.
/// A number of more than [`MAX_NUMBER_DIGITS`] digits is refused too.
pub fn check_update_body(
    metadata: &[(String, Box<RawValue>)],
    body: &[u8],
) -> Result<(), MetadataError> {
    let m = Metadata::read(metadata)?;
    // OpenSearch reads an update body while it reads the bulk: one it
    // refuses fails the whole upstream batch, not its item alone.
    if let Some(digits) = longest_number(body).filter(|d| *d > MAX_NUMBER_DIGITS) {
        return Err(update_error(format!(
            "Number value length ({digits}) exceeds the maximum allowed ({MAX_NUMBER_DIGITS})"
        )));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| update_error(format!("the update body is not UTF-8 ({e})")))?;
    let super::Members(members) = serde_json::from_str(text).map_err(|_| {
        update_error(format!(
            "[UpdateRequest] Expected START_OBJECT but was: {}",
            token(text.trim_start())
        ))
    })?;
    let (mut doc, mut script, mut upsert, mut doc_as_upsert) = (false, false, false, false);
    for (key, value) in &members {
        let raw = value.get();
        let wrong = || {
            update_error(format!(
                "[UpdateRequest] {} doesn't support values of type: {}",
                clip(key),
                token(raw)
            ))
        };
        match key.as_str() {
            "doc" | "upsert" => {
                if !raw.starts_with('{') {
                    return Err(wrong());
                }
                if key == "doc" {
                    doc = true;
                } else {
                    upsert = true;
                }
            }
            "scripted_upsert" | "doc_as_upsert" | "detect_noop" => {
                let b = match raw {
                    "true" | "\"true\"" => true,
                    "false" | "\"false\"" => false,
                    _ => return Err(wrong()),
                };
                if key == "doc_as_upsert" {
                    doc_as_upsert = b;
                }
            }
            "_source" => {
                let ok = match raw.as_bytes().first() {
                    Some(b't' | b'f' | b'"') => true,
                    Some(b'[') => serde_json::from_str::<Vec<String>>(raw).is_ok(),
                    Some(b'{') => source(raw).is_ok(),
                    _ => false,
                };
                if !ok {
                    return Err(wrong());
                }
            }
            "script" => {
                check_script(raw)?;
                script = true;
            }
            "if_seq_no" | "if_primary_term" => {
                return Err(update_error(format!(
                    "`{key}` in an update's body is not supported by osproxy: give `if_seq_no` and `if_primary_term` in the action line"
                )))
            }
            _ => {
                return Err(update_error(format!(
                    "[UpdateRequest] unknown field [{}]",
                    clip(key)
                )))
            }
        }
    }
    debug_assert!(members
        .iter()
        .all(|(k, _)| UPDATE_KEYS.contains(&k.as_str())));
    let mut failed: Vec<&str> = Vec::new();
    if !doc && !script {
        failed.push("script or doc is missing");
    }
    if doc && script {
        failed.push("can't provide both script and doc");
    }
    if doc_as_upsert && !doc {
        failed.push("doc must be specified if doc_as_upsert is enabled");
    }
    if m.if_seq_no.is_some() && upsert {
        failed.push("upsert requests don't support `if_seq_no` and `if_primary_term`");
    }
    if m.if_seq_no.is_some() && doc_as_upsert {
        failed.push("compare and write operations can not be used with upsert");
    }
    validation(&failed)
}

/// A script as OpenSearch's `Script` parser reads it: a string (its
/// source), or an object with exactly one of `source` and `id`, and
/// `lang`, `params` and `options` of their types.
fn check_script(raw: &str) -> Result<(), MetadataError> {
    if raw.starts_with('"') {
        return Ok(());
    }
    let refused = |why: String| update_error(format!("[script] {why}"));
    if !raw.starts_with('{') {
        return Err(refused(format!(
            "must be a string or an object, not {}",
            token(raw)
        )));
    }
    let super::Members(members) =
        serde_json::from_str(raw).map_err(|e| refused(format!("cannot be read ({e})")))?;
    let (mut source, mut id, mut lang) = (false, false, false);
    let mut options: Vec<(String, Box<RawValue>)> = Vec::new();
    for (key, value) in &members {
        let v = value.get();
        let fits = match key.as_str() {
            "source" => {
                source = true;
                v.starts_with('"') || v.starts_with('{')
            }
            "id" => {
                id = true;
                v.starts_with('"')
            }
            "lang" => {
                lang = true;
                v.starts_with('"')
            }
            "params" => v.starts_with('{'),
            "options" => match serde_json::from_str::<super::Members>(v) {
                Ok(super::Members(o)) => {
                    options = o;
                    true
                }
                Err(_) => false,
            },
            _ => return Err(refused(format!("unknown field [{}]", clip(key)))),
        };
        if !fits {
            return Err(refused(format!(
                "[{}] doesn't support values of type: {}",
                clip(key),
                token(v)
            )));
        }
    }
    if source == id {
        return Err(refused(
            "must specify either [source] for an inline script or [id] for a stored script".into(),
        ));
    }
    if id && lang {
        return Err(refused(
            "illegally specified [lang] for a stored script".into(),
        ));
    }
    if id && !options.is_empty() {
        return Err(refused(
            "illegally specified [options] for a stored script".into(),
        ));
    }
    if let Some((key, _)) = options.iter().find(|(k, _)| k != "content_type") {
        return Err(refused(format!(
            "illegal compiler option [{}]: only [content_type] is allowed",
            clip(key)
        )));
    }
    Ok(())
}
