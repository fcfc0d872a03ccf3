//! Layering of environment variables and `--set` flags over the file.

use crate::ConfigError;

/// Applies `OSPROXY_<SECTION>__<KEY>[__<KEY>...]` variables. Variables
/// without `__` (such as `OSPROXY_CONFIG`) are not overrides.
pub(crate) fn apply_env<I>(table: &mut toml::Table, env: I) -> Result<(), ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("OSPROXY_") && k.contains("__"))
        .collect();
    // Deterministic order whatever the environment's.
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name["OSPROXY_".len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        set_path(table, &path, &value)
            .map_err(|m| ConfigError::new(format!("environment variable {name}"), m.to_string()))?;
    }
    Ok(())
}

/// Applies `--set section.key=value` flags in order.
pub(crate) fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<(), ConfigError> {
    for set in sets {
        let Some((key, value)) = set.split_once('=') else {
            return Err(ConfigError::new(
                format!("--set {set}"),
                "expected KEY=VALUE, like --set upstream.request_timeout=5s",
            ));
        };
        let path: Vec<String> = key.trim().split('.').map(str::to_string).collect();
        set_path(table, &path, value)
            .map_err(|m| ConfigError::new(format!("--set {key}"), m.to_string()))?;
    }
    Ok(())
}

/// A value is read as a TOML value when it is one (`true`, `8`, `["a-"]`,
/// `"quoted"`), otherwise as a plain string (`5s`, `127.0.0.1:9200`).
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Why a layered value (`--set`, `OSPROXY_...`) cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SetError {
    #[error("a key segment is empty")]
    EmptySegment,
    #[error("{0:?} is not an array index")]
    NotAnIndex(String),
    #[error("index {0} is past the end of the array")]
    PastTheEnd(usize),
    #[error("{0:?}: a parent of this key is not a table")]
    NotATable(String),
}

fn set_path(table: &mut toml::Table, path: &[String], raw: &str) -> Result<(), SetError> {
    if path.is_empty() || path.iter().any(|p| p.is_empty()) {
        return Err(SetError::EmptySegment);
    }
    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_in(&mut root, path, raw);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_in(root: &mut toml::Value, path: &[String], raw: &str) -> Result<(), SetError> {
    let mut cur = root;
    let Some((last, parents)) = path.split_last() else {
        return Err(SetError::EmptySegment);
    };
    for seg in parents {
        cur = step(cur, seg)?;
    }
    match cur {
        toml::Value::Table(t) => {
            t.insert(last.clone(), parse_value(raw));
            Ok(())
        }
        toml::Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| SetError::NotAnIndex(last.clone()))?;
            let slot = a.get_mut(i).ok_or(SetError::PastTheEnd(i))?;
            *slot = parse_value(raw);
            Ok(())
        }
        _ => Err(SetError::NotATable(last.clone())),
    }
}

fn step<'a>(cur: &'a mut toml::Value, seg: &str) -> Result<&'a mut toml::Value, SetError> {
    match cur {
        toml::Value::Table(t) => Ok(t
            .entry(seg.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))),
        toml::Value::Array(a) => {
            let i: usize = seg
                .parse()
                .map_err(|_| SetError::NotAnIndex(seg.to_string()))?;
            a.get_mut(i).ok_or(SetError::PastTheEnd(i))
        }
        _ => Err(SetError::NotATable(seg.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn sets_override_and_parse_types() {
        let mut t = table("[upstream]\nrequest_timeout = \"30s\"\n");
        apply_sets(
            &mut t,
            &[
                "upstream.request_timeout=5s".into(),
                "passthrough.indices=[\"a-\"]".into(),
            ],
        )
        .unwrap_or_default();
        assert_eq!(t["upstream"]["request_timeout"].as_str(), Some("5s"));
        assert_eq!(t["passthrough"]["indices"][0].as_str(), Some("a-"));
    }

    #[test]
    fn env_overrides_nested_and_indexed() {
        let mut t = table("[[clusters]]\nid = \"main\"\nurl = \"http://a:1\"\n");
        let env = vec![
            (
                "OSPROXY_CLUSTERS__0__URL".to_string(),
                "http://b:2".to_string(),
            ),
            ("OSPROXY_CONFIG".to_string(), "ignored".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        apply_env(&mut t, env).unwrap_or_default();
        assert_eq!(t["clusters"][0]["url"].as_str(), Some("http://b:2"));
        assert!(!t.contains_key("config"));
    }

    #[test]
    fn bad_set_names_the_flag() {
        let mut t = toml::Table::new();
        let err = apply_sets(&mut t, &["nokey".into()]).err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("--set nokey"));
        let err = apply_sets(&mut t, &["a.b=1".into(), "a.b.c=2".into()])
            .err()
            .map(|e| e.key);
        assert_eq!(err.as_deref(), Some("--set a.b.c"));
    }
}
