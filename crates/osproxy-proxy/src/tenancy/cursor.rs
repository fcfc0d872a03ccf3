//! Scroll and PIT ids bound to their creator: every id osproxy hands out is
//! `osp2.<sealed>`, the kind, cluster, partition, logical and physical
//! index, placement and epoch that opened it and the upstream id, sealed
//! with AES-256-GCM under a key derived from the fleet key (a random nonce
//! each). Sealed, not only signed: the upstream id carries the physical
//! index's uuid and the payload names the shared index, which a tenant must
//! not learn. A tampered id, one sealed with another key, or one used by
//! another partition is refused before any dispatch. Ids of the earlier
//! form, `osp1.<payload>.<mac>` (readable, HMAC-SHA256-signed), are still
//! accepted, so that ids handed out before an upgrade keep working.

use osproxy_core::{b64, ErrorCode, ProxyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "osp1.";
const SEALED: &str = "osp2.";
const NONCE: usize = 12;

/// The fleet's cursor-signing key.
#[derive(Clone)]
pub struct CursorKey {
    key: [u8; 64],
    seal: std::sync::Arc<aws_lc_rs::aead::LessSafeKey>,
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
        // Its own key for sealing, derived from the signing key.
        let mut derive = Sha256::new();
        derive.update(b"osproxy cursor seal v2");
        derive.update(key);
        let sealing: [u8; 32] = derive.finalize().into();
        let seal = match aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &sealing) {
            Ok(k) => aws_lc_rs::aead::LessSafeKey::new(k),
            // A 32-byte key for AES-256-GCM is always accepted.
            Err(_) => unreachable_key(),
        };
        CursorKey {
            key,
            seal: std::sync::Arc::new(seal),
        }
    }

    /// `plain` sealed: the nonce, then the ciphertext and its tag.
    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NONCE + plain.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(SEALED.as_bytes()),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// What [`Self::seal`] sealed, or `None` when it does not open (tampered,
    /// or sealed with another key).
    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(NONCE)?;
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .seal
            .open_in_place(
                nonce,
                aws_lc_rs::aead::Aad::from(SEALED.as_bytes()),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
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

/// A key AES-256-GCM refused: cannot happen for 32 bytes; a key that
/// seals nothing would be worse than stopping.
#[allow(clippy::panic)]
fn unreachable_key() -> aws_lc_rs::aead::LessSafeKey {
    panic!("AES-256-GCM refused a 32-byte key")
}

/// Seals a cursor into the id clients see. Should the system's randomness
/// fail (no nonce can be drawn), the id is one that opens nothing and
/// tells nothing (`osp2.!`, refused as malformed when used): never the
/// readable signed form (found by review).
pub fn wrap(key: &CursorKey, c: &Cursor) -> String {
    let plain = serde_json::to_vec(c).unwrap_or_default();
    match key.seal(&plain) {
        Some(sealed) => format!("{SEALED}{}", b64::encode_url(&sealed)),
        None => {
            tracing::error!("a cursor id could not be sealed (no randomness): handed out unusable");
            format!("{SEALED}!")
        }
    }
}

/// Checks an id's signature and kind and returns what it is bound to.
pub fn unwrap(key: &CursorKey, kind: &str, id: &str) -> Result<Cursor, ProxyError> {
    let refused =
        |why: &str| ProxyError::new(ErrorCode::BadRequest, format!("invalid {kind} id: {why}"));
    if let Some(sealed) = id.strip_prefix(SEALED) {
        let bytes = b64::decode_url(sealed).ok_or_else(|| refused("malformed"))?;
        let plain = key.open(&bytes).ok_or_else(|| {
            ProxyError::new(
                ErrorCode::PartitionForbidden,
                format!("the {kind} id does not verify (tampered, or issued with another key)"),
            )
        })?;
        return bound(kind, &plain, refused);
    }
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
    bound(kind, &bytes, refused)
}

/// The cursor a verified payload names, if it is of `kind`.
fn bound(
    kind: &str,
    payload: &[u8],
    refused: impl Fn(&str) -> ProxyError,
) -> Result<Cursor, ProxyError> {
    let cursor: Cursor =
        serde_json::from_slice(payload).map_err(|_| refused("malformed payload"))?;
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
        assert!(unwrap(&key, "scroll", "osp2.x").is_err());
        assert!(unwrap(&key, "scroll", "osp2.").is_err());
        // What `wrap` hands out when it cannot seal.
        assert_eq!(
            unwrap(&key, "scroll", "osp2.!").unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    /// Found by review: the signed payload was readable base64 JSON, and
    /// named the shared index and the upstream id (whose PIT form carries
    /// the index's uuid). Sealed ids show none of it, differ each time,
    /// and an id of the earlier signed form still opens.
    #[test]
    fn ids_are_sealed_and_earlier_signed_ids_still_open() {
        let key = CursorKey::new(b"0123456789abcdef0123456789abcdef");
        let a = wrap(&key, &cursor());
        let b = wrap(&key, &cursor());
        assert!(a.starts_with("osp2.") && a != b, "{a}");
        let raw = b64::decode_url(a.trim_start_matches("osp2.")).unwrap();
        for secret in ["orders-shared", "FGluY2x1ZGU", "acme", "main"] {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} readable in the id"
            );
        }
        // Each byte of the sealed part matters.
        let mut tampered = raw.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        let tampered = format!("osp2.{}", b64::encode_url(&tampered));
        assert_eq!(
            unwrap(&key, "scroll", &tampered).unwrap_err().code,
            ErrorCode::PartitionForbidden
        );
        let payload = b64::encode_url(serde_json::to_string(&cursor()).unwrap().as_bytes());
        let signed = format!("osp1.{payload}");
        let mac = key.sign(signed.as_bytes());
        assert_eq!(
            unwrap(&key, "scroll", &format!("{signed}.{mac}")).unwrap(),
            cursor()
        );
    }
}
