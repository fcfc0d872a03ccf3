//! The osproxy binary: parses the command line, loads the config, and runs
//! the instance the library builds ([`osproxy::Instance`]) until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use osproxy_config::{Config, LogFormat};
use tracing::warn;

mod ctl;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's runtime options, from the C library the `mimalloc` crate
// links (version 3 by default; the index is the same in version 2's
// `mi_option_e`, and a unit test checks it reads the documented default).
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn getenv(name: *const std::ffi::c_char) -> *mut std::ffi::c_char;
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}
/// `mi_option_purge_delay`: milliseconds before memory given back to
/// mimalloc's arenas is returned to the OS (1000 by default in version 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
/// The delay osproxy sets.
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// `mi_option_arena_eager_commit`: whether an arena's memory is committed
/// when it is reserved (2 by default: on systems that overcommit, Linux).
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;

/// Arena memory is committed as it is used, not when the arena is
/// reserved: eagerly committed, the first arena made about 10 MiB of an
/// idle instance's 11 MiB of anonymous memory resident (idle RSS 22 MiB;
/// 12 MiB with this). An operator's own `MIMALLOC_ARENA_EAGER_COMMIT` is
/// left as set. Set before `main`: the first arena is reserved by the
/// runtime's first allocation, before `main` runs.
extern "C" fn commit_arenas_lazily() {
    // Read without allocating: nothing may reach the allocator first.
    // SAFETY: a NUL-terminated name; the environment is not being changed
    // (no other thread exists yet).
    if !unsafe { getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()) }.is_null() {
        return;
    }
    // SAFETY: sets an integer option of the linked allocator; called once,
    // before any other thread exists.
    unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

/// Run by the loader with the process's other constructors, before the
/// Rust runtime allocates anything (Linux's `.init_array`).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static COMMIT_ARENAS_LAZILY: extern "C" fn() = commit_arenas_lazily;

/// Memory freed to mimalloc's arenas (a request body read whole, its
/// parse, its rewritten copy) is given back to the OS after 10 ms rather
/// than mimalloc's default second: a burst of large requests refused by
/// `server.max_buffered_total` would otherwise stay committed beside the
/// next ones', and the budget would no longer bound the process's memory
/// (32 bodies of 99 MiB at once peaked at +523 and +541 MiB with the
/// default, +283 to +351 MiB with 10 ms). Short enough for that, long
/// enough that pages freed and reused at once on the request path are not
/// given back and faulted in again. An operator's own `MIMALLOC_PURGE_DELAY`
/// or `MIMALLOC_ARENA_PURGE_MULT` is left as set.
fn return_freed_memory_soon() {
    if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_ARENA_PURGE_MULT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return;
    }
    // SAFETY: sets an integer option of the linked allocator; called once,
    // before any other thread exists.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Exit code for an invalid configuration.
const EXIT_INVALID_CONFIG: u8 = 2;
/// The exit status after a second stop signal cut the drain short (128 +
/// SIGTERM, as a shell reports a process killed by it).
const EXIT_SECOND_SIGNAL: i32 = 143;

#[derive(Parser, Debug)]
#[command(
    name = "osproxy",
    version,
    about = "A tenant-aware routing proxy for OpenSearch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a proxy instance.
    Serve(ConfigArgs),
    /// Validate a config and exit: 0 when valid, 2 when not.
    Check(ConfigArgs),
    /// Operate a running instance through its admin API.
    Ctl(ctl::CtlArgs),
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// The TOML config file [default: $OSPROXY_CONFIG, then ./osproxy.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one key, like `--set upstream.request_timeout=5s`; wins over
    /// the file and over OSPROXY_<SECTION>__<KEY> environment variables.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, ExitCode> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(osproxy_config::default_path);
        let config = osproxy_config::load(&path, std::env::vars(), &self.sets).map_err(|errs| {
            eprintln!("{}: {errs}", path.display());
            ExitCode::from(EXIT_INVALID_CONFIG)
        })?;
        // The filter syntax belongs to the logging library, so it is checked here.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
            eprintln!("{}: invalid config: log.level: {e}", path.display());
            return Err(ExitCode::from(EXIT_INVALID_CONFIG));
        }
        // Certificates, keys and trust roots, loaded as serve loads them.
        if let Err(e) = osproxy::check_tls(&config) {
            eprintln!("{}: invalid config: {e}", path.display());
            return Err(ExitCode::from(EXIT_INVALID_CONFIG));
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    return_freed_memory_soon();
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl(args) => ctl::run(args),
        Command::Check(args) => match args.load() {
            Ok(_) => {
                println!("config ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve(args) => {
            let config = match args.load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config);
            match osproxy::Instance::build(config).and_then(|i| i.run(shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // The error and its causes, one line; a cause an error
                    // already quotes in its own message is not repeated.
                    let mut line = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        let text = c.to_string();
                        if !line.contains(&text) {
                            line.push_str(&format!(": {text}"));
                        }
                        cause = c.source();
                    }
                    eprintln!("osproxy: {line}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    // SIGHUP re-reads the TLS certificates and keys (they are also re-read
    // when their files change); it never stops the process.
    let hup = signal(SignalKind::hangup());
    match (term, int, hup) {
        (Ok(mut term), Ok(mut int), Ok(mut hup)) => {
            let first = loop {
                tokio::select! {
                    _ = term.recv() => break "SIGTERM",
                    _ = int.recv() => break "SIGINT",
                    _ = hup.recv() => {
                        osproxy_upstream::tls::reload_now();
                        tracing::info!("SIGHUP: TLS certificates and keys are re-read at the next handshake");
                    }
                }
            };
            // A second SIGTERM or SIGINT during the drain ends the process
            // at once (an operator who cannot wait for the drain deadline).
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                warn!("a second stop signal during the drain: exiting now, cutting the requests still running");
                std::process::exit(EXIT_SECOND_SIGNAL);
            });
            first
        }
        _ => {
            // Without signal handlers the process still stops on signals,
            // just without a drain; wait forever here.
            warn!("cannot install signal handlers; SIGTERM will not drain");
            std::future::pending::<&'static str>().await
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    /// The option index names the purge delay of the mimalloc linked: its
    /// documented default (1000 ms in version 3, 10 in version 2) is read
    /// back before osproxy sets it, and osproxy's value after.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and sets integer options of the linked allocator.
        let before = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            before == 1000 || before == 10,
            "option {MI_OPTION_PURGE_DELAY} reads {before}: not mimalloc's purge delay"
        );
        return_freed_memory_soon();
        // Set by the loader-time constructor, before this test began.
        let eager = unsafe { mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) };
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(eager, 0, "arenas are committed eagerly");
        }
        let after = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && std::env::var_os("MIMALLOC_ARENA_PURGE_MULT").is_none()
        {
            assert_eq!(after, PURGE_DELAY_MS);
        }
    }
}
