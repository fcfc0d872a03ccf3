//! A real etcd (Debian's `etcd-server`) on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::get_blocking;
use crate::process::{free_port, spawn, stop, tail, wait_until};

/// A single-member etcd with a temporary data dir, stopped on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    client_port: u16,
    peer_port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
    /// With TLS on the client port: its files, and the client certificate
    /// etcdctl presents.
    tls: Option<EtcdTls>,
    /// `user:password` etcdctl authenticates with once auth is enabled.
    root: Option<String>,
}

/// The certificates of an etcd that speaks TLS and verifies clients
/// (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The server's certificate and key.
    pub server: crate::Issued,
    /// The CA clients' certificates are verified against.
    pub ca: PathBuf,
    /// A client certificate etcdctl presents.
    pub client: crate::Issued,
}

fn launch(
    dir: &Path,
    client_port: u16,
    peer_port: u16,
    log: &Path,
    tls: Option<&EtcdTls>,
) -> Result<Child, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(etcd_binary());
    if let Some(t) = tls {
        cmd.arg("--cert-file")
            .arg(&t.server.cert)
            .arg("--key-file")
            .arg(&t.server.key)
            .arg("--trusted-ca-file")
            .arg(&t.ca)
            .arg("--client-cert-auth")
            // Short-lived auth tokens, so that their renewal is exercised.
            .args(["--auth-token-ttl", "2"]);
    }
    cmd.args(["--name", "osproxy-test", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("osproxy-test={peer}")])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    spawn(cmd)
}

impl Etcd {
    /// Starts etcd and waits until `/health` says it is healthy.
    pub fn start() -> Result<Etcd, String> {
        Self::launch_with(None)
    }

    /// Starts etcd speaking TLS on its client port and requiring client
    /// certificates signed by `tls.ca`.
    pub fn start_tls(tls: EtcdTls) -> Result<Etcd, String> {
        Self::launch_with(Some(tls))
    }

    fn launch_with(tls: Option<EtcdTls>) -> Result<Etcd, String> {
        crate::bound_test_binary();
        let dir = tempfile::Builder::new()
            .prefix("osproxy-etcd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let log = dir.path().join("etcd.log");
        let child = launch(dir.path(), client_port, peer_port, &log, tls.as_ref())?;
        let mut etcd = Etcd {
            child,
            client_port,
            peer_port,
            log,
            dir,
            tls,
            root: None,
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    /// Turns on etcd's authentication: a `root` user (for etcdctl from
    /// here on) and `user` with `password`, allowed to read and write
    /// everything under `prefix`.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) -> Result<(), String> {
        for args in [
            vec!["user", "add", "root:root-pass-0123"],
            vec!["role", "add", "root"],
            vec!["user", "grant-role", "root", "root"],
            vec!["user", "add", &format!("{user}:{password}")],
            vec!["role", "add", "fleet"],
            vec![
                "role",
                "grant-permission",
                "fleet",
                "--prefix=true",
                "readwrite",
                prefix,
            ],
            vec!["user", "grant-role", user, "fleet"],
            vec!["auth", "enable"],
        ] {
            self.etcdctl(&args)?;
        }
        self.root = Some("root:root-pass-0123".to_string());
        Ok(())
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let addr = self.addr();
        let result = wait_until(
            &format!("etcd on {addr} reporting healthy"),
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!(
                        "etcd exited with {status}; log tail:\n{}",
                        tail(&self.log, 20)
                    ));
                }
                if self.tls.is_some() {
                    return self.etcdctl(&["endpoint", "health"]).map(|_| ());
                }
                match get_blocking(&addr, "/health")? {
                    (200, body) if body.contains("true") => Ok(()),
                    (s, body) => Err(format!("/health answered {s}: {body}")),
                }
            },
        );
        if result.is_err() {
            stop(&mut self.child, Duration::from_secs(5));
        }
        result
    }

    /// Stops etcd (SIGTERM), keeping its data and ports for
    /// [`Etcd::restart`].
    pub fn stop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }

    /// Starts etcd again on the same ports and data, and waits until healthy.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.child = launch(
            self.dir.path(),
            self.client_port,
            self.peer_port,
            &self.log,
            self.tls.as_ref(),
        )?;
        self.wait_healthy()
    }

    /// Runs `etcdctl` (API v3) against this member; stdout on success.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(etcdctl_binary());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()));
        if let Some(t) = &self.tls {
            cmd.arg("--cacert")
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client.cert)
                .arg("--key")
                .arg(&t.client.key);
        }
        if let Some(root) = &self.root {
            cmd.arg(format!("--user={root}"));
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run etcdctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "etcdctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> Result<u64, String> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("etcdctl status: {e}: {out}"))?;
        v.pointer("/0/Status/header/revision")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("no revision in {out}"))
    }

    /// `127.0.0.1:PORT` of the client API.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS) of the client API.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}

fn etcd_binary() -> String {
    std::env::var("OSPROXY_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

fn etcdctl_binary() -> String {
    std::env::var("OSPROXY_ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_string())
}
