//! `ctl migrate watch` (and `migrate start --wait`): a migration followed
//! until it ends.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use super::{call, CtlArgs, CtlError};

/// Polls the record four times a second. On a terminal one line is redrawn
/// (phase, a bar of copied of total, rate, ETA); otherwise each phase gets
/// one line. Ends with the record's summary; `Err` when it failed or was
/// aborted.
pub(super) async fn run(args: &CtlArgs, index: &str, partition: &str) -> Result<(), CtlError> {
    let tty = std::io::stdout().is_terminal() && !args.json;
    let path = format!("/v1/migrations/{index}/{partition}");
    let started = Instant::now();
    let mut phase = String::new();
    loop {
        let v = call(args, Method::GET, &path, None).await?;
        let now = v["phase"].as_str().unwrap_or("unknown").to_string();
        let copied = v["copied"].as_u64().unwrap_or(0);
        let total = v["total"].as_u64();
        if tty {
            print!(
                "\r\x1b[2K{}",
                progress(&now, copied, total, started.elapsed())
            );
            let _ = std::io::stdout().flush();
        }
        if now != phase {
            if tty {
                println!();
            } else {
                // A phase shorter than a poll (a quick cutover) still gets
                // its line, from what the record says of it.
                let order = ["copying", "cutover", "done"];
                let from = order.iter().position(|p| *p == phase).map_or(0, |i| i + 1);
                let to = order.iter().position(|p| *p == now);
                for skipped in to.map_or(&order[0..0], |t| &order[from.min(t)..t]) {
                    println!("{skipped}: {}", summary(&v));
                }
                println!("{now}: {}", summary(&v));
            }
            phase = now.clone();
        }
        match now.as_str() {
            "done" => {
                if tty {
                    println!("done: {}", summary(&v));
                }
                return Ok(());
            }
            "failed" => {
                return Err(CtlError::Refused(format!(
                    "the migration failed: {}",
                    v["error"].as_str().unwrap_or("no reason recorded")
                )))
            }
            "aborted" => {
                return Err(CtlError::Refused(
                    "the migration was aborted; the partition is at its source".into(),
                ))
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `copying [#######.............]  12,000 / 40,000 docs  2,400/s  ETA 11 s`
fn progress(phase: &str, copied: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = copied as f64 / secs;
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let done = (copied.min(t) as f64 / t as f64 * 20.0) as usize;
            let eta = if rate > 0.0 && copied < t {
                format!("  ETA {:.0} s", (t - copied) as f64 / rate)
            } else {
                String::new()
            };
            format!(
                "{phase:8} [{}{}]  {copied} / {t} docs  {rate:.0}/s{eta}",
                "#".repeat(done),
                ".".repeat(20 - done)
            )
        }
        None => format!("{phase:8} {copied} docs  {rate:.0}/s"),
    }
}

/// What the record says so far, in one line.
fn summary(v: &Value) -> String {
    let n = |k: &str| {
        v[k].as_u64()
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "copied {} of {} (in {} ms), caught up {}, removed {}, verified {}, writes paused {} ms",
        n("copied"),
        n("total"),
        n("copy_ms"),
        n("caught_up"),
        n("removed"),
        n("verified_count"),
        n("cutover_ms")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_the_bar_rate_and_eta() {
        let line = progress("copying", 10, Some(40), Duration::from_secs(2));
        assert_eq!(
            line,
            "copying  [#####...............]  10 / 40 docs  5/s  ETA 6 s"
        );
        assert_eq!(
            progress("cutover", 7, None, Duration::from_secs(1)),
            "cutover  7 docs  7/s"
        );
    }
}
