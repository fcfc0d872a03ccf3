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

/// A benchmark's run length from the environment: seconds per cell
/// (`OSPROXY_BENCH_SECONDS`, else `default_seconds`) and rounds
/// (`OSPROXY_BENCH_ROUNDS`, else 4).
pub fn bench_settings(default_seconds: u64) -> (u64, usize) {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seconds = var("OSPROXY_BENCH_SECONDS").unwrap_or(default_seconds);
    let rounds = var("OSPROXY_BENCH_ROUNDS")
        .and_then(|r| usize::try_from(r).ok())
        .unwrap_or(4);
    (seconds, rounds)
}

/// A wrk script in `dir` that POSTs a one-hit `match_all` search.
pub fn search_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("search.lua");
    let body = "wrk.method = \"POST\"\nwrk.body = '{\"query\":{\"match_all\":{}},\"size\":1}'\nwrk.headers[\"content-type\"] = \"application/json\"\n";
    // A benchmark's scratch directory: writing cannot reasonably fail.
    let _ = std::fs::write(&script, body);
    script
}

/// The mean requests per second of each of `bases` on `path`, measured in
/// `rounds` rounds that alternate between them (so drift on the machine
/// falls on all alike).
pub fn alternating(
    bases: &[String],
    path: &str,
    seconds: u64,
    rounds: usize,
    token: &str,
    script: Option<&Path>,
) -> Result<Vec<f64>, String> {
    let mut sums = vec![0.0f64; bases.len()];
    for _ in 0..rounds {
        for (i, base) in bases.iter().enumerate() {
            sums[i] += wrk_rps(&format!("{base}{path}"), seconds, token, script)?;
        }
    }
    Ok(sums.into_iter().map(|s| s / rounds.max(1) as f64).collect())
}
