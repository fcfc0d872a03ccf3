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

// mimalloc's runtime options (`mi_option_set`, from the C library the
// `mimalloc` crate links; version 2's `mimalloc.h`).
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_arena_purge_mult` in version 2's `mi_option_e`.
const MI_OPTION_ARENA_PURGE_MULT: std::ffi::c_int = 24;

/// Large blocks (a request body read whole, its parse, its rewritten copy)
/// are given back to the OS when freed, not kept committed for mimalloc's
/// default arena delay (10 × 10 ms): a burst of large requests refused by
/// `server.max_buffered_total` would otherwise leave their memory counted
/// in RSS beside the next ones', and the budget would no longer bound the
/// process's memory (32 bodies of 99 MiB at once peaked at +541 MiB with
/// the delay, about +300 MiB without). Small blocks, the request path's,
/// keep mimalloc's page-level delay. An operator's own
/// `MIMALLOC_ARENA_PURGE_MULT` is left as set.
fn return_large_blocks_at_once() {
    if std::env::var_os("MIMALLOC_ARENA_PURGE_MULT").is_some() {
        return;
    }
    // SAFETY: sets an integer option of the linked allocator; called once,
    // before any other thread exists.
    unsafe { mi_option_set(MI_OPTION_ARENA_PURGE_MULT, 0) };
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
    return_large_blocks_at_once();
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
