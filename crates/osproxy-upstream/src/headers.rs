//! Header hygiene between hops: hop-by-hop headers (RFC 9110 §7.6.1) are
//! connection-scoped and never relayed; everything else is.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that only make sense on one connection.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any the `Connection` header names,
/// and `Upgrade` (this proxy does not tunnel protocol upgrades).
///
/// ```
/// use http::HeaderMap;
/// let mut h = HeaderMap::new();
/// h.insert("connection", "close, x-private".parse().unwrap());
/// h.insert("x-private", "1".parse().unwrap());
/// h.insert("content-type", "application/json".parse().unwrap());
/// osproxy_upstream::headers::strip_hop_by_hop(&mut h);
/// assert_eq!(h.len(), 1);
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop too.
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in HOP_BY_HOP.iter() {
        headers.remove(h);
    }
    headers.remove(header::UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_standard() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            http::HeaderValue::from_static("keep-alive, X-Foo"),
        );
        h.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
        h.insert("x-foo", http::HeaderValue::from_static("1"));
        h.insert(
            "transfer-encoding",
            http::HeaderValue::from_static("chunked"),
        );
        h.insert("te", http::HeaderValue::from_static("trailers"));
        h.insert("authorization", http::HeaderValue::from_static("Basic x"));
        h.insert("x-opaque-id", http::HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["authorization", "x-opaque-id"]);
    }

    #[test]
    fn single_token_connection() {
        let mut h = HeaderMap::new();
        h.insert("connection", http::HeaderValue::from_static("x-one"));
        h.insert("x-one", http::HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
