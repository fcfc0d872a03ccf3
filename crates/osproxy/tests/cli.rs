//! The command line: `check`, `--help`, `--version`, and exit code 2 with
//! the key named for every kind of broken config.

// Test code: failing loudly is the point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn osproxy(args: &[&str], config: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("osproxy.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osproxy"));
    cmd.args(args);
    if let Some(text) = config {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        cmd.arg("--config").arg(&path);
    }
    cmd.env_remove("OSPROXY_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

const VALID: &str = "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:9201\"\n[passthrough]\ncluster = \"main\"\n";

#[test]
fn valid_config_checks_ok() {
    let out = osproxy(&["check"], Some(VALID));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn broken_configs_exit_2_naming_the_key() {
    let cases = [
        ("unknown key", format!("{VALID}[upstream]\nrequest_timout = \"5s\"\n"), "upstream.request_timout"),
        ("unknown section", format!("{VALID}[bogus]\nx = 1\n"), "bogus"),
        ("wrong type", format!("{VALID}[upstream]\nhttp2 = \"yes\"\n"), "upstream.http2"),
        ("bad duration", format!("{VALID}[server]\ndrain_timeout = 30\n"), "server.drain_timeout"),
        ("missing cluster", "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:9201\"\n[passthrough]\ncluster = \"other\"\n".to_string(), "passthrough.cluster"),
        ("no clusters at all", "[passthrough]\ncluster = \"main\"\n".to_string(), "clusters"),
        ("missing url", "[[clusters]]\nid = \"main\"\n".to_string(), "clusters[0].url"),
        ("bad url", "[[clusters]]\nid = \"main\"\nurl = \"127.0.0.1 9201\"\n".to_string(), "clusters[0].url"),
        ("url with a path", "[[clusters]]\nid = \"main\"\nurl = \"http://h:1/x\"\n".to_string(), "clusters[0].url"),
        ("bad listen address", format!("[listen]\ndata = \"localhost\"\n{VALID}"), "listen.data"),
        ("unset password env", "[[clusters]]\nid = \"main\"\nurl = \"http://h:1\"\nusername = \"u\"\npassword_env = \"OSPROXY_TEST_SURELY_UNSET\"\n".to_string(), "clusters[0].password_env"),
        ("not toml", "[[clusters]\n".to_string(), "not valid TOML"),
        ("bad log filter", format!("{VALID}[log]\nlevel = \"info,[[\"\n"), "log.level"),
        ("bad log format", format!("{VALID}[log]\nformat = \"xml\"\n"), "log.format"),
        ("zero workers", format!("{VALID}[server]\nworkers = 0\n"), "server.workers"),
        ("etcd backend without etcd", format!("{VALID}[control]\nbackend = \"etcd\"\n"), "control.etcd"),
        ("unknown backend", format!("{VALID}[control]\nbackend = \"zookeeper\"\n"), "control.backend"),
        ("no etcd endpoints", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [] }}\n"), "control.etcd.endpoints"),
        ("tls on http etcd", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://e:2379\"], tls = {{ ca_file = \"x\" }} }}\n"), "control.etcd.tls"),
        ("mixed etcd schemes", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://e:2379\", \"https://f:2379\"] }}\n"), "control.etcd.endpoints"),
        ("etcd user without password", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://e:2379\"], username = \"u\" }}\n"), "control.etcd.username"),
        ("sigv4 with basic auth", VALID.replace("url = \"http://127.0.0.1:9201\"", "url = \"http://127.0.0.1:9201\"\nusername = \"u\"\npassword_env = \"HOME\"\nsigv4 = { region = \"eu-west-1\", service = \"es\" }"), "clusters[0].sigv4"),
        ("bad prefix", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://e:2379\"], prefix = \"osproxy\" }}\n"), "control.etcd.prefix"),
        ("short lease", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://e:2379\"], lease_ttl = \"500ms\" }}\n"), "control.etcd.lease_ttl"),
        ("unknown etcd key", format!("{VALID}[control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://e:2379\"], password = \"x\" }}\n"), "password"),
    ];
    for (what, text, key) in cases {
        let out = osproxy(&["check"], Some(&text));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(key),
            "{what}: message does not name {key:?}: {stderr}"
        );
    }
}

#[test]
fn the_example_configs_check_ok() {
    for example in ["osproxy.toml", "fleet.toml"] {
        let path = format!("{}/../../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(env!("CARGO_BIN_EXE_osproxy"))
            .args(["check", "--config", &path])
            .env("ACME_TOKEN", "acme-token-0123456789")
            .env("GLOBEX_TOKEN", "globex-token-0123456789")
            .env("OPS_TOKEN", "ops-token-0123456789")
            .env("CURSOR_KEY", "a-fleet-cursor-key-of-32-characters-at-least")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn serve_refuses_a_broken_config_before_listening() {
    let out = osproxy(
        &["serve"],
        Some(&format!("{VALID}[upstream]\nrequest_timeout = \"soon\"\n")),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.request_timeout"));
    assert!(
        out.stdout.is_empty(),
        "nothing may listen before the config is valid"
    );
}

#[test]
fn set_flags_and_env_override_the_file() {
    let out = osproxy(
        &["check", "--set", "upstream.request_timeout=nope"],
        Some(VALID),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.request_timeout"));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, VALID).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_osproxy"))
        .args(["check", "--config"])
        .arg(&path)
        .env("OSPROXY_PASSTHROUGH__CLUSTER", "elsewhere")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("passthrough.cluster"));
    // The flag wins over the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_osproxy"))
        .args(["check", "--set", "passthrough.cluster=main", "--config"])
        .arg(&path)
        .env("OSPROXY_PASSTHROUGH__CLUSTER", "elsewhere")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_defaults_to_the_environment_variable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, VALID).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_osproxy"))
        .arg("check")
        .env("OSPROXY_CONFIG", &path)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_and_version() {
    let out = osproxy(&["--version"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = osproxy(&["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("check"), "{help}");
}
