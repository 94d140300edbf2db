//! The `worker` and `jobs` subcommands of `portscope-api` (their flags and what they run),
//! and the in-process worker of `portscope-api` serving, so `main.rs` only dispatches. Bad input exits 64 with a message.

use crate::jobs::connector::UnixConnector;
use crate::jobs::plan::{plan_deep, DEFAULT_CHUNK_PROBES};
use crate::jobs::submit::{submit, wait_finished};
use crate::jobs::worker::{run, WorkerOptions};
use crate::model::Status;
use crate::store::jobs::JobStore;
use crate::store::Db;
use portscope_proto::ScanKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Longest wait for a database connection (a worker retries on its own terms after that).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens `--db` (a SQLite file or a `postgres://` URL) and runs the store's and the
/// queue's migrations.
pub async fn open_db(db: &Path) -> anyhow::Result<Db> {
    if db.as_os_str().is_empty() {
        eprintln!("portscope-api: --db: empty database path");
        std::process::exit(64);
    }
    let pool = Db::connect(db, ACQUIRE_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e}", db.display()))?;
    // A submit writes the queue's rows too: its tables must exist.
    crate::store::queue::migrate_queue(&pool).await?;
    Ok(pool)
}

/// This host's name (a worker's default node name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// `portscope-api` serving with `worker = true` (the default): the same worker as
/// `portscope-api worker`, in this process, on the API's own database pool and engine
/// connection (`opts`), until `shutdown`. A worker that stopped on a lost database is
/// started again after a second.
pub fn spawn_in_process_worker(
    opts: WorkerOptions,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !shutdown.is_cancelled() {
            if let Err(e) = run(opts.clone(), shutdown.clone()).await {
                tracing::error!(error = %e, "in-process chunk worker stopped; restarting");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    })
}

/// Runs the worker until `shutdown`.
pub async fn worker_command(
    db: &Path,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let node = args.node.unwrap_or_else(host_name);
    let db = open_db(db).await?;
    let engines = Arc::new(UnixConnector {
        socket: args.engine_socket,
    });
    let mut opts = WorkerOptions::new(db.clone(), engines, node);
    opts.concurrency = usize::from(args.concurrency);
    let out = run(opts, shutdown).await;
    db.close().await;
    out
}

/// Runs a `jobs` command.
pub async fn jobs_command(db: &Path, cmd: JobsCmd) -> anyhow::Result<()> {
    let store = JobStore::new(open_db(db).await?);
    match cmd {
        JobsCmd::Submit {
            deep,
            chunk_probes,
            wait,
        } => {
            let chunks = plan_deep(&deep, chunk_probes);
            let id = submit(&store, ScanKind::Deep, &chunks).await?;
            println!("{id}");
            if let Some(secs) = wait {
                let row = wait_finished(&store, &id, Duration::from_secs(secs)).await?;
                match row {
                    Some(r) if r.status == Status::Complete => {
                        eprintln!("complete: {} chunks", r.chunks_done);
                    }
                    Some(r) => anyhow::bail!("scan {id} ended {}", r.status.as_str()),
                    None => anyhow::bail!("scan {id} not finished in {secs} s"),
                }
            }
        }
        JobsCmd::Status { id } => {
            let Some(scan) = store.scan(&id).await? else {
                eprintln!("portscope-api: no job scan {id}");
                std::process::exit(64);
            };
            println!(
                "{}\t{}\t{}/{} chunks",
                scan.id,
                scan.status.as_str(),
                scan.chunks_done,
                scan.chunks_total
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
        }
    }
    store.close().await;
    Ok(())
}
