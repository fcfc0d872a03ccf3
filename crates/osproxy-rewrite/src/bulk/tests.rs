use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn split_all(body: &[u8], max: usize) -> Result<Vec<Bytes>, BulkError> {
    let mut s = LineSplitter::new(max);
    let mut lines = s.feed(body)?;
    lines.extend(s.finish());
    Ok(lines)
}

fn split_chunked(body: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Bytes>, BulkError> {
    let mut s = LineSplitter::new(max);
    let mut lines = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let cut = cut.clamp(at, body.len());
        lines.extend(s.feed(&body[at..cut])?);
        at = cut;
    }
    lines.extend(s.feed(&body[at..])?);
    lines.extend(s.finish());
    Ok(lines)
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).unwrap()
}

fn reason(line: &str) -> String {
    match parse_action(line.as_bytes()) {
        Err(BulkError::MalformedAction { reason }) => reason,
        other => panic!("{line}: expected MalformedAction, got {other:?}"),
    }
}

#[test]
fn crlf_blank_lines_and_no_final_newline() {
    let lines = split_all(b"a\r\n\r\n  \t\n\nb\n \r\nc\r", 16).unwrap();
    assert_eq!(lines, [&b"a"[..], b"b", b"c"]);
    assert_eq!(split_all(b"a\n", 16).unwrap(), [&b"a"[..]]);
    assert_eq!(split_all(b"", 16).unwrap(), Vec::<Bytes>::new());
    assert_eq!(split_all(b"  \r\n \r", 16).unwrap(), Vec::<Bytes>::new());
    // Only one trailing `\r` is removed; inner whitespace is kept.
    assert_eq!(split_all(b" x \r\r\n", 16).unwrap(), [&b" x \r"[..]]);
}

#[test]
fn blank_lines_can_be_kept() {
    let mut s = LineSplitter::keeping_blank(16);
    let mut lines = s.feed(b"a\r\n\n \nb\n").unwrap();
    lines.extend(s.finish());
    assert_eq!(lines, [&b"a"[..], b"", b" ", b"b"]);
}

#[test]
fn lines_cross_chunk_boundaries() {
    let mut s = LineSplitter::new(64);
    assert!(s.feed(b"{\"de").unwrap().is_empty());
    assert!(s.feed(b"lete\":{}}\r").unwrap().is_empty());
    assert_eq!(s.feed(b"\n{").unwrap(), [&b"{\"delete\":{}}"[..]]);
    assert_eq!(s.finish().as_deref(), Some(&b"{"[..]));
}

#[test]
fn line_too_long() {
    let too_long = Err(BulkError::LineTooLong { max: 4 });
    assert_eq!(split_all(b"abcd\nabcd\r\n", 4).unwrap().len(), 2);
    assert_eq!(split_all(b"abcde\n", 4), too_long);
    assert_eq!(split_all(b"abcde", 4), too_long);
    assert_eq!(split_all(b"     \n", 4), too_long);
    // Detected while the line is still incomplete, before its end arrives.
    let mut s = LineSplitter::new(4);
    assert_eq!(s.feed(b"abcd").unwrap(), Vec::<Bytes>::new());
    assert_eq!(s.feed(b"\r").unwrap(), Vec::<Bytes>::new());
    assert_eq!(s.feed(b"e"), too_long);
    let mut s = LineSplitter::new(4);
    assert_eq!(s.feed(b"abcde"), too_long);
    assert!(BulkError::LineTooLong { max: 4 }
        .to_string()
        .contains("4 bytes"));
}

#[test]
fn parses_full_metadata() {
    let a = parse_action(
        br#" {"update": {"_index":"logs","_id":"a\"b","routing":"r","retry_on_conflict":3,"_source":{"includes":["x"]}}} "#,
    )
    .unwrap();
    assert_eq!(a.op, BulkOp::Update);
    assert_eq!(a.index.as_deref(), Some("logs"));
    assert_eq!(a.id.as_deref(), Some("a\"b"));
    assert_eq!(a.routing.as_deref(), Some("r"));
    let rest: Vec<_> = a.rest.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    assert_eq!(
        rest,
        [
            ("retry_on_conflict", "3"),
            ("_source", r#"{"includes":["x"]}"#)
        ]
    );
    let d = parse_action(br#"{"delete":{}}"#).unwrap();
    assert_eq!(
        (d.op, d.index, d.id, d.routing),
        (BulkOp::Delete, None, None, None)
    );
    assert!(!d.op.has_source() && BulkOp::Create.has_source());
}

#[test]
fn malformed_action_lines() {
    assert!(reason("not json").contains("JSON object"));
    assert!(reason(r#"{"index":{}"#).contains("JSON object"));
    assert!(reason(r#"[{"index":{}}]"#).contains("JSON object"));
    assert!(reason(r#"{"index":{}} {}"#).contains("JSON object"));
    assert!(reason("{}").contains("exactly one"));
    let two = reason(r#"{"index":{},"field":1}"#);
    assert!(two.contains("`index`, `field`"), "{two}");
    assert!(reason(r#"{"index":[]}"#).contains("not an array"));
    assert!(reason(r#"{"index":{"_type":"_doc"}}"#).contains("_type"));
    assert_eq!(
        reason(r#"{"index":{"_id":1}}"#),
        "`_id` must be a string, not a number"
    );
    assert!(reason(r#"{"index":{"_index":null}}"#).contains("not null"));
    assert!(reason(r#"{"index":{"routing":["r"]}}"#).contains("`routing`"));
    assert!(reason(r#"{"index":{"routing":"a","routing":"b"}}"#).contains("more than once"));
    assert!(reason(r#"{"index":{"_id":"a","_id":"b"}}"#).contains("more than once"));
    assert!(parse_action(b"{\"index\":{\"_id\":\"\xff\"}}").is_err());
    let unknown = parse_action(br#"{"upsert":{"_id":"1"}}"#).unwrap_err();
    assert_eq!(
        unknown,
        BulkError::UnknownOperation {
            op: "upsert".into()
        }
    );
    assert!(unknown.to_string().contains("`upsert`"));
    assert!(malformed("x").to_string().contains("action/metadata line"));
}

#[test]
fn renders_with_escapes() {
    let line = render_action(
        BulkOp::Index,
        "l\"o\\g",
        None,
        None,
        &[
            ("pipeline".into(), raw(r#""p""#)),
            ("a\nb".into(), raw("1")),
        ],
    );
    assert_eq!(
        String::from_utf8(line).unwrap(),
        r#"{"index":{"_index":"l\"o\\g","pipeline":"p","a\nb":1}}"#
    );
    let mut out = Vec::new();
    push_json_str(&mut out, "\u{0}\u{1f}\u{8}\u{c}é\u{7f}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\"\\u0000\\u001f\\b\\fé\u{7f}\""
    );
}

#[test]
fn item_error_shape() {
    let e = item_error(
        BulkOp::Create,
        Some("logs"),
        None,
        403,
        "security_exception",
        "tenant \"x\" may not write",
    );
    let v: Value = serde_json::from_slice(&e).unwrap();
    assert_eq!(
        v,
        json!({"create":{"_index":"logs","_id":null,"status":403,
            "error":{"type":"security_exception","reason":"tenant \"x\" may not write"}}})
    );
    assert_eq!(item_status(&e), Some(403));
    let e = item_error(BulkOp::Delete, None, Some("1"), 400, "t", "r");
    let v: Value = serde_json::from_slice(&e).unwrap();
    assert_eq!(v["delete"]["_index"], Value::Null);
    assert_eq!(v["delete"]["_id"], "1");
    let err = BulkError::MissingSource;
    assert_eq!(
        (err.status(), err.error_type()),
        (400, "action_request_validation_exception")
    );
}

#[test]
fn item_status_and_errors_flag() {
    assert_eq!(
        item_status(br#"{"index":{"_id":"1","status":201}}"#),
        Some(201)
    );
    assert_eq!(item_status(br#"{"index":{"_id":"1"}}"#), None);
    assert_eq!(item_status(br#"{"index":{"status":"x"}}"#), None);
    assert_eq!(item_status(b"nope"), None);
    let ok = br#"{"index":{"status":201}}"#.to_vec();
    let conflict = br#"{"index":{"status":409}}"#.to_vec();
    let err_member = br#"{"update":{"status":200,"error":{"type":"x"}}}"#.to_vec();
    let flag = |items: &[Vec<u8>]| {
        let v: Value = serde_json::from_slice(&assemble_response(1, items)).unwrap();
        v["errors"].as_bool().unwrap()
    };
    assert!(!flag(&[]));
    assert!(!flag(&[ok.clone(), ok.clone()]));
    assert!(flag(&[ok.clone(), conflict]));
    assert!(flag(&[err_member, ok]));
    assert_eq!(
        assemble_response(0, &[]),
        br#"{"took":0,"errors":false,"items":[]}"#
    );
}

#[test]
fn split_response_shapes() {
    let r = split_response(
        b"{\"took\" : 2,\n \"errors\" : true, \"items\" : [ {\"index\":{\"status\":409}} ,{\"index\":{\"status\":201}}\n] }",
    )
    .unwrap();
    assert!(r.errors);
    assert_eq!(r.items.len(), 2);
    assert_eq!(r.items[0], br#"{"index":{"status":409}}"#);
    // Without `errors`, it is computed.
    let r = split_response(br#"{"items":[{"index":{"status":500}}]}"#).unwrap();
    assert!(r.errors);
    let r = split_response(br#"{"items":[]}"#).unwrap();
    assert_eq!((r.errors, r.items.len()), (false, 0));
    for bad in [
        &br#"{"error":{"type":"x"},"status":429}"#[..],
        br#"{"errors":"no","items":[]}"#,
        br#"{"items":[1]}"#,
        br#"{"items":{}}"#,
        br#"{"items":[],"items":[]}"#,
        br#"[]"#,
        br#"{"items":[{"a":1}"#,
    ] {
        let err = split_response(bad).unwrap_err();
        assert!(
            matches!(err, BulkError::MalformedResponse { .. }),
            "{err:?}"
        );
        assert_eq!(err.status(), 502);
    }
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b" ".to_vec()),
        Just(br#"{"index":{"_id":"1"}}"#.to_vec()),
        "[a-z{}\":é]{1,12}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn op() -> impl Strategy<Value = BulkOp> {
    proptest::sample::select(BulkOp::ALL.to_vec())
}

const RESERVED: [&str; 5] = ["_index", "_id", "routing", "_routing", "_type"];

/// A random item, and whether it failed.
fn item() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let status = proptest::sample::select(vec![200u16, 201, 299, 300, 404, 409, 429, 500]);
    (op(), any::<String>(), any::<String>(), status, any::<bool>()).prop_map(
        |(op, index, id, status, with_error)| {
            if with_error {
                (item_error(op, Some(&index), Some(&id), status, "x_exception", &id), true)
            } else {
                let item = json!({ op.as_str(): {"_index": index, "_id": id, "_version": 1, "status": status} });
                (serde_json::to_vec(&item).unwrap(), status >= 300)
            }
        },
    )
}

proptest! {
    #[test]
    fn chunking_never_changes_lines(
        body in body(),
        cuts in proptest::collection::vec(0usize..400, 0..8),
        max in prop_oneof![Just(usize::MAX), 0usize..40],
    ) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let whole = split_all(&body, max);
        prop_assert_eq!(split_chunked(&body, &cuts, max), whole.clone());
        let bytewise: Vec<usize> = (0..body.len()).collect();
        prop_assert_eq!(split_chunked(&body, &bytewise, max), whole.clone());
        if max == usize::MAX {
            let naive: Vec<Vec<u8>> = body
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .filter(|l| !is_blank(l))
                .collect();
            let got: Vec<Vec<u8>> = whole.unwrap().iter().map(|l| l.to_vec()).collect();
            prop_assert_eq!(got, naive);
        }
    }

    #[test]
    fn render_then_parse_round_trips(
        op in op(),
        index in any::<String>(),
        id in proptest::option::of(any::<String>()),
        routing in proptest::option::of(".*[\"\\\\].*"),
        rest in proptest::collection::vec((any::<String>(), json_value()), 0..5),
    ) {
        let rest: Vec<(String, Box<RawValue>)> = rest
            .into_iter()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .map(|(k, v)| (k, serde_json::value::to_raw_value(&v).unwrap()))
            .collect();
        let line = render_action(op, &index, id.as_deref(), routing.as_deref(), &rest);
        prop_assert!(!line.contains(&b'\n'));
        let parsed = parse_action(&line).unwrap();
        let expected = ActionLine { op, index: Some(index), id, routing, rest };
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn split_then_reassemble_keeps_order_and_count(
        items in proptest::collection::vec(item(), 0..24),
        targets in proptest::collection::vec(0usize..4, 24),
        spaced in any::<bool>(),
    ) {
        // Group per target, remembering each item's position.
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); 4];
        for i in 0..items.len() {
            groups[targets[i]].push(i);
        }
        let mut placed: Vec<Option<Vec<u8>>> = vec![None; items.len()];
        for positions in groups.iter().filter(|g| !g.is_empty()) {
            let sep: &[u8] = if spaced { b" ,\n " } else { b"," };
            let joined = positions.iter().map(|&i| items[i].0.clone()).collect::<Vec<_>>().join(sep);
            let upstream = [&br#"{"took":1,"errors":false,"items":["#[..], &joined, b"]}"].concat();
            let split = split_response(&upstream).unwrap();
            prop_assert_eq!(split.items.len(), positions.len());
            for (&i, item) in positions.iter().zip(split.items) {
                prop_assert!(placed[i].replace(item.to_vec()).is_none());
            }
        }
        let placed: Vec<Vec<u8>> = placed.into_iter().map(Option::unwrap).collect();
        let out = assemble_response(7, &placed);
        let back = split_response(&out).unwrap();
        let originals: Vec<Vec<u8>> = items.iter().map(|(i, _)| i.clone()).collect();
        prop_assert_eq!(&back.items, &originals);
        prop_assert_eq!(back.errors, items.iter().any(|(_, failed)| *failed));
        let v: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(v["took"].as_u64(), Some(7));
        prop_assert_eq!(v["items"].as_array().map(Vec::len), Some(items.len()));
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_action(&bytes);
        let _ = split_response(&bytes);
        let _ = item_status(&bytes);
    }
}

fn canonical(line: &str) -> Result<String, String> {
    let mut a = parse_action(line.as_bytes()).map_err(|e| e.to_string())?;
    super::canonical_metadata(&mut a).map_err(|e| format!("{}: {}", e.kind, e.reason))?;
    Ok(String::from_utf8(render_action(
        a.op,
        "i",
        a.id.as_deref(),
        a.routing.as_deref(),
        &a.rest,
    ))
    .unwrap())
}

#[test]
fn metadata_is_forwarded_in_canonical_form() {
    assert_eq!(
        canonical(r#"{"index":{"_id":"1","version":"7","version_type":"external_gt"}}"#).unwrap(),
        r#"{"index":{"_index":"i","_id":"1","version":7,"version_type":"external"}}"#
    );
    assert_eq!(
        canonical(r#"{"index":{"_id":"1","version":5.9,"version_type":"external"}}"#).unwrap(),
        r#"{"index":{"_index":"i","_id":"1","version":5,"version_type":"external"}}"#
    );
    // op_type matters only as `create` on an index item; null is skipped.
    assert_eq!(
        canonical(r#"{"index":{"_id":"1","op_type":5,"require_alias":"true","version":null}}"#)
            .unwrap(),
        r#"{"index":{"_index":"i","_id":"1","require_alias":true}}"#
    );
    assert_eq!(
        canonical(r#"{"index":{"_id":"1","op_type":"create"}}"#).unwrap(),
        r#"{"index":{"_index":"i","_id":"1","op_type":"create"}}"#
    );
    assert_eq!(
        canonical(r#"{"update":{"_id":"1","retry_on_conflict":"2","_source":{"include":"a"}}}"#)
            .unwrap(),
        r#"{"update":{"_index":"i","_id":"1","retry_on_conflict":2,"_source":{"includes":["a"],"excludes":[]}}}"#
    );
    assert_eq!(
        canonical(r#"{"delete":{"_id":"1","if_seq_no":"3","if_primary_term":1}}"#).unwrap(),
        r#"{"delete":{"_index":"i","_id":"1","if_seq_no":3,"if_primary_term":1}}"#
    );
}

#[test]
fn metadata_opensearch_refuses_is_refused_with_its_message() {
    for (line, expect) in [
        (
            r#"{"index":{"_id":"1","colour":"red"}}"#,
            "unknown parameter [colour]",
        ),
        (
            r#"{"index":{"_id":"1","version":"abc"}}"#,
            "For input string: \"abc\"",
        ),
        (
            r#"{"index":{"_id":"1","version":" 5","version_type":"external"}}"#,
            "For input string",
        ),
        (r#"{"index":{"_id":"1","version":true}}"#, "not a boolean"),
        (
            r#"{"index":{"_id":"1","version":1e30,"version_type":"external"}}"#,
            "must be an integer",
        ),
        (
            r#"{"index":{"_id":"1","version":"9007199254740993.0","version_type":"external"}}"#,
            "must be an integer",
        ),
        (
            r#"{"index":{"_id":"1","version":99999999999999999999,"version_type":"external"}}"#,
            "out of range",
        ),
        (r#"{"index":{"_version":"1"}}"#, "unknown parameter"),
        (
            r#"{"index":{"version":5,"version_type":"external"}}"#,
            "an id must be provided if version type or value are set",
        ),
        (r#"{"delete":{}}"#, "id is missing"),
        (
            r#"{"index":{"_id":"1","_routing":"a"}}"#,
            "unknown parameter [_routing]",
        ),
        (
            r#"{"index":{"_id":"1","version":9007199254740993.5,"version_type":"external"}}"#,
            "must be an integer",
        ),
        (
            r#"{"index":{"_id":"1","retry_on_conflict":99999999999}}"#,
            "out of range",
        ),
        (
            r#"{"index":{"_id":"1","version":{"a":1}}}"#,
            "expected a simple value for field [version]",
        ),
        (
            r#"{"index":{"_id":"1","version_type":"EXTERNAL","version":1}}"#,
            "No version type match [EXTERNAL]",
        ),
        (
            r#"{"index":{"_id":"1","require_alias":"yes"}}"#,
            "only [true] or [false]",
        ),
        (
            r#"{"index":{"_id":"1","_source":["a"]}}"#,
            "VALUE_BOOLEAN, START_OBJECT",
        ),
        (
            r#"{"index":{"_id":"1","_source":{"bogus":"a"}}}"#,
            "Unknown key",
        ),
        (
            r#"{"index":{"_id":"1","_source":{"includes":[1]}}}"#,
            "strings or arrays of strings",
        ),
        (
            r#"{"index":{"_id":"1","if_seq_no":1}}"#,
            "ifSeqNo is set, but primary term is [0]",
        ),
        (
            r#"{"delete":{"_id":"1","if_primary_term":2}}"#,
            "ifSeqNo is unassigned, but primary term is [2]",
        ),
        (
            r#"{"index":{"_id":"1","if_seq_no":-5,"if_primary_term":1}}"#,
            "sequence numbers must be non negative",
        ),
        (
            r#"{"index":{"_id":"1","if_seq_no":1,"if_primary_term":-1}}"#,
            "primary term must be non negative",
        ),
        (
            r#"{"index":{"_id":"1","version":0}}"#,
            "1: illegal version value [0] for version type [INTERNAL];2: internal versioning",
        ),
        (
            r#"{"delete":{"_id":"1","version_type":"external"}}"#,
            "illegal version value [-3] for version type [EXTERNAL]",
        ),
        (
            r#"{"index":{"_id":"1","if_seq_no":0,"if_primary_term":1,"version":2,"version_type":"external"}}"#,
            "compare and write operations can not use versioning",
        ),
        (
            r#"{"create":{"_id":"1","version":5}}"#,
            "create operations do not support explicit versions",
        ),
        (
            r#"{"index":{"_id":"1","op_type":"create","if_seq_no":1,"if_primary_term":1}}"#,
            "create operations do not support compare and set",
        ),
        (
            r#"{"update":{"_id":"1","version":3}}"#,
            "Update requests do not support versioning",
        ),
        (
            r#"{"update":{"_id":"1","if_seq_no":1,"if_primary_term":1,"retry_on_conflict":2}}"#,
            "compare and write operations can not be retried",
        ),
        (
            r#"{"index":{"_id":"1","pipeline":"p","pipeline":"q"}}"#,
            "Duplicate field 'pipeline'",
        ),
    ] {
        let got = canonical(line).expect_err(line);
        assert!(got.contains(expect), "{line}: {got}");
    }
    // What OpenSearch accepts is accepted.
    for line in [
        r#"{"create":{"_id":"1","version":-4}}"#,
        r#"{"index":{"_id":"1","version":-3}}"#,
        r#"{"index":{"_id":"1","version":0,"version_type":"external_gte"}}"#,
        r#"{"index":{"_id":"1","if_seq_no":-2,"if_primary_term":0}}"#,
        r#"{"update":{"_id":"1","version_type":"internal","retry_on_conflict":-1}}"#,
        r#"{"index":{"_id":"1","_source":"a","op_type":null,"version_type":null}}"#,
        r#"{"index":{"_id":"1","foo":null}}"#,
        r#"{"index":{"if_seq_no":1,"if_primary_term":1}}"#,
    ] {
        canonical(line).expect(line);
    }
}

#[test]
fn an_update_body_with_a_number_opensearch_cannot_read_is_refused() {
    let none: Vec<(String, Box<serde_json::value::RawValue>)> = Vec::new();
    let number = |digits: usize| format!("0.{}1", "0".repeat(digits - 2));
    let body = |n: &str| {
        format!(
            r#"{{"doc":{{"t":"{}","v":{n},"w":[1e5,-2]}}}}"#,
            "9".repeat(5000)
        )
    };
    let e = check_update_body(&none, body(&number(1001)).as_bytes()).unwrap_err();
    assert!(e.reason.contains("Number value length (1001)"), "{e:?}");
    assert!(check_update_body(&none, body(&number(1000)).as_bytes()).is_ok());
    // Digits in a string, and an exponent's, are not a number's length.
    assert!(check_update_body(&none, body(&format!("1e{}", "0".repeat(1200))).as_bytes()).is_ok());
}

#[test]
fn update_bodies_opensearch_refuses_are_refused_with_its_message() {
    let none: Vec<(String, Box<serde_json::value::RawValue>)> = Vec::new();
    let cas = parse_action(br#"{"update":{"_id":"1","if_seq_no":1,"if_primary_term":1}}"#)
        .unwrap()
        .rest;
    for (meta, body, expect) in [
        (&none, "{}", "script or doc is missing"),
        (&none, r#"{"upsert":{}}"#, "script or doc is missing"),
        (&none, r#"{"doc":{},"lang":"x"}"#, "unknown field [lang]"),
        (
            &none,
            r#"{"doc":5}"#,
            "doc doesn't support values of type: VALUE_NUMBER",
        ),
        (&none, r#"{"doc":null}"#, "VALUE_NULL"),
        (&none, r#"{"doc":{},"upsert":[]}"#, "upsert doesn't support"),
        (&none, "5", "Expected START_OBJECT"),
        (&none, "[]", "Expected START_OBJECT"),
        (
            &none,
            r#"{"doc":{},"doc_as_upsert":"x"}"#,
            "doc_as_upsert doesn't support",
        ),
        (
            &none,
            r#"{"doc":{},"detect_noop":1}"#,
            "detect_noop doesn't support",
        ),
        (
            &none,
            r#"{"doc":{},"_source":5}"#,
            "_source doesn't support",
        ),
        (
            &none,
            r#"{"doc":{},"script":"x"}"#,
            "can't provide both script and doc",
        ),
        (
            &none,
            r#"{"script":"x","doc_as_upsert":true}"#,
            "doc must be specified if doc_as_upsert is enabled",
        ),
        (
            &none,
            r#"{"script":{"source":"x","bogus":1}}"#,
            "unknown field [bogus]",
        ),
        (&none, r#"{"script":5}"#, "must be a string or an object"),
        (
            &none,
            r#"{"script":{"id":"s","lang":"painless"}}"#,
            "for a stored script",
        ),
        (
            &none,
            r#"{"script":{"id":"s","options":{"a":"b"}}}"#,
            "for a stored script",
        ),
        (
            &none,
            r#"{"script":{"source":"x","options":{"foo":"x"}}}"#,
            "illegal compiler option [foo]",
        ),
        (
            &none,
            r#"{"script":{"source":"x","lang":5}}"#,
            "[lang] doesn't support",
        ),
        (
            &none,
            r#"{"script":{"lang":"painless"}}"#,
            "either [source]",
        ),
        (&none, r#"{"doc":{},"if_seq_no":1}"#, "in the action line"),
        (
            &cas,
            r#"{"doc":{},"upsert":{}}"#,
            "upsert requests don't support",
        ),
        (
            &cas,
            r#"{"doc":{},"doc_as_upsert":true}"#,
            "can not be used with upsert",
        ),
    ] {
        let got = super::check_update_body(meta, body.as_bytes()).expect_err(body);
        assert!(got.reason.contains(expect), "{body}: {}", got.reason);
    }
    for (meta, body) in [
        (
            &none,
            r#"{"doc":{"f":1},"doc_as_upsert":"true","detect_noop":false}"#,
        ),
        (&none, r#"{"doc":{"f":1},"_source":["f"]}"#),
        (&none, r#"{"doc":{"f":1},"_source":{"includes":"f"}}"#),
        (&none, r#"{"script":"ctx._source.f=2","upsert":{"f":1}}"#),
        (
            &none,
            r#"{"script":{"source":"x","lang":"painless","params":{}},"scripted_upsert":true,"upsert":{}}"#,
        ),
        (&none, r#"{"script":{"id":"stored"}}"#),
        (&none, r#"{"script":{"id":"stored","options":{}}}"#),
        (
            &none,
            r#"{"script":{"source":"x","options":{"content_type":"text/plain"}}}"#,
        ),
        (&cas, r#"{"doc":{"f":1}}"#),
    ] {
        super::check_update_body(meta, body.as_bytes()).expect(body);
    }
}
