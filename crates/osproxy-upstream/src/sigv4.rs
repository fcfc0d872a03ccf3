//! AWS Signature Version 4, for clusters behind Amazon OpenSearch Service
//! (`es`) or OpenSearch Serverless (`aoss`): every request osproxy sends
//! there is signed (HMAC-SHA256 written here on `sha2`). Bodies stream, so
//! their hash is not known when the head is sent: the payload is declared
//! `UNSIGNED-PAYLOAD` (accepted by both services over HTTPS), signed as
//! such in `x-amz-content-sha256`.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The declared payload hash of a request whose body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Credentials to sign with.
#[derive(Clone)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be found.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(String);

impl Credentials {
    /// From `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`, else the profile `AWS_PROFILE` (default
    /// `default`) of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
    /// default `~/.aws/credentials`).
    pub fn from_environment() -> Result<Credentials, CredentialsError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(access_key), Some(secret_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials {
                access_key,
                secret_key,
                session_token: env("AWS_SESSION_TOKEN"),
            });
        }
        let file = env("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")))
            .ok_or_else(|| CredentialsError("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file".into()))?;
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let text = std::fs::read_to_string(&file).map_err(|e| {
            CredentialsError(format!(
                "no AWS credentials in the environment, and {file} cannot be read: {e}"
            ))
        })?;
        let mut in_profile = false;
        let (mut access_key, mut secret_key, mut session_token) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_profile = name.trim() == profile;
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if !in_profile {
                continue;
            }
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => access_key = v,
                "aws_secret_access_key" => secret_key = v,
                "aws_session_token" => session_token = v,
                _ => {}
            }
        }
        match (access_key, secret_key) {
            (Some(access_key), Some(secret_key)) => Ok(Credentials {
                access_key,
                secret_key,
                session_token,
            }),
            _ => Err(CredentialsError(format!(
                "profile [{profile}] of {file} has no aws_access_key_id and aws_secret_access_key"
            ))),
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut inner, mut outer) = ([0x36u8; BLOCK], [0x5cu8; BLOCK]);
    for i in 0..BLOCK {
        inner[i] ^= k[i];
        outer[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(inner)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(outer)
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// SigV4's URI encoding: unreserved characters kept, everything else
/// `%XX` (upper-case hex); `/` kept when `slash`.
fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// SigV4's URI encoding of raw bytes (what a percent escape decoded to,
/// UTF-8 or not).
fn encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode(s.as_bytes())).into_owned()
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                // In a query, `+` is a space.
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'` of `t` (UTC).
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = osproxy_core::civil::civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// One request to sign.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent (percent-encoded as on the wire).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: Option<&'a str>,
    /// The headers to sign, names in lower case (`host` and `x-amz-date`
    /// at least; `x-amz-content-sha256` and `x-amz-security-token` when
    /// sent).
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload: &'a str,
}

/// A path as SigV4 canonicalises it (services other than S3): `.` and
/// `..` segments resolved (RFC 3986, 5.2.4) and empty segments dropped,
/// the leading and a trailing `/` kept; `/` when empty.
fn normalize_path(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let trailing = if path.ends_with('/') && !kept.is_empty() {
        "/"
    } else {
        ""
    };
    format!("/{}{trailing}", kept.join("/"))
}

/// What signing found (the intermediate strings, for tests and errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The query a signed request sends: every name and value encoded as
    /// signed, in the order the client gave them (the service sorts them
    /// itself when it checks the signature).
    pub sent_query: String,
    /// The canonical request.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

/// Signs `req` at `amz_date` (`YYYYMMDDTHHMMSSZ`) for `region` and
/// `service`. `double_encode` is true for every service but S3: the path is
/// encoded once more (the one on the wire is already encoded).
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    double_encode: bool,
) -> Signature {
    let path = normalize_path(req.path);
    let canonical_uri = if double_encode {
        encode(&path, true)
    } else {
        encode(&decode(&path), true)
    };
    // Parameters as OpenSearch splits them (`&` or `;`), each name and
    // value decoded to bytes and encoded the SigV4 way: in the order sent
    // (what is sent: duplicates keep their order, the last one wins as
    // before), and sorted (what is signed: a service sorts the parameters
    // it received the same way).
    let params: Vec<(String, String)> = req
        .query
        .unwrap_or("")
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                encode_bytes(&percent_decode(k.as_bytes())),
                encode_bytes(&percent_decode(v.as_bytes())),
            )
        })
        .collect();
    let join = |list: &[(String, String)]| {
        list.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let sent_query = join(&params);
    let mut sorted = params;
    sorted.sort();
    let canonical_query = join(&sorted);
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method, req.payload
    );
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = hmac(
        format!("AWS4{}", creds.secret_key).as_bytes(),
        date.as_bytes(),
    );
    let key = hmac(&key, region.as_bytes());
    let key = hmac(&key, service.as_bytes());
    let key = hmac(&key, b"aws4_request");
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    Signature {
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key
        ),
        sent_query,
        canonical_request,
        string_to_sign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite() -> Credentials {
        Credentials {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn get_vanilla_matches_the_aws_test_suite() {
        let req = Request {
            method: "GET",
            path: "/",
            query: None,
            headers: &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            payload: EMPTY,
        };
        let s = sign(
            &req,
            &suite(),
            "us-east-1",
            "service",
            "20150830T123600Z",
            true,
        );
        assert_eq!(
            s.canonical_request,
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY}")
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn the_s3_get_object_example_of_the_aws_documentation() {
        let creds = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: None,
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload: EMPTY,
        };
        let s = sign(&req, &creds, "us-east-1", "s3", "20130524T000000Z", false);
        assert!(s
            .string_to_sign
            .ends_with("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"));
        assert!(s.authorization.ends_with(
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ));
    }

    #[test]
    fn paths_and_queries_are_canonicalised() {
        let req = Request {
            method: "POST",
            path: "/my%20index/_search",
            query: Some("size=10&from=0&q=a+b&flag"),
            headers: &[("host", "h"), ("x-amz-date", "20150830T123600Z")],
            payload: UNSIGNED_PAYLOAD,
        };
        let s = sign(&req, &suite(), "eu-west-1", "es", "20150830T123600Z", true);
        let lines: Vec<&str> = s.canonical_request.lines().collect();
        // Encoded once more for non-S3 services; the query sorted, a
        // valueless key given an empty value, a `+` read as a space.
        assert_eq!(lines[1], "/my%2520index/_search");
        assert_eq!(lines[2], "flag=&from=0&q=a%20b&size=10");
        // Sent in the client's order, encoded as signed.
        assert_eq!(s.sent_query, "size=10&from=0&q=a%20b&flag=");
    }

    #[test]
    fn duplicates_keep_their_order_and_bytes_survive() {
        let req = Request {
            method: "GET",
            path: "/_search",
            query: Some("size=1000&size=1;pretty&x=%FF%zz"),
            headers: &[("host", "h"), ("x-amz-date", "20150830T123600Z")],
            payload: UNSIGNED_PAYLOAD,
        };
        let s = sign(&req, &suite(), "eu-west-1", "es", "20150830T123600Z", true);
        // The last `size` still wins at the cluster; `;` separates; a
        // non-UTF-8 escape keeps its byte; a malformed one is literal.
        assert_eq!(s.sent_query, "size=1000&size=1&pretty=&x=%FF%25zz");
        assert_eq!(
            s.canonical_request.lines().nth(2),
            Some("pretty=&size=1&size=1000&x=%FF%25zz")
        );
    }

    #[test]
    fn dot_segments_and_empty_segments_are_resolved() {
        for (raw, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("/a/./b/../c", "/a/c"),
            ("//a//b/", "/a/b/"),
            ("/../..", "/"),
            ("/_search", "/_search"),
        ] {
            assert_eq!(normalize_path(raw), canonical, "{raw}");
        }
    }

    #[test]
    fn amz_dates_are_utc_civil_dates() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(amz_date(leap), "20000229T000000Z");
    }
}
