//! Semantic checks after decoding: references, URLs, secrets, ranges.

use crate::{Config, ConfigError, ConfigErrors};

pub(crate) fn validate(config: &Config) -> Result<(), ConfigErrors> {
    let mut errs = Vec::new();
    if config.tls.is_some() {
        errs.push(ConfigError::new(
            "tls",
            "TLS is configured per listener: move [tls] to listen.tls = { cert_file = \"...\", key_file = \"...\" } (and listen.admin_tls)",
        ));
    }
    if config.listen.data == config.listen.admin && config.listen.data.port() != 0 {
        errs.push(ConfigError::new(
            "listen.admin",
            "must differ from listen.data",
        ));
    }
    if config.usage.max_partitions > 100_000 {
        errs.push(ConfigError::new(
            "usage.max_partitions",
            "at most 100000 partitions may get a row of their own",
        ));
    }
    for (key, message) in config.limits.problems() {
        errs.push(ConfigError::new(format!("limits.{key}"), message));
    }
    if config.clusters.is_empty() {
        errs.push(ConfigError::new(
            "clusters",
            "at least one [[clusters]] entry with id and url is required",
        ));
    }
    for (i, c) in config.clusters.iter().enumerate() {
        let key = |k: &str| format!("clusters[{i}].{k}");
        if !is_valid_id(&c.id) {
            errs.push(ConfigError::new(
                key("id"),
                format!(
                    "{:?} is not a valid cluster id: use 1 to 64 of [A-Za-z0-9_.-]",
                    c.id
                ),
            ));
        }
        if c.max_concurrent_requests == 0 {
            errs.push(ConfigError::new(
                key("max_concurrent_requests"),
                "must be more than zero",
            ));
        }
        if config.clusters[..i].iter().any(|o| o.id == c.id) {
            errs.push(ConfigError::new(
                key("id"),
                format!("duplicate cluster id {:?}", c.id),
            ));
        }
        if let Some(m) = url_problem(&c.url, true) {
            errs.push(ConfigError::new(key("url"), m));
        }
        if c.tls.is_some() && !c.url.starts_with("https://") {
            errs.push(ConfigError::new(
                key("tls"),
                "tls settings need an https:// url (this one is cleartext)",
            ));
        }
        let api_key = c.api_key_env.is_some() || c.api_key_file.is_some();
        if let Some(sig) = &c.sigv4 {
            if !c.url.starts_with("https://") {
                errs.push(ConfigError::new(
                    key("sigv4"),
                    "SigV4 requests declare an unsigned payload and carry the session token: they need an https:// url",
                ));
            }
            if api_key || c.username.is_some() {
                errs.push(ConfigError::new(
                    key("sigv4"),
                    "a cluster signs with SigV4, or sends basic auth or an API key: not both",
                ));
            }
            if !matches!(sig.service.as_str(), "es" | "aoss") {
                errs.push(ConfigError::new(
                    key("sigv4.service"),
                    format!(
                        "{:?}: \"es\" (Amazon OpenSearch Service) or \"aoss\" (OpenSearch Serverless)",
                        sig.service
                    ),
                ));
            }
            if sig.region.is_empty()
                || !sig
                    .region
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            {
                errs.push(ConfigError::new(
                    key("sigv4.region"),
                    format!(
                        "{:?} is not an AWS region name (like \"eu-west-1\")",
                        sig.region
                    ),
                ));
            }
        }
        if api_key && c.username.is_some() {
            errs.push(ConfigError::new(
                key("api_key_env"),
                "give basic auth (username + password) or an API key, not both",
            ));
        }
        if api_key {
            crate::secret::check_secret(
                &mut errs,
                &key("api_key"),
                (c.api_key_env.as_ref(), c.api_key_file.as_ref()),
                1,
                "API key",
                false,
            );
        }
        match (&c.username, &c.password_env, &c.password_file) {
            (_, Some(_), Some(_)) => errs.push(ConfigError::new(
                key("password_env"),
                "set password_env or password_file, not both",
            )),
            (None, Some(_), _) | (None, _, Some(_)) => errs.push(ConfigError::new(
                key("username"),
                "a password is configured without a username",
            )),
            (Some(_), None, None) => errs.push(ConfigError::new(
                key("username"),
                "a username needs password_env or password_file",
            )),
            _ => {}
        }
        if let Some(var) = &c.password_env {
            if std::env::var_os(var).is_none() {
                errs.push(ConfigError::new(
                    key("password_env"),
                    format!("environment variable {var} is not set"),
                ));
            }
        }
        if let Some(file) = &c.password_file {
            if let Err(e) = std::fs::metadata(file) {
                errs.push(ConfigError::new(
                    key("password_file"),
                    format!("cannot read {file}: {e}"),
                ));
            }
        }
    }
    for (key, tls) in [
        ("listen.tls", &config.listen.tls),
        ("listen.admin_tls", &config.listen.admin_tls),
    ] {
        let Some(tls) = tls else { continue };
        let asks = tls
            .client_auth
            .is_some_and(|a| !matches!(a, crate::ClientAuth::None));
        if asks && tls.client_ca_file.is_none() {
            errs.push(ConfigError::new(
                format!("{key}.client_auth"),
                "client certificates are verified against client_ca_file: set it",
            ));
        }
        if key == "listen.admin_tls" && tls.client_ca_file.is_some() {
            errs.push(ConfigError::new(
                format!("{key}.client_ca_file"),
                "the admin listener authenticates operators by token; client certificates are for the data listener",
            ));
        }
    }
    check_control(&config.control, &mut errs);
    check_diagnostics(&config.diagnostics, &mut errs);
    if let Some(p) = &config.passthrough {
        if config.cluster(&p.cluster).is_none() {
            let known: Vec<&str> = config.clusters.iter().map(|c| c.id.as_str()).collect();
            errs.push(ConfigError::new(
                "passthrough.cluster",
                format!(
                    "unknown cluster {:?}; configured clusters: {known:?}",
                    p.cluster
                ),
            ));
        }
        for (i, prefix) in p.indices.iter().flatten().enumerate() {
            if prefix.is_empty()
                || prefix.starts_with(['_', '-', '+', '.'])
                || prefix.contains([',', '*', '/', ' ', '<', '>'])
            {
                errs.push(ConfigError::new(
                    format!("passthrough.indices[{i}]"),
                    format!("{prefix:?} is not a usable index prefix: it must be non-empty, not start with _ - + or ., and contain none of , * / < > or spaces"),
                ));
            }
        }
    }
    for (key, d) in [
        ("upstream.request_timeout", config.upstream.request_timeout),
        ("upstream.connect_timeout", config.upstream.connect_timeout),
        (
            "upstream.pool_idle_timeout",
            config.upstream.pool_idle_timeout,
        ),
    ] {
        if d.as_std().is_zero() {
            errs.push(ConfigError::new(key, "must be greater than zero"));
        } else if d.as_std() > std::time::Duration::from_secs(24 * 3600) {
            errs.push(ConfigError::new(key, "must be at most 24h"));
        }
    }
    let server = &config.server;
    for (key, zero) in [
        ("server.max_connections", server.max_connections == 0),
        ("server.max_in_flight", server.max_in_flight == 0),
        ("server.max_headers", server.max_headers == 0),
        (
            "server.max_header_bytes",
            server.max_header_bytes.bytes() == 0,
        ),
        (
            "server.idle_timeout",
            server.idle_timeout.as_std().is_zero(),
        ),
        (
            "server.send_timeout",
            server.send_timeout.as_std().is_zero(),
        ),
        (
            "server.body_read_timeout",
            server.body_read_timeout.as_std().is_zero(),
        ),
        (
            "server.header_read_timeout",
            server.header_read_timeout.as_std().is_zero(),
        ),
        (
            "server.max_buffered_total",
            server.max_buffered_total.bytes() == 0,
        ),
    ] {
        if zero {
            errs.push(ConfigError::new(key, "must be more than zero"));
        }
    }
    if server.max_headers > 10_000 {
        errs.push(ConfigError::new(
            "server.max_headers",
            "must be at most 10000",
        ));
    }
    if server.max_header_bytes.bytes() > 16 * 1024 * 1024 {
        errs.push(ConfigError::new(
            "server.max_header_bytes",
            "must be at most 16mb",
        ));
    }
    if config.server.workers.is_some_and(|w| w == 0 || w > 1024) {
        errs.push(ConfigError::new(
            "server.workers",
            "must be between 1 and 1024",
        ));
    }
    if let Some(id) = &config.server.instance_id {
        if !is_valid_id(id) {
            errs.push(ConfigError::new(
                "server.instance_id",
                "use 1 to 64 of [A-Za-z0-9_.-]",
            ));
        }
    }
    crate::secret::check_secret(
        &mut errs,
        "cursors.key",
        (
            config.cursors.key_env.as_ref(),
            config.cursors.key_file.as_ref(),
        ),
        32,
        "key",
        false,
    );
    crate::tenancy::validate(config, &mut errs);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errs))
    }
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_diagnostics(d: &crate::Diagnostics, errs: &mut Vec<ConfigError>) {
    crate::secret::check_secret(
        errs,
        "diagnostics.header_key",
        (d.header_key_env.as_ref(), d.header_key_file.as_ref()),
        32,
        "debug header key",
        false,
    );
    if d.explain_capacity == 0 || d.explain_capacity > 100_000 {
        errs.push(ConfigError::new(
            "diagnostics.explain_capacity",
            "must be between 1 and 100000",
        ));
    }
    if d.partition_metrics > 10_000 {
        errs.push(ConfigError::new(
            "diagnostics.partition_metrics",
            "at most 10000 partitions may get their own series",
        ));
    }
    if let Some(url) = &d.otlp_endpoint {
        if let Some(m) = url_problem(url, false) {
            errs.push(ConfigError::new("diagnostics.otlp_endpoint", m));
        }
    }
    if d.service_name.is_empty() {
        errs.push(ConfigError::new(
            "diagnostics.service_name",
            "must not be empty",
        ));
    }
}

fn check_control(control: &crate::Control, errs: &mut Vec<ConfigError>) {
    let Some(etcd) = &control.etcd else {
        if control.backend == crate::ControlBackend::Etcd {
            errs.push(ConfigError::new(
                "control.etcd",
                "backend = \"etcd\" needs etcd = { endpoints = [\"http://127.0.0.1:2379\"] }",
            ));
        }
        return;
    };
    if etcd.endpoints.is_empty() {
        errs.push(ConfigError::new(
            "control.etcd.endpoints",
            "at least one etcd client URL is required, like \"http://127.0.0.1:2379\"",
        ));
    }
    for (i, e) in etcd.endpoints.iter().enumerate() {
        if let Some(m) = url_problem(e, true) {
            errs.push(ConfigError::new(format!("control.etcd.endpoints[{i}]"), m));
        }
    }
    let https = etcd
        .endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if https != 0 && https != etcd.endpoints.len() {
        errs.push(ConfigError::new(
            "control.etcd.endpoints",
            "give every endpoint the same scheme: all https:// or all http://",
        ));
    }
    if etcd.tls.is_some() && https == 0 {
        errs.push(ConfigError::new(
            "control.etcd.tls",
            "tls settings need https:// endpoints",
        ));
    }
    match (&etcd.username, &etcd.password_env, &etcd.password_file) {
        (Some(_), None, None) => errs.push(ConfigError::new(
            "control.etcd.username",
            "an etcd user needs password_env or password_file",
        )),
        (None, Some(_), _) | (None, _, Some(_)) => errs.push(ConfigError::new(
            "control.etcd.username",
            "a password is configured without a username",
        )),
        (Some(_), env, file) => crate::secret::check_secret(
            errs,
            "control.etcd.password",
            (env.as_ref(), file.as_ref()),
            1,
            "password",
            true,
        ),
        (None, None, None) => {}
    }
    let p = &etcd.prefix;
    if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 || p.contains("//") {
        errs.push(ConfigError::new(
            "control.etcd.prefix",
            format!("{p:?} must start and end with '/' and name at least one segment, like \"/osproxy/default/\""),
        ));
    }
    let ttl = etcd.lease_ttl.as_std();
    if ttl < std::time::Duration::from_secs(2) || ttl > std::time::Duration::from_secs(300) {
        errs.push(ConfigError::new(
            "control.etcd.lease_ttl",
            "must be between 2s and 300s (etcd leases count whole seconds)",
        ));
    }
    let pi = etcd.progress_interval.as_std();
    if pi < std::time::Duration::from_millis(50) || pi > std::time::Duration::from_secs(10) {
        errs.push(ConfigError::new(
            "control.etcd.progress_interval",
            "must be between 50ms and 10s",
        ));
    } else if ttl >= std::time::Duration::from_secs(2)
        && etcd.freshness_bound() > etcd.lease_held_for()
    {
        // An instance must notice that it is behind before its lease (and
        // so its place in every migration barrier) can lapse.
        errs.push(ConfigError::new(
            "control.etcd.lease_ttl",
            format!(
                "a lease of {ttl:?} is held for {:?} after each keep-alive, shorter than the freshness bound of {:?} (four progress intervals, at least 2s); raise lease_ttl to at least 3s or lower progress_interval",
                etcd.lease_held_for(),
                etcd.freshness_bound()
            ),
        ));
    }
    if etcd.connect_timeout.as_std().is_zero() {
        errs.push(ConfigError::new(
            "control.etcd.connect_timeout",
            "must be more than zero",
        ));
    }
}

/// What is wrong with an upstream or endpoint URL, if anything.
/// What is wrong with a base URL (`https` allowed where TLS is built).
fn url_problem(url: &str, https: bool) -> Option<String> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("{url:?} is not a URL: {e}")),
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if https => {}
        Some("https") => {
            return Some("https is not supported here by this version yet; use http://".to_string())
        }
        _ if https => return Some(format!("{url:?} must start with http:// or https://")),
        _ => return Some(format!("{url:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Some(format!("{url:?} has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Some(
            "credentials in the url would be sent and logged as the host: use username with password_env or password_file".to_string(),
        );
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Some(format!(
            "{url:?} must not have a path or query: give only scheme, host and port"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::from_str;

    const BASE: &str = "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:9201\"\n";

    fn keys(text: &str, sets: &[&str]) -> Vec<String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        match from_str(text, std::iter::empty(), &sets) {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|e| e.key).collect(),
        }
    }

    #[test]
    fn minimal_config_is_valid() {
        assert!(keys(BASE, &[]).is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        assert_eq!(
            keys(&format!("{BASE}[upstream]\nrequest_timout = \"5s\"\n"), &[]),
            ["upstream.request_timout"]
        );
        assert_eq!(keys(&format!("bogus = 1\n{BASE}"), &[]), ["bogus"]);
    }

    #[test]
    fn wrong_type_is_named() {
        assert_eq!(
            keys(&format!("{BASE}[upstream]\nhttp2 = \"yes\"\n"), &[]),
            ["upstream.http2"]
        );
        assert_eq!(
            keys(
                &format!("{BASE}[upstream]\nrequest_timeout = \"5 parsecs\"\n"),
                &[]
            ),
            ["upstream.request_timeout"]
        );
        assert_eq!(
            keys(&format!("[listen]\ndata = \"nope\"\n{BASE}"), &[]),
            ["listen.data"]
        );
    }

    #[test]
    fn missing_cluster_is_named() {
        assert_eq!(
            keys(&format!("{BASE}[passthrough]\ncluster = \"other\"\n"), &[]),
            ["passthrough.cluster"]
        );
        assert_eq!(
            keys("[passthrough]\ncluster = \"main\"\n", &[]),
            ["clusters", "passthrough.cluster"]
        );
        assert_eq!(
            keys("[[clusters]]\nid = \"main\"\n", &[]),
            ["clusters[0].url"]
        );
    }

    #[test]
    fn bad_url_is_named() {
        for url in [
            "not a url",
            "ftp://x:1",
            "http://x:1/path",
            "https://x:1/path",
        ] {
            let text = format!("[[clusters]]\nid = \"main\"\nurl = \"{url}\"\n");
            assert_eq!(keys(&text, &[]), ["clusters[0].url"], "{url}");
        }
    }

    #[test]
    fn set_errors_are_validated_too() {
        assert_eq!(
            keys(BASE, &["upstream.request_timeout=0s"]),
            ["upstream.request_timeout"]
        );
        // A timeout past a day is a mistake (and would overflow deadlines).
        assert_eq!(
            keys(BASE, &["upstream.request_timeout=9999999999999h"]),
            ["upstream.request_timeout"]
        );
        assert!(keys(BASE, &["upstream.request_timeout=24h"]).is_empty());
        assert_eq!(
            keys(
                BASE,
                &["passthrough.cluster=main", "passthrough.indices=[\"_x\"]"]
            ),
            ["passthrough.indices[0]"]
        );
    }

    #[test]
    fn tls_is_refused_until_built() {
        assert_eq!(keys(&format!("[tls]\ncert = \"a\"\n{BASE}"), &[]), ["tls"]);
    }

    #[test]
    fn duplicate_cluster() {
        let text = format!("{BASE}{BASE}");
        assert_eq!(keys(&text, &[]), ["clusters[1].id"]);
    }
}
