//! The osproxy configuration.
//!
//! Sources are layered file < environment (`OSPROXY_<SECTION>__<KEY>`) <
//! flags (`--set section.key=value`), then decoded strictly (unknown keys are
//! errors) and validated. Every problem names the exact key at fault. This
//! crate reads files and the environment only when asked; it never listens.

mod bytesize;
mod duration;
mod layer;
mod limits;
mod model;
mod secret;
mod tenancy;
mod validate;

pub use bytesize::{ByteSize, ByteSizeError};
pub use duration::{Duration, DurationError};
pub use limits::{Limits, PartitionLimits, MAX_LIMITED_PARTITIONS, MAX_RATE, MIN_RATE};
pub use model::*;
pub use secret::{read_secret, SecretError};
pub use tenancy::{check_index, is_valid_index_name, IndexProblem};

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in a configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One configuration problem: the key (dotted path, `clusters[0].url`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key, or the file for whole-file problems.
    pub key: String,
    /// What is wrong and, where useful, how to fix it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "invalid config: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Where `serve` and `check` look for the file when `--config` is absent:
/// `$OSPROXY_CONFIG`, then `./osproxy.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("OSPROXY_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("osproxy.toml"))
}

/// Loads, layers, decodes and validates a configuration.
///
/// `env` is the process environment (passed in so tests stay hermetic);
/// `sets` are the `--set key=value` flags in order.
pub fn load<I>(path: &Path, env: I, sets: &[String]) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            format!("cannot read the config file: {e}"),
        )
    })?;
    from_str(&text, env, sets)
}

/// Like [`load`], from the file's text.
///
/// ```
/// let cfg = osproxy_config::from_str(
///     "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:9201\"\n[passthrough]\ncluster = \"main\"\n",
///     std::iter::empty(),
///     &["upstream.request_timeout=5s".to_string()],
/// ).unwrap();
/// assert_eq!(cfg.upstream.request_timeout.as_std().as_secs(), 5);
/// ```
pub fn from_str<I>(text: &str, env: I, sets: &[String]) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::new("config file", format!("not valid TOML: {e}"))
    })?;
    layer::apply_env(&mut table, env)?;
    layer::apply_sets(&mut table, sets)?;
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().trim().to_string();
            ConfigError::new(error_key(&key, &message), message)
        })?;
    validate::validate(&config)?;
    Ok(config)
}

/// The key a decoding error is about: serde reports a missing field at its
/// parent, so the field is appended to name the key itself.
fn error_key(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match (parent, missing) {
        ("", Some(field)) => field.to_string(),
        (p, Some(field)) => format!("{p}.{field}"),
        ("", None) => "config file".to_string(),
        (p, None) => p.to_string(),
    }
}

/// A certificate subject (`"CN=acme-svc, O=Acme"`) as its attributes,
/// `TYPE=value` each with the type upper-cased and spaces around the parts
/// trimmed, sorted: the order a subject is written in does not matter.
/// `None` when a part is not `TYPE=value`, or a value holds `=` or `+`.
/// (Commas inside values are not supported: a certificate whose subject
/// holds one matches no principal.)
pub fn subject_parts(subject: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    for part in subject.split(',') {
        let (kind, value) = part.split_once('=')?;
        let (kind, value) = (kind.trim(), value.trim());
        // A value with `=` or `+` could only match a certificate whose
        // subject osproxy refuses to read (see the ingress).
        if kind.is_empty() || value.is_empty() || value.contains(['=', '+']) {
            return None;
        }
        parts.push(format!("{}={value}", kind.to_ascii_uppercase()));
    }
    parts.sort();
    (!parts.is_empty()).then_some(parts)
}
