//! Command-line interface: one module per subcommand.

mod bench;
mod control;
mod cutover;
mod inspect;
mod plan;
mod progress;
mod run;
mod status;
mod validate;
mod verify;
mod verify_live;

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
    /// Scheduling priority (nice) the tool runs at while it loads a dump, 0 to 19. The
    /// default, 10, lets the Pika or Redis server on the same machine have the CPU
    /// whenever it needs it, which also makes a load into a local Redis faster. Outside
    /// loads (the binlog stream) it runs at the priority it was started with, when it
    /// may raise its priority again (root, CAP_SYS_NICE). 0 keeps the normal priority
    /// throughout; a process started lower keeps its own.
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
    /// Compare the pipeline's source with its Redis sink: every key of a snapshot, or of a
    /// live master while writes go on (keys that differ are compared again in later
    /// rounds; a key is reported only if it differs in every one).
    Verify {
        /// The pipeline file (YAML).
        #[arg(short, long)]
        config: PathBuf,
        /// A live master: check this many keys of each database, drawn at random.
        #[arg(long)]
        sample: Option<usize>,
        /// A live master: read at most this many of its keys per second.
        #[arg(long)]
        rate: Option<u64>,
        /// A live master: rounds in all; the later ones re-check what differed.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// A live master: seconds between rounds, for the stream to carry the writes.
        #[arg(long, default_value_t = 5)]
        settle: u64,
        /// One JSON object instead of text (one per line for each source of a fleet).
        #[arg(long)]
        json: bool,
        /// In a fleet file: only the source of this name (default: each in turn).
        #[arg(long)]
        source: Option<String>,
    },
    /// A pre-flight report: what the source's dump holds, the memory Redis will use
    /// for it, whether it fits the target, how long the full sync should take.
    Plan {
        /// The pipeline file (YAML).
        #[arg(short, long)]
        config: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// In a fleet file: the source to plan.
        #[arg(long)]
        source: Option<String>,
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
    /// Show the status of a running pipeline (its `status.listen` endpoint), or of
    /// several (one process per master).
    Status {
        /// The endpoint, `IP:PORT`, or several: `IP:PORT,IP:PORT,…`.
        #[arg(long)]
        addr: Option<String>,
        /// Or the pipeline file, whose `status.listen` is used.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print the JSON as served.
        #[arg(long)]
        json: bool,
        /// Wait until every database streams with everything the master sent applied;
        /// exit 0 then, 75 after `--timeout` seconds naming what is not there yet.
        #[arg(long)]
        wait_synced: bool,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Pause a running pipeline: nothing is applied, the link to the master stays up
    /// and the master keeps its binlog (through its `status.listen` endpoint).
    Pause {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Resume a paused pipeline where it stopped.
    Resume {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// The gate before the switch: wait until the master has stopped taking writes and
    /// every database is applied up to its position, verify, stop the pipeline cleanly,
    /// write a report; exit 0 when ready to switch.
    Cutover {
        /// The pipeline file; several (`-c a.yaml -c b.yaml`) for one process per master.
        #[arg(short, long, required = true)]
        config: Vec<PathBuf>,
        /// Seconds the master's binlog must stand still.
        #[arg(long, default_value_t = 10)]
        quiet_for: u64,
        /// The writes are stopped (no wait for the binlog to stand still).
        #[arg(long)]
        writes_stopped: bool,
        /// Verify every key rather than a sample.
        #[arg(long)]
        full: bool,
        /// Keys per database of the sampled verify.
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        /// Give up after this many seconds (exit 75).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Where to write the report (default: the source's work_dir).
        #[arg(long)]
        report: Option<PathBuf>,
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
        Command::Plan {
            config,
            json,
            source,
        } => plan::plan(&config, json, source.as_deref()).await,
        Command::Verify {
            config,
            sample,
            rate,
            rounds,
            settle,
            json,
            source,
        } => {
            let live = verify_live::LiveOptions {
                sample,
                rate,
                rounds,
                settle: std::time::Duration::from_secs(settle),
                json,
            };
            verify::verify(&config, &live, source.as_deref()).await
        }
        Command::Inspect { what } => inspect::inspect(what).await,
        Command::Status {
            addr,
            config,
            json,
            wait_synced,
            timeout,
        } => {
            let endpoints: Vec<control::Endpoint> = match (addr, config) {
                (Some(addr), _) => status::addresses(&addr)
                    .into_iter()
                    .map(|addr| control::Endpoint { addr, token: None })
                    .collect(),
                (None, Some(path)) => vec![control::Endpoint::of_pipeline(&path)?],
                (None, None) => anyhow::bail!("give --addr IP:PORT[,IP:PORT…] or -c PIPELINE"),
            };
            if wait_synced {
                control::wait_synced(&endpoints, std::time::Duration::from_secs(timeout)).await
            } else {
                let addrs: Vec<String> = endpoints.into_iter().map(|e| e.addr).collect();
                status::show(&addrs, json).await
            }
        }
        Command::Pause { config } => control::pause_or_resume(&config, true).await,
        Command::Resume { config } => control::pause_or_resume(&config, false).await,
        Command::Cutover {
            config,
            quiet_for,
            writes_stopped,
            full,
            sample,
            timeout,
            report,
        } => {
            let options = cutover::CutoverOptions {
                quiet_for: std::time::Duration::from_secs(quiet_for),
                writes_stopped,
                full,
                sample,
                timeout: std::time::Duration::from_secs(timeout),
                report,
            };
            cutover::cutover(&config, &options).await
        }
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
