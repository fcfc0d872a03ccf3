//! Base64 (RFC 4648): the standard alphabet with padding (HTTP basic auth)
//! and the URL-safe alphabet without padding (cursor ids).

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(input: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> shift) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard alphabet, padded.
///
/// ```
/// assert_eq!(osproxy_core::b64::encode(b"foob"), "Zm9vYg==");
/// ```
pub fn encode(input: &[u8]) -> String {
    encode_with(input, STANDARD, true)
}

/// URL-safe alphabet, unpadded.
///
/// ```
/// let s = osproxy_core::b64::encode_url(&[0xfb, 0xff]);
/// assert_eq!(s, "-_8");
/// assert_eq!(osproxy_core::b64::decode_url(&s), Some(vec![0xfb, 0xff]));
/// ```
pub fn encode_url(input: &[u8]) -> String {
    encode_with(input, URL_SAFE, false)
}

/// Decodes the URL-safe, unpadded form; `None` for anything else.
pub fn decode_url(input: &str) -> Option<Vec<u8>> {
    let value = |c: u8| URL_SAFE.iter().position(|&a| a == c).map(|p| p as u32);
    let bytes = input.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    // Reject non-canonical encodings (stray low bits), so one id has one form.
    if encode_url(&out) != input {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(i.as_bytes()), o);
        }
    }

    #[test]
    fn url_round_trip_and_rejections() {
        for len in 0..40u8 {
            let data: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(250))
                .collect();
            assert_eq!(decode_url(&encode_url(&data)), Some(data));
        }
        assert_eq!(decode_url("a"), None);
        assert_eq!(decode_url("ab=="), None);
        assert_eq!(decode_url("a+b/"), None);
        assert_eq!(decode_url("Zh"), None, "non-canonical trailing bits");
    }
}
