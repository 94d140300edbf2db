//! The `worker` and `jobs` subcommands of `portscope-api` (their flags and what they run),
//! so `main.rs` only dispatches. Bad input exits 64 with a message.

use crate::jobs::plan::{plan_deep, DEFAULT_CHUNK_PROBES};
use crate::jobs::queue::{Queue, QueueTiming};
use crate::jobs::submit::{submit, wait_finished};
use crate::jobs::worker::{run, WorkerOptions};
use crate::jobs::{DbUrl, JobScanStatus};
use crate::store::jobs::JobStore;
use portscope_proto::ScanKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `portscope-api worker`: claim chunk jobs and run them on the local engine.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The local engine daemon's Unix socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/portscope/engine.sock"
    )]
    pub engine_socket: PathBuf,
    /// This node's name, recorded on the chunks it runs [default: the host name].
    #[arg(long)]
    pub node: Option<String>,
    /// Chunks run at once (1 to 16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub concurrency: u16,
}

/// `portscope-api jobs ...`.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCmd {
    /// Create a deep scan (every port) of the given hosts as chunk jobs; print its id.
    Submit {
        /// Host addresses; repeatable or comma-separated.
        #[arg(long, required = true, value_delimiter = ',')]
        deep: Vec<IpAddr>,
        /// Most probes per chunk.
        #[arg(long, default_value_t = DEFAULT_CHUNK_PROBES,
              value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        chunk_probes: u32,
        /// Wait up to this many seconds for the scan to finish; exit 1 unless complete.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Print a job scan's status and chunk counts.
    Status {
        /// The scan id.
        id: String,
    },
}

/// The database URL from `--db` (exit 64 when unreadable).
pub fn db_url(db: &Path) -> DbUrl {
    match DbUrl::parse(&db.to_string_lossy()) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("portscope-api: --db: {e}");
            std::process::exit(64);
        }
    }
}

/// Runs the worker until `shutdown`.
pub async fn worker_command(
    db: &Path,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let node = args.node.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into())
    });
    let mut opts = WorkerOptions::new(db_url(db), args.engine_socket, node);
    opts.concurrency = usize::from(args.concurrency);
    run(opts, shutdown).await
}

/// Runs a `jobs` command.
pub async fn jobs_command(db: &Path, cmd: JobsCmd) -> anyhow::Result<()> {
    let db = db_url(db);
    let acquire = Duration::from_secs(5);
    match cmd {
        JobsCmd::Submit {
            deep,
            chunk_probes,
            wait,
        } => {
            let mut queue = Queue::open(&db, QueueTiming::for_backend(db.backend), acquire).await?;
            let store = JobStore::open(&db.url, acquire).await?;
            let chunks = plan_deep(&deep, chunk_probes);
            let id = submit(&mut queue, &store, ScanKind::Deep, &chunks).await?;
            println!("{id}");
            if let Some(secs) = wait {
                let row = wait_finished(&store, &id, Duration::from_secs(secs)).await?;
                match row {
                    Some(r) if r.status == JobScanStatus::Complete => {
                        eprintln!("complete: {} chunks", r.chunks_done);
                    }
                    Some(r) => anyhow::bail!("scan {id} ended {}", r.status),
                    None => anyhow::bail!("scan {id} not finished in {secs} s"),
                }
            }
            store.close().await;
        }
        JobsCmd::Status { id } => {
            let store = JobStore::open(&db.url, acquire).await?;
            let Some(scan) = store.scan(&id).await? else {
                eprintln!("portscope-api: no job scan {id}");
                std::process::exit(64);
            };
            println!(
                "{}\t{}\t{}/{} chunks",
                scan.id, scan.status, scan.chunks_done, scan.chunks_total
            );
            for c in store.chunks(&id).await? {
                println!(
                    "chunk {}\t{}\t{}\truns {}\tnode {}",
                    c.chunk,
                    c.targets.join(","),
                    c.status,
                    c.runs,
                    c.node.as_deref().unwrap_or("-")
                );
            }
            store.close().await;
        }
    }
    Ok(())
}
