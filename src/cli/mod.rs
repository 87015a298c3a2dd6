//! Command-line interface: one module per subcommand.

mod bench;
mod inspect;
mod priority;
mod progress;
mod run;
mod status;
mod validate;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pika_migrate_core::config::ConfigError;
use pika_migrate_core::pipeline::PipelineError;
use pika_migrate_core::source::pika::ReplicaError;
use pika_migrate_core::source::SourceError;
use pika_migrate_sinks::redis::RedisSinkError;
use pika_migrate_sinks::BuildError;
use tracing_subscriber::EnvFilter;

pub use priority::lower_priority;

/// Exit code for an unusable pipeline file (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// Move a live Pika database into Redis, and stream Pika's changes to pluggable sinks.
#[derive(Debug, Parser)]
#[command(name = "pika-migrate", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (e.g. `info`, `debug`, `pika_migrate_core=trace`); RUST_LOG works too.
    #[arg(long, global = true, env = "PIKA_MIGRATE_LOG")]
    pub log: Option<String>,
    /// Threads for network work: the sinks' connections and the replication link.
    /// Scanning, decoding and filters have threads of their own whatever this is. One
    /// is enough for a single Redis; raise it for a cluster of many masters.
    #[arg(long, global = true, env = "PIKA_MIGRATE_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Scheduling priority (nice) to run at, 0 to 19. The default, 10, lets the Pika
    /// or Redis server on the same machine have the CPU whenever it needs it, which
    /// also makes a load into a local Redis faster. 0 keeps the normal priority; a
    /// process started lower keeps its own.
    #[arg(long, global = true, env = "PIKA_MIGRATE_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=19))]
    pub nice: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: read the source, pass events through the filters, write the sinks.
    Run {
        /// The pipeline file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Compare every key of the pipeline's snapshot source with its Redis sink.
    Verify {
        /// The pipeline file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a pipeline file without running it.
    Validate {
        /// The pipeline file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the events of a snapshot or binlog, one line each, position first.
    Inspect {
        #[command(subcommand)]
        what: inspect::What,
    },
    /// Show the status of a running pipeline (its `status.listen` endpoint).
    Status {
        /// The endpoint, `IP:PORT`.
        #[arg(long)]
        addr: Option<String>,
        /// Or the pipeline file, whose `status.listen` is used.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print the JSON as served.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark helpers (see scripts/bench).
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
}

pub fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run::run(&config).await,
        Command::Validate { config } => validate::validate(&config),
        Command::Verify { config } => verify::verify(&config).await,
        Command::Inspect { what } => inspect::inspect(what).await,
        Command::Status { addr, config, json } => status::show(addr, config, json).await,
        Command::Bench { what } => tokio::task::spawn_blocking(move || bench::run(what)).await?,
    }
}

/// Maps an error to the process exit code: 78 for a bad pipeline file, the replica's
/// own codes for what the master refused, the Redis sink's for a target it cannot use
/// at start (README, "Exit codes"), 1 otherwise.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if c.is::<ConfigError>() || c.is::<crate::pipeline_file::DatabasesRefused>() {
            return EXIT_CONFIG;
        }
        if let Some(lane) = c.downcast_ref::<pika_migrate_sinks::redis::lane::LaneError>() {
            return lane.exit_code();
        }
        let redis = c
            .downcast_ref::<RedisSinkError>()
            .or(match c.downcast_ref::<BuildError>() {
                Some(BuildError::Redis(r)) => Some(r),
                _ => None,
            });
        if let Some(r) = redis {
            return r.exit_code();
        }
        let replica = c
            .downcast_ref::<ReplicaError>()
            .or(match c.downcast_ref::<SourceError>() {
                Some(SourceError::Replica(r)) => Some(r),
                _ => None,
            })
            .or(match c.downcast_ref::<PipelineError>() {
                Some(PipelineError::Source(SourceError::Replica(r))) => Some(r),
                _ => None,
            });
        if let Some(r) = replica {
            return r.exit_code();
        }
    }
    1
}
