//! Load for benchmarks: `wrk` (Debian's; scripts/setup installs it).

use std::path::Path;
use std::process::Command;

/// Requests per second `wrk -t2 -c16` reaches against `url` for `seconds`,
/// with `Authorization: Bearer <token>` and an optional Lua script (for
/// methods and bodies). Fails on any non-2xx/3xx answer.
pub fn wrk_rps(url: &str, seconds: u64, token: &str, script: Option<&Path>) -> Result<f64, String> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c16", &format!("-d{seconds}s")])
        .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk (scripts/setup installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        return Err(format!("{url} answered errors: {text}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no rate in wrk output: {text}"))
}
