//! A real etcd (Debian's `etcd-server`) on free loopback ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http::get_blocking;
use crate::process::{free_port, spawn, stop, tail, wait_until};

/// A single-member etcd with a temporary data dir, stopped on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    client_port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until `/health` says it is healthy.
    pub fn start() -> Result<Etcd, String> {
        let dir = tempfile::Builder::new()
            .prefix("osproxy-etcd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let log = dir.path().join("etcd.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(etcd_binary());
        cmd.args(["--name", "osproxy-test", "--data-dir"])
            .arg(dir.path().join("data"))
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
        let child = spawn(cmd)?;
        let mut etcd = Etcd {
            child,
            client_port,
            log,
            dir,
        };
        let addr = etcd.addr();
        let result = wait_until(
            &format!("etcd on {addr} reporting healthy"),
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = etcd.child.try_wait() {
                    return Err(format!(
                        "etcd exited with {status}; log tail:\n{}",
                        tail(&etcd.log, 20)
                    ));
                }
                match get_blocking(&addr, "/health")? {
                    (200, body) if body.contains("true") => Ok(()),
                    (s, body) => Err(format!("/health answered {s}: {body}")),
                }
            },
        );
        if let Err(e) = result {
            stop(&mut etcd.child, Duration::from_secs(5));
            return Err(e);
        }
        Ok(etcd)
    }

    /// `127.0.0.1:PORT` of the client API.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT` of the client API.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
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
