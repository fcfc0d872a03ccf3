//! A real OpenSearch node, started by `scripts/opensearch-node`: plain
//! (2.19.6, cleartext, no auth), or secured (2.19.4 with the real security
//! plugin: HTTPS and an internal user with basic auth).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::http::get_blocking;
use crate::process::{free_port, repo_root, spawn, stop, tail, wait_until};
use crate::tls::TestCa;

/// How long a node may take to become yellow (cold JVM on a loaded 2-core box).
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// The internal user of a secured node, and its password. Test-only
/// credentials: the node's `internal_users.yml` holds [`SECURED_HASH`].
pub const SECURED_USER: &str = "osproxy";
/// See [`SECURED_USER`].
pub const SECURED_PASSWORD: &str = "osproxy-test-Pass-1";
/// The bcrypt hash of [`SECURED_PASSWORD`], made once with the security
/// plugin's own `org.opensearch.security.tools.Hasher`.
const SECURED_HASH: &str = "$2y$12$sckvOUQGYbHFAsOi2i.23ODrFW3QNml5I2yf2wQvgX8M4LLB.l7y2";

/// A single-node OpenSearch cluster on loopback, stopped on drop.
#[derive(Debug)]
pub struct OpenSearchNode {
    child: Mutex<Child>,
    port: u16,
    log: PathBuf,
    /// Set on a secured node: the CA its HTTPS certificate chains to.
    ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl OpenSearchNode {
    /// Builds the launcher if needed, starts a node on a free port with a
    /// fresh data dir and waits until it is yellow.
    pub fn start() -> Result<OpenSearchNode, String> {
        OpenSearchNode::launch(Variant::Plain)
    }

    /// Like [`OpenSearchNode::start`], on OpenSearch 3.x (3.9.0; the
    /// launcher finds a Java 21+ JDK, see `scripts/opensearch-node`).
    pub fn start_os3() -> Result<OpenSearchNode, String> {
        OpenSearchNode::launch(Variant::Os3)
    }

    /// Like [`OpenSearchNode::start`], on OpenSearch 2.19.4 with the real
    /// security plugin (Maven Central's `opensearch-security` 2.19.4.0):
    /// HTTPS only, with a certificate from a CA of its own ([`Self::ca`]),
    /// TLS on the transport too, and one internal user, [`SECURED_USER`] /
    /// [`SECURED_PASSWORD`], mapped to `all_access`. Anonymous requests get
    /// 401. Waits until the security index is initialised and the cluster
    /// answers that user.
    pub fn start_secured() -> Result<OpenSearchNode, String> {
        OpenSearchNode::launch(Variant::Secured)
    }

    /// Starts a node; again on another port when the one chosen was taken
    /// before the JVM bound it (a port is free when it is chosen, and the
    /// JVM binds it seconds later: another process, or an outgoing
    /// connection's ephemeral port, can take it meanwhile).
    fn launch(variant: Variant) -> Result<OpenSearchNode, String> {
        let mut attempt = 1;
        loop {
            match OpenSearchNode::launch_once(variant) {
                Err(e) if attempt < 3 && e.contains("Address already in use") => {
                    eprintln!("opensearch test node: its port was taken before it bound it; starting again on another ({attempt})");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn launch_once(variant: Variant) -> Result<OpenSearchNode, String> {
        crate::bound_test_binary();
        build_launcher(variant)?;
        let secured = variant == Variant::Secured;
        let dir = tempfile::Builder::new()
            .prefix("osproxy-opensearch-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let log = dir.path().join("node.log");
        let home = dir.path().join("node");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(repo_root().join("scripts/opensearch-node"));
        if let Some(flag) = variant.flag() {
            cmd.arg(flag);
        }
        let ca = if secured {
            Some(secure_home(dir.path(), &home)?)
        } else {
            None
        };
        cmd.arg("--http-port")
            .arg(port.to_string())
            .arg("--data")
            .arg(&home);
        if secured {
            for setting in SECURITY_SETTINGS {
                cmd.arg("-E").arg(setting);
            }
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn(cmd)?;
        let node = OpenSearchNode {
            child: Mutex::new(child),
            port,
            log,
            ca,
            _dir: dir,
        };
        let addr = node.addr();
        // A node that exited will not start: the wait ends there, with why.
        let mut exited = None;
        wait_until(
            &format!("OpenSearch on {addr} reaching yellow"),
            START_TIMEOUT,
            || {
                if let Ok(mut c) = node.child.lock() {
                    if let Ok(Some(status)) = c.try_wait() {
                        exited = Some(format!(
                            "OpenSearch on {addr} did not start: node exited with {status}; log tail:\n{}",
                            tail(&node.log, 30)
                        ));
                        return Ok(());
                    }
                }
                let health = "/_cluster/health?wait_for_status=yellow&timeout=1s";
                match &node.ca {
                    None => match get_blocking(&addr, health)? {
                        (200, _) => Ok(()),
                        (s, body) => Err(format!("health answered {s}: {body}")),
                    },
                    Some(ca) => secured_get(&node.url(), ca, health),
                }
            },
        )
        .map_err(|e| format!("{e}\nlog: {}", node.log.display()))?;
        if let Some(why) = exited {
            return Err(format!("{why}\nlog: {}", node.log.display()));
        }
        Ok(node)
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a secured node.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// A secured node's CA certificate (PEM), which its HTTPS certificate
    /// (for `127.0.0.1` and `localhost`) chains to; `None` on a plain node.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
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
    shared(Variant::Plain)
}

/// Like [`shared_opensearch`], an OpenSearch 3.x node (for the
/// compatibility test binary).
pub fn shared_opensearch3() -> Result<&'static OpenSearchNode, String> {
    shared(Variant::Os3)
}

/// The shared node of each variant that has one.
static SHARED: [OnceLock<Result<OpenSearchNode, String>>; 3] =
    [OnceLock::new(), OnceLock::new(), OnceLock::new()];

fn shared(variant: Variant) -> Result<&'static OpenSearchNode, String> {
    let node = SHARED[variant as usize].get_or_init(|| {
        let node = OpenSearchNode::launch(variant)?;
        register_exit_hook();
        Ok(node)
    });
    node.as_ref().map_err(Clone::clone)
}

fn register_exit_hook() {
    extern "C" fn stop_shared() {
        // Runs once at process exit: every shared node started by then.
        for slot in &SHARED {
            if let Some(Ok(node)) = slot.get() {
                if let Ok(mut c) = node.child.lock() {
                    stop(&mut c, Duration::from_secs(30));
                }
                let _ = std::fs::remove_dir_all(node._dir.path());
            }
        }
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registering a plain extern "C" function, once.
        unsafe {
            libc::atexit(stop_shared);
        }
    });
}

/// Node settings of a secured node (files relative to its config directory,
/// which [`secure_home`] fills).
const SECURITY_SETTINGS: &[&str] = &[
    "plugins.security.ssl.transport.pemcert_filepath=node.pem",
    "plugins.security.ssl.transport.pemkey_filepath=node.key",
    "plugins.security.ssl.transport.pemtrustedcas_filepath=ca.pem",
    "plugins.security.ssl.transport.enforce_hostname_verification=false",
    "plugins.security.ssl.http.enabled=true",
    "plugins.security.ssl.http.pemcert_filepath=node.pem",
    "plugins.security.ssl.http.pemkey_filepath=node.key",
    "plugins.security.ssl.http.pemtrustedcas_filepath=ca.pem",
    // Loads config/opensearch-security/*.yml into the security index on the first start.
    "plugins.security.allow_default_init_securityindex=true",
    "plugins.security.nodes_dn=CN=node",
    // No certificate is issued for this name: nobody is the super-admin.
    "plugins.security.authcz.admin_dn=CN=no-such-admin",
    "plugins.security.audit.type=noop",
    "plugins.security.system_indices.enabled=true",
];

/// Writes a secured node's config directory under `home`: a CA of its own
/// (in `dir`), the node's certificate, the plugin's default security
/// configuration with [`SECURED_USER`] as the only internal user. Returns
/// the CA certificate's path.
fn secure_home(dir: &Path, home: &Path) -> Result<PathBuf, String> {
    let config = home.join("config");
    let security = config.join("opensearch-security");
    std::fs::create_dir_all(&security).map_err(|e| e.to_string())?;
    let ca = TestCa::new(dir, "opensearch")?;
    let node = ca.issue("node", "node")?;
    let copy = |from: &Path, to: &str| {
        std::fs::copy(from, config.join(to))
            .map(|_| ())
            .map_err(|e| format!("copying {}: {e}", from.display()))
    };
    copy(&node.cert, "node.pem")?;
    copy(&node.key, "node.key")?;
    copy(&ca.cert, "ca.pem")?;
    let defaults = repo_root().join("tools/opensearch-node/target-security/security-plugin/config");
    let entries = std::fs::read_dir(&defaults).map_err(|e| {
        format!(
            "reading the security plugin's config {}: {e}",
            defaults.display()
        )
    })?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".yml") && name != "internal_users.yml" {
            std::fs::copy(&path, security.join(name)).map_err(|e| e.to_string())?;
        }
    }
    // backend role `admin` is mapped to all_access by the default roles_mapping.yml.
    let users = format!(
        "---\n_meta:\n  type: \"internalusers\"\n  config_version: 2\n\
         {SECURED_USER}:\n  hash: \"{SECURED_HASH}\"\n  reserved: false\n  backend_roles:\n  - \"admin\"\n"
    );
    std::fs::write(security.join("internal_users.yml"), users).map_err(|e| e.to_string())?;
    Ok(ca.cert.clone())
}

/// GET `path` from a secured node as [`SECURED_USER`] (with curl): Ok on 200.
fn secured_get(url: &str, ca: &Path, path: &str) -> Result<(), String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("-u")
        .arg(format!("{SECURED_USER}:{SECURED_PASSWORD}"))
        .arg(format!("{url}{path}"))
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if code == "200" {
        Ok(())
    } else {
        Err(format!(
            "health answered {code} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Which OpenSearch a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// 2.19.6, plain HTTP.
    Plain,
    /// 2.19.4 with the security plugin.
    Secured,
    /// 3.9.0, plain HTTP.
    Os3,
}

impl Variant {
    /// The launcher's flag for this variant.
    fn flag(self) -> Option<&'static str> {
        match self {
            Variant::Plain => None,
            Variant::Secured => Some("--security"),
            Variant::Os3 => Some("--os3"),
        }
    }
}

/// Builds a variant of the Java launcher once per process (Maven; a no-op
/// when built).
fn build_launcher(variant: Variant) -> Result<(), String> {
    static BUILT: [OnceLock<Result<(), String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    BUILT[variant as usize]
        .get_or_init(|| {
            let mut cmd = Command::new(repo_root().join("scripts/opensearch-node"));
            if let Some(flag) = variant.flag() {
                cmd.arg(flag);
            }
            let out = cmd
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
