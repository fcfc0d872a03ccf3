//! A real osproxy instance: the project's binary with a generated config.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::http::get_blocking;
use crate::process::{signal, spawn, stop, tail, wait_for_exit, wait_until};

/// An osproxy process, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct ProxyInstance {
    child: Child,
    data: String,
    admin: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyInstance {
    /// Starts `binary serve --config <generated>` where the config is
    /// `config_toml` (listen addresses default to free loopback ports), and
    /// waits for it to listen. It does not wait for readiness: see
    /// [`ProxyInstance::wait_ready`].
    pub fn start(binary: &Path, config_toml: &str) -> Result<ProxyInstance, String> {
        crate::bound_test_binary();
        let dir = tempfile::Builder::new()
            .prefix("osproxy-instance-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let config = dir.path().join("osproxy.toml");
        let text = if config_toml.contains("[listen]") {
            config_toml.to_string()
        } else {
            format!("[listen]\ndata = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n{config_toml}")
        };
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = dir.path().join("osproxy.log");
        let err = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err);
        let mut child = spawn(cmd)?;

        // The first stdout line names the bound addresses.
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        let out_path = dir.path().join("osproxy.out");
        let mut out_file = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            use std::io::Write;
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining (so the child never blocks on a full pipe) into
            // a file a test can read.
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(out_file, "{line}");
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            other => {
                stop(&mut child, Duration::from_secs(5));
                return Err(format!(
                    "osproxy did not start listening ({other:?}); log tail:\n{}",
                    tail(&log, 30)
                ));
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
                .ok_or_else(|| format!("unexpected first line from osproxy: {line}"))
        };
        let data = field("data=")?;
        let admin = field("admin=")?;
        Ok(ProxyInstance {
            child,
            data,
            admin,
            log,
            _dir: dir,
        })
    }

    /// What the process wrote to stdout after its first line.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("osproxy.out")).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        wait_until(
            &format!("osproxy {} becoming ready", self.admin),
            timeout,
            || match get_blocking(&self.admin, "/readyz")? {
                (200, _) => Ok(()),
                (s, body) => Err(format!("/readyz answered {s}: {body}")),
            },
        )
    }

    /// `http://127.0.0.1:PORT` of the data listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.data)
    }

    /// `127.0.0.1:PORT` of the data listener.
    pub fn data_addr(&self) -> &str {
        &self.data
    }

    /// `http://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a drain) without waiting.
    pub fn sigterm(&self) {
        signal(&self.child, libc::SIGTERM);
    }

    /// Sends a signal (SIGKILL, SIGSTOP, SIGCONT, ...) without waiting.
    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for_exit(&mut self.child, timeout)
    }

    /// Resident set size in KiB, and its peak (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self) -> Result<(u64, u64), String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .map_err(|e| e.to_string())?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("no {name} in /proc status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The instance's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxyInstance {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}
