//! Secrets the config names by where they are (an environment variable or
//! a file), never by value: read once, when an instance is built.

/// Why a named secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set (or not UTF-8).
    #[error("{key}: {var} is not set")]
    Unset {
        /// The config key that names it (`cursors.key_env`, ...).
        key: String,
        /// The variable.
        var: String,
    },
    /// The file could not be read.
    #[error("{key}: cannot read {file}: {source}")]
    Unreadable {
        /// The config key that names it.
        key: String,
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither a variable nor a file is named where one is required.
    #[error("{key}: no source; set {key}_env or {key}_file")]
    Missing {
        /// The config key prefix (`principal alice: token`).
        key: String,
    },
}

/// The secret in the variable `env` or else the file `file`, trimmed;
/// `None` when neither is named. `key` is the config key prefix used in
/// errors: `cursors.key` reads `cursors.key_env` / `cursors.key_file`.
pub fn read_secret(
    key: &str,
    env: Option<&str>,
    file: Option<&str>,
) -> Result<Option<String>, SecretError> {
    let raw = match (env, file) {
        (Some(var), _) => std::env::var(var).map_err(|_| SecretError::Unset {
            key: format!("{key}_env"),
            var: var.to_string(),
        })?,
        (None, Some(file)) => {
            std::fs::read_to_string(file).map_err(|source| SecretError::Unreadable {
                key: format!("{key}_file"),
                file: file.to_string(),
                source,
            })?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(raw.trim().to_string()))
}

/// Validation of one secret source: `{key}_env` or `{key}_file`, not both,
/// at least `min` characters once trimmed; `required` when neither may be
/// missing. `what` names it in messages ("token", "key").
pub(crate) fn check_secret(
    errs: &mut Vec<crate::ConfigError>,
    key: &str,
    (env, file): (Option<&String>, Option<&String>),
    min: usize,
    what: &str,
    required: bool,
) {
    let short = key.rsplit('.').next().unwrap_or(key);
    if env.is_some() && file.is_some() {
        errs.push(crate::ConfigError::new(
            format!("{key}_env"),
            format!("set {short}_env or {short}_file, not both"),
        ));
        return;
    }
    match read_secret(key, env.map(String::as_str), file.map(String::as_str)) {
        Ok(Some(v)) if v.len() >= min => {}
        Ok(Some(_)) => {
            let (k, source) = match (env, file) {
                (Some(var), _) => (format!("{key}_env"), var),
                (_, Some(f)) => (format!("{key}_file"), f),
                _ => return,
            };
            errs.push(crate::ConfigError::new(
                k,
                format!("the {what} in {source} is shorter than {min} characters"),
            ));
        }
        Ok(None) if required => errs.push(crate::ConfigError::new(
            format!("{key}_env"),
            format!("set {short}_env or {short}_file ({what}s are never written inline)"),
        )),
        Ok(None) => {}
        Err(e) => {
            let message = e.to_string();
            let (k, m) = message.split_once(": ").unwrap_or((key, &message));
            errs.push(crate::ConfigError::new(k, m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_trimmed_and_names_the_key_when_it_cannot() {
        let dir = std::env::temp_dir().join(format!("osproxy-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        std::fs::write(&path, "s3cret\n").unwrap();
        let got = read_secret("cursors.key", None, path.to_str()).unwrap();
        assert_eq!(got.as_deref(), Some("s3cret"));
        assert!(read_secret("cursors.key", None, None).unwrap().is_none());
        let e = read_secret("cursors.key", None, Some("/nonexistent/k")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cursors.key_file: cannot read /nonexistent/k"),
            "{e}"
        );
        let e =
            read_secret("cursors.key", Some("OSPROXY_TEST_SURELY_UNSET_VAR"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cursors.key_env: OSPROXY_TEST_SURELY_UNSET_VAR is not set"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
