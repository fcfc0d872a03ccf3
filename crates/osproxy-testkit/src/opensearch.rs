//! A real OpenSearch node, started by `scripts/opensearch-node`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::http::get_blocking;
use crate::process::{free_port, repo_root, spawn, stop, tail, wait_until};

/// How long a node may take to become yellow (cold JVM on a loaded 2-core box).
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// A single-node OpenSearch cluster on loopback, stopped on drop.
#[derive(Debug)]
pub struct OpenSearchNode {
    child: Mutex<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OpenSearchNode {
    /// Builds the launcher if needed, starts a node on a free port with a
    /// fresh data dir and waits until it is yellow.
    pub fn start() -> Result<OpenSearchNode, String> {
        crate::bound_test_binary();
        build_launcher()?;
        let dir = tempfile::Builder::new()
            .prefix("osproxy-opensearch-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let log = dir.path().join("node.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(repo_root().join("scripts/opensearch-node"));
        cmd.arg("--http-port")
            .arg(port.to_string())
            .arg("--data")
            .arg(dir.path().join("node"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn(cmd)?;
        let node = OpenSearchNode {
            child: Mutex::new(child),
            port,
            log,
            _dir: dir,
        };
        let addr = node.addr();
        wait_until(
            &format!("OpenSearch on {addr} reaching yellow"),
            START_TIMEOUT,
            || {
                if let Ok(mut c) = node.child.lock() {
                    if let Ok(Some(status)) = c.try_wait() {
                        return Err(format!(
                            "node exited with {status}; log tail:\n{}",
                            tail(&node.log, 30)
                        ));
                    }
                }
                match get_blocking(&addr, "/_cluster/health?wait_for_status=yellow&timeout=1s")? {
                    (200, _) => Ok(()),
                    (s, body) => Err(format!("health answered {s}: {body}")),
                }
            },
        )
        .map_err(|e| format!("{e}\nlog: {}", node.log.display()))?;
        Ok(node)
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The node's OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok().map(|c| c.id())
    }
}

impl Drop for OpenSearchNode {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            stop(&mut c, Duration::from_secs(30));
        }
    }
}

/// One node shared by every test of a test binary, started on first use.
/// It is stopped when the test process exits: statics are never dropped, so
/// an exit hook stops it (and the parent-death signal covers crashes).
pub fn shared_opensearch() -> Result<&'static OpenSearchNode, String> {
    static NODE: OnceLock<Result<OpenSearchNode, String>> = OnceLock::new();
    let node = NODE.get_or_init(|| {
        let node = OpenSearchNode::start()?;
        register_exit_hook();
        Ok(node)
    });
    node.as_ref().map_err(Clone::clone)
}

fn register_exit_hook() {
    extern "C" fn stop_shared() {
        // Runs once at process exit; the OnceLock is initialised by then.
        if let Ok(node) = shared_opensearch() {
            if let Ok(mut c) = node.child.lock() {
                stop(&mut c, Duration::from_secs(30));
            }
            let _ = std::fs::remove_dir_all(node._dir.path());
        }
    }
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(stop_shared);
    }
}

/// Builds the Java launcher once per process (Maven; a no-op when built).
fn build_launcher() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(repo_root().join("scripts/opensearch-node"))
                .arg("--build-only")
                .output()
                .map_err(|e| format!("cannot run scripts/opensearch-node: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "building the OpenSearch launcher failed ({}):\n{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}
