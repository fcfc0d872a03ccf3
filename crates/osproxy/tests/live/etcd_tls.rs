//! The control plane on an etcd that speaks TLS, verifies client
//! certificates (`--client-cert-auth`) and has authentication enabled with
//! short-lived tokens: a two-instance fleet propagates a change, and a wrong
//! password or an untrusted certificate fails start-up naming the
//! endpoint.

use std::path::Path;
use std::time::Duration;

use osproxy_testkit::{eventually, Etcd, EtcdTls, Http, Issued, ProxyInstance, TestCa};

use crate::common::node;
use crate::control::OPS;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_osproxy"))
}

const PREFIX: &str = "/osproxy/etcdtls/";

fn config(
    i: usize,
    etcd: &Etcd,
    ca: &Path,
    client: &Issued,
    password: &Path,
    ops: &Path,
) -> String {
    format!(
        "[server]\nworkers = 1\ninstance_id = \"etcdtls-{i}\"\n\n\
         [[clusters]]\nid = \"main\"\nurl = \"{}\"\n\n\
         [[principals]]\nname = \"ops\"\ntoken_file = \"{}\"\noperator = true\nany_partition = true\n\n\
         [control]\nbackend = \"etcd\"\n\
         etcd = {{ endpoints = [\"{}\"], prefix = \"{PREFIX}\", lease_ttl = \"3s\", connect_timeout = \"3s\", \
         username = \"osproxy\", password_file = \"{}\", \
         tls = {{ ca_file = \"{}\", client_cert_file = \"{}\", client_key_file = \"{}\" }} }}\n\n\
         [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"etcdtls-shared\" }}\n",
        node().url(),
        ops.display(),
        etcd.endpoint(),
        password.display(),
        ca.display(),
        client.cert.display(),
        client.key.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_on_etcd_with_tls_client_certificates_and_auth_propagates_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "etcd").unwrap();
    let server = ca.issue("etcd-server", "etcd").unwrap();
    let client = ca.issue("etcd-client", "osproxy").unwrap();
    let mut etcd = Etcd::start_tls(EtcdTls {
        server,
        ca: ca.cert.clone(),
        client: client.clone(),
    })
    .unwrap();
    etcd.enable_auth("osproxy", "fleet-pass-0123", PREFIX)
        .unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "fleet-pass-0123\n").unwrap();
    let ops = dir.path().join("ops");
    std::fs::write(&ops, OPS).unwrap();

    let fleet: Vec<ProxyInstance> = (0..2)
        .map(|i| {
            let p = ProxyInstance::start(
                binary(),
                &config(i, &etcd, &ca.cert, &client, &password, &ops),
            )
            .unwrap_or_else(|e| panic!("instance {i}: {e}"));
            p.wait_ready(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
            p
        })
        .collect();
    // Past the 2 s token lifetime, so the tokens have been renewed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let set = format!("{}/v1/placements/orders/acme", fleet[0].admin_url());
    let auth = format!("Bearer {OPS}");
    let body = r#"{"kind":"index","cluster":"main","index":"etcdtls-acme"}"#;
    let http = Http::new();
    let r = http
        .send_with(
            http::Method::PUT,
            &set,
            Some(body.into()),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
        )
        .await
        .unwrap();
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    eventually(
        "the change reached the other instance",
        Duration::from_secs(3),
        || async {
            let r = http
                .send_with(
                    http::Method::GET,
                    &format!("{}/v1/placements/orders/acme", fleet[1].admin_url()),
                    None,
                    &[("authorization", auth.as_str())],
                )
                .await
                .unwrap();
            r.json()["placement"]["index"] == "etcdtls-acme"
        },
    )
    .await;
    // The keys really are in the secured store.
    let keys = etcd
        .etcdctl(&["get", "--prefix", "--keys-only", PREFIX])
        .unwrap();
    assert!(keys.contains("placements/orders/acme"), "{keys}");

    // A wrong password, and a client certificate from a CA etcd does not
    // trust: start-up fails, naming the endpoint.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let stranger_ca = TestCa::new(dir.path(), "stranger").unwrap();
    let stranger = stranger_ca.issue("stranger-client", "osproxy").unwrap();
    for (what, text) in [
        (
            "a wrong password",
            config(2, &etcd, &ca.cert, &client, &wrong, &ops),
        ),
        (
            "an untrusted client certificate",
            config(3, &etcd, &ca.cert, &stranger, &password, &ops),
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {err}");
        assert!(err.contains(&etcd.endpoint()), "{what}: {err}");
    }
}
