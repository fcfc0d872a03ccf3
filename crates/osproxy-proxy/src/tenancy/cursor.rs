//! Scroll and PIT ids bound to their creator: every id osproxy hands out is
//! `osp1.<payload>.<mac>`, the payload naming the kind, cluster, partition
//! and logical index that opened it and the upstream id, the MAC an
//! HMAC-SHA256 with the fleet key. A tampered id, an id signed with another
//! key, or one used by another partition is refused before any dispatch.

use osproxy_core::{b64, ErrorCode, ProxyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "osp1.";

/// The fleet's cursor-signing key.
#[derive(Clone)]
pub struct CursorKey {
    key: [u8; 64],
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// A key from secret bytes (hashed when longer than a SHA-256 block).
    pub fn new(secret: &[u8]) -> Self {
        let mut key = [0u8; 64];
        if secret.len() > 64 {
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        CursorKey { key }
    }

    /// Whether `mac_b64` (base64url) is this key's MAC of `msg`, compared
    /// in constant time.
    pub fn verify(&self, msg: &[u8], mac_b64: &str) -> bool {
        let expected = self.mac(msg);
        let Some(given) = b64::decode_url(mac_b64) else {
            return false;
        };
        let mut diff = u8::from(given.len() != expected.len());
        for (a, b) in given.iter().zip(expected.iter()) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    /// The base64url HMAC of `msg` (for signing debug headers in tools).
    pub fn sign(&self, msg: &[u8]) -> String {
        b64::encode_url(&self.mac(msg))
    }

    /// HMAC-SHA256 (RFC 2104).
    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut inner = Sha256::new();
        inner.update(self.key.map(|b| b ^ 0x36));
        inner.update(msg);
        let mut outer = Sha256::new();
        outer.update(self.key.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// What a cursor is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// `scroll` or `pit`.
    #[serde(rename = "k")]
    pub kind: String,
    /// Cluster id.
    #[serde(rename = "c")]
    pub cluster: String,
    /// Partition.
    #[serde(rename = "p")]
    pub partition: String,
    /// Logical index.
    #[serde(rename = "i")]
    pub index: String,
    /// The upstream's own id.
    #[serde(rename = "u")]
    pub upstream: String,
    /// The physical index it was opened on (absent in ids signed before
    /// cursors were bound to it: such ids are refused as stale).
    #[serde(rename = "x", default)]
    pub physical: String,
    /// The placement kind it was opened in (`shared`, `index`, `cluster`).
    #[serde(rename = "s", default)]
    pub placement: String,
    /// The epoch of the placement entry it was opened by.
    #[serde(rename = "e", default)]
    pub epoch: u64,
}

/// Signs a cursor into the id clients see.
pub fn wrap(key: &CursorKey, c: &Cursor) -> String {
    let payload = b64::encode_url(serde_json::to_string(c).unwrap_or_default().as_bytes());
    let signed = format!("{PREFIX}{payload}");
    let mac = b64::encode_url(&key.mac(signed.as_bytes()));
    format!("{signed}.{mac}")
}

/// Checks an id's signature and kind and returns what it is bound to.
pub fn unwrap(key: &CursorKey, kind: &str, id: &str) -> Result<Cursor, ProxyError> {
    let refused =
        |why: &str| ProxyError::new(ErrorCode::BadRequest, format!("invalid {kind} id: {why}"));
    let rest = id
        .strip_prefix(PREFIX)
        .ok_or_else(|| refused("not issued by osproxy"))?;
    let (payload, mac) = rest.rsplit_once('.').ok_or_else(|| refused("malformed"))?;
    let expected = key.mac(format!("{PREFIX}{payload}").as_bytes());
    let given = b64::decode_url(mac).ok_or_else(|| refused("malformed signature"))?;
    let mut diff = u8::from(given.len() != expected.len());
    for (a, b) in given.iter().zip(expected.iter()) {
        diff |= a ^ b;
    }
    if std::hint::black_box(diff) != 0 {
        return Err(ProxyError::new(
            ErrorCode::PartitionForbidden,
            format!(
                "the {kind} id's signature does not verify (tampered, or signed with another key)"
            ),
        ));
    }
    let bytes = b64::decode_url(payload).ok_or_else(|| refused("malformed payload"))?;
    let cursor: Cursor =
        serde_json::from_slice(&bytes).map_err(|_| refused("malformed payload"))?;
    if cursor.kind != kind {
        return Err(refused(&format!("it is a {} id", cursor.kind)));
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let key = CursorKey::new(b"Jefe");
        assert_eq!(
            hex(&key.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn cursor() -> Cursor {
        Cursor {
            kind: "scroll".into(),
            cluster: "main".into(),
            partition: "acme".into(),
            index: "orders".into(),
            upstream: "FGluY2x1ZGU=".into(),
            physical: "orders-shared".into(),
            placement: "shared".into(),
            epoch: 7,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let key = CursorKey::new(b"0123456789abcdef0123456789abcdef");
        let id = wrap(&key, &cursor());
        assert_eq!(unwrap(&key, "scroll", &id).unwrap(), cursor());
        assert_eq!(
            unwrap(&key, "pit", &id).unwrap_err().code,
            ErrorCode::BadRequest
        );
        let other = CursorKey::new(b"another key, another fleet......");
        assert_eq!(
            unwrap(&other, "scroll", &id).unwrap_err().code,
            ErrorCode::PartitionForbidden
        );
        // Flip a payload character: the signature no longer verifies.
        let mut tampered = id.clone().into_bytes();
        tampered[8] = if tampered[8] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(unwrap(&key, "scroll", &tampered).is_err());
        assert!(unwrap(&key, "scroll", "FGluY2x1ZGU=").is_err());
        assert!(unwrap(&key, "scroll", "osp1.x").is_err());
    }
}
