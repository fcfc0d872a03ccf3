//! The per-tenant limits document and its one strict decoder, for the
//! admin API and the etcd watcher alike: an unknown key, a rate that is not
//! above zero or a bad partition id refuses the whole document, and the
//! previous limits stay.

use osproxy_config::Limits;

/// Decodes and checks a published limits document; the message names the
/// key at fault (`partitions.acme.reads_per_second: ...`).
pub fn decode(bytes: &[u8]) -> Result<Limits, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let limits: Limits = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    de.end()
        .map_err(|e| format!("trailing data after the document: {e}"))?;
    if let Some((key, message)) = limits.problems().into_iter().next() {
        return Err(format!("{key}: {message}"));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoder() {
        let l = decode(br#"{"default":{"writes_per_second":10},"partitions":{"acme":{"bytes_per_second":"1kb","concurrent_requests":2}}}"#).unwrap();
        assert_eq!(
            l.of("acme").unwrap().bytes_per_second.unwrap().bytes(),
            1024
        );
        assert_eq!(l.of("other").unwrap().writes_per_second, Some(10.0));
        for (bad, names) in [
            (r#"{"default":{"reads":1}}"#, "reads"),
            (
                r#"{"partitions":{"acme":{"reads_per_second":0}}}"#,
                "partitions.acme.reads_per_second",
            ),
            (r#"{"partitions":{"a/b":{}}}"#, "partitions.a/b"),
            (
                r#"{"default":{"bytes_per_second":"lots"}}"#,
                "default.bytes_per_second",
            ),
            (r#"{} x"#, "trailing"),
        ] {
            let err = decode(bad.as_bytes()).unwrap_err();
            assert!(err.contains(names), "{bad}: {err}");
        }
    }
}
