//! Authentication: a bearer token becomes a principal with grants, and the
//! grant check for a partition. Tokens are compared as SHA-256 digests in
//! constant time, scanning every principal, so neither the content nor the
//! length of a configured token leaks through timing.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use osproxy_config::{read_secret, Config, SecretError};
use osproxy_core::partition::is_valid_partition;
use osproxy_core::{ErrorCode, PartitionId, ProxyError};
use sha2::{Digest, Sha256};

/// The header a principal with several grants names its partition in.
pub const PARTITION_HEADER: &str = "x-osproxy-partition";

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    /// Its configured name.
    pub name: String,
    /// The partitions it may act for.
    pub grants: Grants,
    /// Whether it may use operator endpoints.
    pub operator: bool,
}

/// What a principal may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// A trusted gateway: any partition it names.
    Any,
    /// These partitions.
    Only(Vec<PartitionId>),
}

/// The one value of a header that names a partition, or none. Given more
/// than once it is refused (found by review: the first was taken, so a
/// gateway that appends the header let its client's own come first).
pub(crate) fn partition_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h http::HeaderValue>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ProxyError::new(
            ErrorCode::InvalidPartition,
            format!("the `{name}` header is given more than once; name one partition"),
        ));
    }
    Ok(first)
}

impl Principal {
    /// The partition this request acts for: the single grant, or the one
    /// named in `x-osproxy-partition` (checked against the grants).
    pub fn partition(&self, headers: &HeaderMap) -> Result<PartitionId, ProxyError> {
        let named = match partition_header(headers, PARTITION_HEADER)? {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .filter(|s| is_valid_partition(s))
                    .ok_or_else(|| {
                        ProxyError::new(
                            ErrorCode::InvalidPartition,
                            format!("{PARTITION_HEADER} is not a valid partition id"),
                        )
                    })?,
            ),
            None => None,
        };
        self.authorize(named)
    }

    /// Checks that this principal may act for `named` (or picks its single
    /// grant when nothing is named).
    pub fn authorize(&self, named: Option<&str>) -> Result<PartitionId, ProxyError> {
        match (&self.grants, named) {
            (Grants::Only(list), None) if list.len() == 1 => Ok(list[0].clone()),
            (_, None) => Err(ProxyError::new(
                ErrorCode::PartitionRequired,
                format!("principal {} may act for several partitions and named none in {PARTITION_HEADER}", self.name),
            )),
            (Grants::Any, Some(p)) => PartitionId::new(p)
                .map_err(|e| ProxyError::new(ErrorCode::InvalidPartition, e.to_string())),
            (Grants::Only(list), Some(p)) => list.iter().find(|g| g.as_str() == p).cloned().ok_or_else(|| {
                ProxyError::new(ErrorCode::PartitionForbidden, format!("principal {} may not act for this partition", self.name))
            }),
        }
    }
}

/// Why the configured principals do not make an authenticator.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A token could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Two principals have one token: a caller could not be told apart.
    #[error("principal {0}: its token is also another principal's; tokens must be distinct")]
    SharedToken(String),
    /// A granted partition is not a partition id.
    #[error("principal {principal}: {reason}")]
    Partition {
        /// The principal.
        principal: String,
        /// Why the id is not one.
        reason: String,
    },
}

/// The principals of one instance, keyed by token digest.
#[derive(Debug, Default)]
pub struct Authenticator {
    entries: Vec<([u8; 32], Arc<Principal>)>,
    /// Principals a verified client certificate authenticates as.
    certificates: Vec<(CertIdentity, Arc<Principal>)>,
}

/// How a principal's client certificate is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CertIdentity {
    /// Its subject's attributes, in any order.
    Subject(Vec<String>),
    /// One of its subject alternative names, of the kind the configured
    /// value's syntax names: a URI (`scheme://...`), an e-mail (`a@b`), else
    /// a DNS name (compared ignoring ASCII case).
    San(crate::ingress::SubjectAltName),
}

impl CertIdentity {
    fn san(configured: &str) -> CertIdentity {
        use crate::ingress::SubjectAltName;
        CertIdentity::San(if configured.contains("://") {
            SubjectAltName::Uri(configured.to_string())
        } else if configured.contains('@') {
            SubjectAltName::Email(configured.to_string())
        } else {
            SubjectAltName::Dns(configured.to_ascii_lowercase())
        })
    }

    fn matches(&self, cert: &crate::ingress::ClientCertificate) -> bool {
        match self {
            CertIdentity::Subject(parts) => !parts.is_empty() && *parts == cert.subject,
            CertIdentity::San(name) => cert.sans.iter().any(|s| s == name),
        }
    }
}

impl Authenticator {
    /// Reads every principal's token from its environment variable or file.
    pub fn from_config(config: &Config) -> Result<Self, AuthConfigError> {
        let mut entries: Vec<([u8; 32], Arc<Principal>)> = Vec::new();
        let mut certificates = Vec::new();
        for p in &config.principals {
            let key = format!("principal {}: token", p.name);
            let token = read_secret(&key, p.token_env.as_deref(), p.token_file.as_deref())?;
            let identity = match (&p.cert_subject, &p.cert_san) {
                (Some(subject), _) => Some(CertIdentity::Subject(
                    osproxy_config::subject_parts(subject).ok_or_else(|| {
                        AuthConfigError::Partition {
                            principal: p.name.clone(),
                            reason: format!("cert_subject {subject:?} is not TYPE=value, ..."),
                        }
                    })?,
                )),
                (None, Some(san)) => Some(CertIdentity::san(san)),
                (None, None) => None,
            };
            if token.is_none() && identity.is_none() {
                return Err(SecretError::Missing { key }.into());
            }
            let grants = if p.any_partition {
                Grants::Any
            } else {
                Grants::Only(
                    p.partitions
                        .iter()
                        .map(|s| {
                            PartitionId::new(s).map_err(|e| AuthConfigError::Partition {
                                principal: p.name.clone(),
                                reason: e.to_string(),
                            })
                        })
                        .collect::<Result<_, _>>()?,
                )
            };
            let principal = Arc::new(Principal {
                name: p.name.clone(),
                grants,
                operator: p.operator,
            });
            if let Some(token) = token {
                let digest = digest(token.as_bytes());
                if entries.iter().any(|(d, _)| *d == digest) {
                    return Err(AuthConfigError::SharedToken(p.name.clone()));
                }
                entries.push((digest, principal.clone()));
            }
            if let Some(identity) = identity {
                certificates.push((identity, principal));
            }
        }
        Ok(Authenticator {
            entries,
            certificates,
        })
    }

    /// Whether any principal is configured (and so credentials are required).
    pub fn required(&self) -> bool {
        !self.entries.is_empty() || !self.certificates.is_empty()
    }

    /// The principal of a request: by its bearer token when it sends one,
    /// else by the connection's verified client certificate.
    pub fn authenticate_with(
        &self,
        headers: &HeaderMap,
        certificate: Option<&crate::ingress::ClientCertificate>,
    ) -> Result<Arc<Principal>, ProxyError> {
        if let Some(cert) = certificate {
            in_date(cert)?;
        }
        match (headers.contains_key(AUTHORIZATION), certificate) {
            (false, Some(cert)) => {
                let mut matching = self
                    .certificates
                    .iter()
                    .filter(|(identity, _)| identity.matches(cert));
                match (matching.next(), matching.next()) {
                    (Some((_, p)), None) => Ok(p.clone()),
                    (None, _) => Err(ProxyError::new(
                        ErrorCode::CertificateUnmapped,
                        "the client certificate is valid but no principal's",
                    )),
                    // Never the first of several by config order.
                    (Some(_), Some(_)) => Err(ProxyError::new(
                        ErrorCode::CertificateUnmapped,
                        "the client certificate matches more than one principal; give each certificate one identity",
                    )),
                }
            }
            _ => self.authenticate(headers),
        }
    }

    /// The principal behind `Authorization: Bearer <token>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, ProxyError> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProxyError::new(ErrorCode::Unauthenticated, "missing bearer token"))?;
        let presented = digest(token.as_bytes());
        let mut found: Option<&Arc<Principal>> = None;
        for (d, principal) in &self.entries {
            if constant_time_eq(d, &presented) {
                found = Some(principal);
            }
        }
        found
            .cloned()
            .ok_or_else(|| ProxyError::new(ErrorCode::Unauthenticated, "unknown bearer token"))
    }
}

/// A connection whose certificate (or a certificate of its chain) has gone
/// out of date since its handshake (it is long-lived, or its session was
/// resumed) is refused whatever the request carries, as a new handshake
/// with the certificate would be.
pub(crate) fn in_date(cert: &crate::ingress::ClientCertificate) -> Result<(), ProxyError> {
    if cert.valid_at(crate::ingress::unix_now()) {
        return Ok(());
    }
    Err(ProxyError::new(
        ErrorCode::Unauthenticated,
        format!(
            "the connection's client certificate is out of date (its chain is valid from {} to {}, Unix seconds); reconnect with a current certificate",
            cert.valid.0, cert.valid.1
        ),
    ))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: Grants) -> Principal {
        Principal {
            name: "svc".into(),
            grants,
            operator: false,
        }
    }

    fn only(ids: &[&str]) -> Grants {
        Grants::Only(ids.iter().map(|s| PartitionId::new(s).unwrap()).collect())
    }

    #[test]
    fn single_grant_acts_for_it() {
        let p = principal(only(&["acme"]));
        assert_eq!(p.authorize(None).unwrap().as_str(), "acme");
        assert_eq!(p.authorize(Some("acme")).unwrap().as_str(), "acme");
        assert_eq!(
            p.authorize(Some("globex")).unwrap_err().code,
            ErrorCode::PartitionForbidden
        );
    }

    #[test]
    fn several_grants_must_name_one() {
        let p = principal(only(&["acme", "globex"]));
        assert_eq!(
            p.authorize(None).unwrap_err().code,
            ErrorCode::PartitionRequired
        );
        assert_eq!(p.authorize(Some("globex")).unwrap().as_str(), "globex");
        assert_eq!(
            p.authorize(Some("initech")).unwrap_err().code,
            ErrorCode::PartitionForbidden
        );
    }

    /// Found by review: the first of repeated headers was taken.
    #[test]
    fn a_repeated_partition_header_is_refused() {
        let p = principal(Grants::Any);
        let mut headers = HeaderMap::new();
        headers.append(PARTITION_HEADER, http::HeaderValue::from_static("globex"));
        headers.append(PARTITION_HEADER, http::HeaderValue::from_static("acme"));
        assert_eq!(
            p.partition(&headers).unwrap_err().code,
            ErrorCode::InvalidPartition
        );
        headers.remove(PARTITION_HEADER);
        headers.insert(PARTITION_HEADER, http::HeaderValue::from_static("acme"));
        assert_eq!(p.partition(&headers).unwrap().as_str(), "acme");
    }

    #[test]
    fn gateway_names_any_valid_partition() {
        let p = principal(Grants::Any);
        assert_eq!(p.authorize(Some("anyone")).unwrap().as_str(), "anyone");
        assert_eq!(
            p.authorize(None).unwrap_err().code,
            ErrorCode::PartitionRequired
        );
        let mut h = HeaderMap::new();
        h.insert(PARTITION_HEADER, "bad id".parse().unwrap());
        assert_eq!(
            p.partition(&h).unwrap_err().code,
            ErrorCode::InvalidPartition
        );
    }

    #[test]
    fn a_certificate_authenticates_only_without_a_token() {
        let by_cert = Arc::new(principal(only(&["c"])));
        let auth = Authenticator {
            entries: vec![(
                digest(b"s3cret-token-aaaaaaaa"),
                Arc::new(principal(only(&["a"]))),
            )],
            certificates: vec![(
                CertIdentity::Subject(osproxy_config::subject_parts("O=Acme,CN=x").unwrap()),
                by_cert.clone(),
            )],
        };
        let cert = crate::ingress::ClientCertificate {
            subject: osproxy_config::subject_parts("CN=x, O=Acme").unwrap(),
            sans: Vec::new(),
            valid: (0, i64::MAX),
        };
        let mut h = HeaderMap::new();
        let found = auth.authenticate_with(&h, Some(&cert)).unwrap();
        assert!(Arc::ptr_eq(&found, &by_cert));
        let other = crate::ingress::ClientCertificate {
            subject: vec!["CN=y".into()],
            sans: vec![crate::ingress::SubjectAltName::Uri("x".into())],
            valid: (0, i64::MAX),
        };
        assert_eq!(
            auth.authenticate_with(&h, Some(&other)).unwrap_err().code,
            ErrorCode::CertificateUnmapped
        );
        // A certificate out of date is refused, token or not.
        let expired = crate::ingress::ClientCertificate {
            valid: (0, crate::ingress::unix_now() - 1),
            ..cert.clone()
        };
        let e = auth.authenticate_with(&h, Some(&expired)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(e.reason.contains("out of date"), "{}", e.reason);
        let mut with_token = HeaderMap::new();
        with_token.insert(
            AUTHORIZATION,
            "Bearer s3cret-token-aaaaaaaa".parse().unwrap(),
        );
        assert!(auth.authenticate_with(&with_token, Some(&expired)).is_err());
        // A wrong token is not rescued by a good certificate.
        h.insert(AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(
            auth.authenticate_with(&h, Some(&cert)).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn tokens_authenticate_by_digest() {
        let auth = Authenticator {
            entries: vec![(
                digest(b"s3cret-token-aaaaaaaa"),
                Arc::new(principal(only(&["a"]))),
            )],
            certificates: Vec::new(),
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            auth.authenticate(&h).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        h.insert(AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(
            auth.authenticate(&h).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        h.insert(AUTHORIZATION, "Basic czNjcmV0".parse().unwrap());
        assert_eq!(
            auth.authenticate(&h).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        h.insert(
            AUTHORIZATION,
            "Bearer s3cret-token-aaaaaaaa".parse().unwrap(),
        );
        assert_eq!(auth.authenticate(&h).unwrap().name, "svc");
    }
}
