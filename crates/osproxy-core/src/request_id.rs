//! Request ids: the client's `x-request-id` when it is well formed, otherwise
//! a fleet-unique id minted here (a random per-instance prefix and a counter).

use std::sync::atomic::{AtomicU64, Ordering};

/// Longest client-supplied request id accepted as is.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client-supplied id may be echoed and logged: 1 to 128 bytes of
/// `[A-Za-z0-9._:-]`, so it can never carry header or log injection.
///
/// ```
/// use osproxy_core::request_id::is_well_formed;
/// assert!(is_well_formed(b"req-42.a:b_c"));
/// assert!(!is_well_formed(b"has space"));
/// assert!(!is_well_formed(b""));
/// ```
pub fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Mints ids unique across a fleet: 64 random bits chosen at start-up
/// (collision odds across a fleet are negligible) followed by a counter.
#[derive(Debug)]
pub struct RequestIdMinter {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIdMinter {
    /// A minter with the given instance prefix (pass random bits).
    pub fn new(prefix: u64) -> Self {
        RequestIdMinter {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// The next id: 32 lower-case hex digits.
    pub fn mint(&self) -> String {
        self.mint_bytes().iter().map(|&b| char::from(b)).collect()
    }

    /// The next id as bytes (no formatting machinery: minted per request).
    pub fn mint_bytes(&self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            let word = if i < 16 { self.prefix } else { n };
            let shift = 60 - 4 * (i % 16);
            *slot = HEX[((word >> shift) & 0xf) as usize];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_distinct_and_well_formed() {
        let m = RequestIdMinter::new(0xdead_beef);
        let a = m.mint();
        let b = m.mint();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_well_formed(a.as_bytes()));
        assert_eq!(a, format!("{:016x}{:016x}", 0xdead_beef_u64, 0));
        assert_eq!(b, format!("{:016x}{:016x}", 0xdead_beef_u64, 1));
        let c = RequestIdMinter::new(u64::MAX - 0x0123_4567_89ab);
        assert_eq!(
            c.mint(),
            format!("{:016x}{:016x}", u64::MAX - 0x0123_4567_89ab, 0)
        );
    }

    #[test]
    fn rejects_injection() {
        assert!(!is_well_formed(b"a\r\nx-evil: 1"));
        assert!(!is_well_formed(&[b'a'; 129]));
        assert!(is_well_formed(&[b'a'; 128]));
    }
}
