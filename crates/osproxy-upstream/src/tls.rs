//! TLS in both directions, on one crypto provider (rustls with aws-lc-rs):
//! the listeners' server configs (with client certificates verified
//! against a client CA when one is set), whose certificate and key are re-read
//! when their files change on disk (new connections get the new
//! certificate, open ones keep theirs), and the clusters' client configs
//! (system roots or a CA file, an optional client certificate).

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use osproxy_config::{ClientAuth, ClusterTls, ListenTls};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

/// Why a TLS setting cannot be used; names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{key}: {file}: {reason}")]
    File {
        /// The config key.
        key: String,
        /// The file it names.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The settings do not make a usable TLS configuration.
    #[error("{key}: {reason}")]
    Invalid {
        /// The config key.
        key: String,
        /// Why.
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_error(key: &str, file: &str, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        key: key.to_string(),
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// Every PEM certificate in `file`, leaf first.
fn certificates(key: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(file).map_err(|e| file_error(key, file, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, file, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, file, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The PEM private key in `file` (PKCS#8, PKCS#1 or SEC1).
fn private_key(key: &str, file: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(file).map_err(|e| file_error(key, file, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_error(key, file, format!("holds no usable PEM private key: {e}")))
}

/// Refuses a certificate that is not valid now (expired, or not yet
/// valid), naming when.
fn in_date(key: &str, file: &str, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Err(file_error(
            key,
            file,
            "holds a certificate that does not parse",
        ));
    };
    let validity = parsed.validity();
    if validity.is_valid() {
        return Ok(());
    }
    let now = x509_parser::time::ASN1Time::now();
    let why = if validity.not_after < now {
        format!("its certificate expired on {}", validity.not_after)
    } else {
        format!(
            "its certificate is not valid before {}",
            validity.not_before
        )
    };
    Err(file_error(key, file, why))
}

/// A certificate chain and its key, checked to belong together and the
/// leaf to be valid now.
fn certified_key(key: &str, cert_file: &str, key_file: &str) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&format!("{key}.cert_file"), cert_file)?;
    if let Some(leaf) = chain.first() {
        in_date(&format!("{key}.cert_file"), cert_file, leaf)?;
    }
    let der = private_key(&format!("{key}.key_file"), key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| file_error(&format!("{key}.key_file"), key_file, e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Invalid {
        key: format!("{key}.key_file"),
        reason: format!("the key does not belong to the certificate in {cert_file}: {e}"),
    })?;
    Ok(certified)
}

/// CA certificates as a trust store.
fn roots(key: &str, file: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, file)? {
        store
            .add(cert)
            .map_err(|e| file_error(key, file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// TLS 1.2 sessions a listener remembers for session-id resumption (a few
/// hundred bytes each).
const SESSION_CACHE: usize = 16_384;

/// The server configuration of a listener (`key`: `listen.tls` or
/// `listen.admin_tls`): ALPN `h2` and `http/1.1`, the certificate re-read
/// when its files change.
pub fn server_config(key: &str, tls: &ListenTls) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = Arc::new(ReloadingCert::load(key, tls)?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    // With a client CA, a certificate a client sends is verified against
    // it (a connection with an untrusted one fails its handshake); one is
    // required only with client_auth = "required".
    let builder = match (&tls.client_ca_file, tls.client_auth) {
        (None, None | Some(ClientAuth::None)) => builder.with_no_client_auth(),
        (None, Some(_)) => {
            return Err(TlsError::Invalid {
                key: format!("{key}.client_auth"),
                reason: "client certificates are verified against client_ca_file: set it".into(),
            })
        }
        (Some(_), Some(ClientAuth::None)) => builder.with_no_client_auth(),
        (Some(file), auth) => {
            let ca_key = format!("{key}.client_ca_file");
            let store = Arc::new(roots(&ca_key, file)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(store, provider());
            let verifier = if auth == Some(ClientAuth::Required) {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsError::Invalid {
                key: ca_key,
                reason: format!("not a usable client CA: {e}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Resumption, as nginx offers it: stateless tickets (TLS 1.3 and 1.2;
    // the key rotates every 6 hours) and a session-id cache for TLS 1.2
    // clients without tickets. A resumed session keeps the client
    // certificate it was verified with, so mTLS identities hold.
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Invalid {
            key: key.to_string(),
            reason: format!("cannot make a session-ticket key: {e}"),
        })?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(Arc::new(config))
}

/// The client configuration for an `https` cluster (`key`:
/// `clusters[i].tls`): its CA file or the system's roots, an optional
/// client certificate; ALPN as the upstream protocol.
pub fn client_config(
    key: &str,
    tls: Option<&ClusterTls>,
    http2: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let default = ClusterTls::default();
    let tls = tls.unwrap_or(&default);
    let store = match &tls.ca_file {
        Some(file) => roots(&format!("{key}.ca_file"), file)?,
        None => {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(TlsError::Invalid {
                    key: format!("{key}.ca_file"),
                    reason: "the system has no trusted CA certificates; name the cluster's CA in ca_file".into(),
                });
            }
            store
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: key.to_string(),
            reason: e.to_string(),
        })?
        .with_root_certificates(store);
    let mut config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(k)) => {
            let chain = certificates(&format!("{key}.client_cert_file"), cert)?;
            if let Some(leaf) = chain.first() {
                in_date(&format!("{key}.client_cert_file"), cert, leaf)?;
            }
            let der = private_key(&format!("{key}.client_key_file"), k)?;
            builder
                .with_client_auth_cert(chain, der)
                .map_err(|e| TlsError::Invalid {
                    key: format!("{key}.client_key_file"),
                    reason: format!("the key does not fit the client certificate: {e}"),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Invalid {
                key: format!("{key}.client_cert_file"),
                reason: "client_cert_file and client_key_file go together".into(),
            })
        }
    };
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

/// How often the certificate files are looked at (on a handshake, never
/// more often than this).
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Bumped by [`reload_now`]: every listener re-reads its files at its next
/// handshake, changed or not.
static RELOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes every TLS listener re-read its certificate and key at its next
/// handshake (what SIGHUP does), whatever their modification times say.
pub fn reload_now() {
    RELOADS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// A listener's certificate, re-read when its files' modification times
/// change. A file that does not load keeps the last good certificate.
#[derive(Debug)]
struct ReloadingCert {
    key: String,
    cert_file: String,
    key_file: String,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last looked at, and their modification times.
    seen: Mutex<(Instant, Option<Stamp>, Option<Stamp>)>,
    /// The [`reload_now`] count last acted on.
    reloads: std::sync::atomic::AtomicU64,
}

/// What says a file changed: its modification time and length (a copy in
/// place within one timestamp tick still changes the length, mostly).
type Stamp = (SystemTime, u64);

fn modified(file: &str) -> Option<Stamp> {
    std::fs::metadata(Path::new(file))
        .and_then(|m| Ok((m.modified()?, m.len())))
        .ok()
}

impl ReloadingCert {
    fn load(key: &str, tls: &ListenTls) -> Result<Self, TlsError> {
        let stamps = (modified(&tls.cert_file), modified(&tls.key_file));
        let first = certified_key(key, &tls.cert_file, &tls.key_file)?;
        Ok(ReloadingCert {
            key: key.to_string(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new((Instant::now(), stamps.0, stamps.1)),
            reloads: std::sync::atomic::AtomicU64::new(
                RELOADS.load(std::sync::atomic::Ordering::Acquire),
            ),
        })
    }

    fn maybe_reload(&self) {
        let Ok(mut seen) = self.seen.try_lock() else {
            return;
        };
        let asked = RELOADS.load(std::sync::atomic::Ordering::Acquire);
        let forced = self
            .reloads
            .swap(asked, std::sync::atomic::Ordering::AcqRel)
            != asked;
        if seen.0.elapsed() < RELOAD_CHECK && !forced {
            return;
        }
        seen.0 = Instant::now();
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        if (stamps.0, stamps.1) == (seen.1, seen.2) && !forced {
            return;
        }
        match certified_key(&self.key, &self.cert_file, &self.key_file) {
            Ok(next) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(next);
                }
                (seen.1, seen.2) = stamps;
                info!(key = %self.key, cert = %self.cert_file, "TLS certificate re-read; new connections use it");
            }
            // Mid-rotation (the certificate written, not yet its key) or
            // broken: keep serving the last good one and look again.
            Err(e) => {
                warn!(key = %self.key, error = %e, "the TLS certificate files changed but do not load; keeping the previous certificate")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        self.current.read().ok().map(|c| c.clone())
    }
}
