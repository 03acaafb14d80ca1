//! `vigil`: the command line. Parses arguments, builds what they ask for,
//! runs it and maps failures to exit codes (64 usage or configuration, 1
//! runtime failure, 0 on a closed output pipe). Nothing else lives here.

mod access;
mod alerts;
mod bench;
mod bench_detect;
mod bench_e2e;
mod bench_evidence;
mod collector;
mod demo;
mod detect;
mod docs;
mod evidence;
mod flows;
mod pki;
mod query;
mod replay;
mod sensor;
mod share;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for usage and configuration errors (sysexits' EX_USAGE).
pub const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Network security monitoring for protected infrastructure"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Read capture files and print their bidirectional flows.
    Flows(flows::FlowsArgs),
    /// Synthesize an attack scenario and show what the sensor makes of it.
    Demo(demo::DemoArgs),
    /// Measure the capture → decode → flow pipeline.
    Bench(bench::BenchArgs),
    /// Capture, track flows and stream them to a collector (spooling to disk).
    Sensor(Box<sensor::SensorArgs>),
    /// Receive flows from sensors over gRPC, store them, answer queries.
    Collector(collector::CollectorArgs),
    /// Send a capture out of a test interface, its addresses rewritten into
    /// test ranges (for live-capture tests and benchmarks).
    Replay(replay::ReplayArgs),
    /// Query stored flows: listings, top-N, totals, sensor status.
    Query(query::QueryArgs),
    /// Alerts: list them, show one with its evidence flows, watch new ones.
    #[command(subcommand)]
    Alerts(alerts::AlertsCmd),
    /// Evidence: the collector's signing key.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCmd),
    /// Sharing with partners (STIX 2.1 over TAXII 2.1): the push's status.
    #[command(subcommand)]
    Share(share::ShareCmd),
    /// Run the collector's detectors over stored flows (a retro-hunt) and
    /// store the alerts found that are not stored already.
    Detect(detect::DetectArgs),
    /// A certificate authority for the site, and the certificates of its
    /// collector, sensors and analysts (mTLS in three commands).
    #[command(subcommand)]
    Pki(pki::PkiCmd),
    /// Access to the HTTP API and console: API tokens for analysts.
    #[command(subcommand)]
    Access(access::AccessCmd),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Write the man pages (vigil.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man(docs::ManArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print a complete configuration file with the default values.
    Defaults {
        /// sensor or collector.
        which: String,
    },
}

/// The tokio runtime of the daemons and clients.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A failure and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    err: anyhow::Error,
}

impl Failure {
    /// A usage or configuration error (exit 64).
    pub fn usage(err: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: EX_USAGE,
            err: err.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            err: e.into(),
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The demo prints its alerts itself; the daemons log them as warnings.
    let default_level = if matches!(cli.cmd, Cmd::Demo(_)) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let res = match cli.cmd {
        Cmd::Flows(a) => flows::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Sensor(a) => sensor::run(*a),
        Cmd::Collector(a) => collector::run(a),
        Cmd::Query(a) => query::run(a),
        Cmd::Share(a) => share::run(a),
        Cmd::Replay(a) => replay::run(a),
        Cmd::Alerts(a) => alerts::run(a),
        Cmd::Detect(a) => detect::run(a),
        Cmd::Evidence(c) => evidence::run(c),
        Cmd::Pki(c) => pki::run(c),
        Cmd::Access(c) => access::run(c),
        Cmd::Completions(a) => docs::completions(&a, <Cli as clap::CommandFactory>::command()),
        Cmd::Man(a) => docs::man(&a, <Cli as clap::CommandFactory>::command()),
        Cmd::Config(ConfigCmd::Defaults { which }) => match which.as_str() {
            "sensor" => {
                print!("{}", vigil_sensor::config::SensorFile::defaults_toml());
                Ok(())
            }
            "collector" => {
                print!(
                    "{}",
                    vigil_collector::config::CollectorFile::defaults_toml()
                );
                Ok(())
            }
            other => Err(Failure::usage(anyhow::anyhow!(
                "config defaults {other:?}: expected sensor or collector"
            ))),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if is_broken_pipe(&f.err) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("vigil: {:#}", f.err);
            ExitCode::from(f.code)
        }
    }
}
