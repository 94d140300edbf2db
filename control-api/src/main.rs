//! `portscope-api`: the unprivileged control API binary. Parses flags and the optional
//! TOML config, connects to the engine's Unix socket, serves HTTP. It never opens raw
//! sockets and needs no capabilities.

use anyhow::Context;
use clap::{Parser, Subcommand};
use portscope_control_api::clock::SystemClock;
use portscope_control_api::config::Config;
use portscope_control_api::engine::unix::{Backoff, UnixEngineClient};
use portscope_control_api::engine::EngineClient;
use portscope_control_api::enrich::{HickoryPtr, NoBanners, NoPtr, TcpBanners};
use portscope_control_api::netaddr::Cidr;
use portscope_control_api::serve::serve_with_headers;
use portscope_control_api::{app, start, Services};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Portscope's self-scan HTTP API (POST/GET /v1/fast and /v1/deep).
///
/// Flags override the config file; list flags add to the file's lists.
#[derive(Debug, Parser)]
#[command(name = "portscope-api", version)]
struct Args {
    /// TOML config file; keys are the flag names (e.g. `engine-socket = "..."`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on; give twice for IPv4 and IPv6 [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Database: a SQLite file, or a postgres:// URL shared by API nodes [default: portscope.db].
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,
    /// The engine daemon's Unix socket [default: /run/portscope/engine.sock].
    #[arg(long, value_name = "PATH")]
    engine_socket: Option<PathBuf>,
    /// Let a range the default target policy denies be scanned (lab, demo).
    #[arg(long, value_name = "CIDR")]
    allow_target: Vec<Cidr>,
    /// Believe X-Forwarded-For from this proxy range.
    #[arg(long, value_name = "CIDR")]
    trusted_proxy: Vec<Cidr>,
    /// File of opted-out addresses / CIDRs, one per line.
    #[arg(long, value_name = "FILE")]
    opt_out: Option<PathBuf>,
    /// File of `CIDR ASN` lines for per-ASN rate limits.
    #[arg(long, value_name = "FILE")]
    asn_table: Option<PathBuf>,
    /// Let callbacks go to this non-public range (lab, tests).
    #[arg(long, value_name = "CIDR")]
    allow_callback: Vec<Cidr>,
    /// Also write logs to this file.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Serve the API only: run no chunk worker in this process (a cluster's API node; its
    /// workers run beside their engines as `portscope-api worker`).
    #[arg(long)]
    no_worker: bool,
    /// Without a command: serve HTTP.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bearer tokens of the managed-scan API (/api/v1), in the same database.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Claim chunk jobs from the database (`--db`: a SQLite file or `postgres://...`) and run
    /// them on the local engine (unprivileged, beside the engine).
    Worker(portscope_control_api::jobs::cli::WorkerArgs),
    /// Job scans (chunk jobs) in the database given by `--db`.
    Jobs {
        #[command(subcommand)]
        cmd: portscope_control_api::jobs::cli::JobsCmd,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token and print its secret (shown once; only its hash is stored).
    Create {
        /// Unique name, e.g. `ci`.
        #[arg(long)]
        name: String,
        /// What it may scan: CIDR, IP, `example.com` or `*.example.com`; repeatable or
        /// comma-separated.
        #[arg(long, required = true, value_delimiter = ',')]
        scope: Vec<String>,
        /// New scans per calendar month (UTC), 0 to 10^9.
        #[arg(long, default_value_t = 1000,
              value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
        monthly_scans: i64,
        /// Queued + running scans at once, 1 to 10,000.
        #[arg(long, default_value_t = portscope_control_api::managed::tokens::DEFAULT_CONCURRENT,
              value_parser = clap::value_parser!(i64).range(1..=10_000))]
        concurrent: i64,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id or name; its requests get 401 from now on.
    Revoke {
        /// `tok_...` id or name.
        id_or_name: String,
    },
}

async fn token_command(config: &Config, cmd: TokenCmd) -> anyhow::Result<()> {
    use portscope_control_api::managed::scope::Scope;
    use portscope_control_api::managed::tokens;
    let store = portscope_control_api::store::Store::open(&config.db)
        .await
        .with_context(|| format!("cannot open database {}", config.db.display()))?;
    let pool = store.pool();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match cmd {
        TokenCmd::Create {
            name,
            scope,
            monthly_scans,
            concurrent,
        } => {
            let scope =
                Scope::parse(scope.iter().map(String::as_str)).map_err(anyhow::Error::msg)?;
            let (row, secret) = tokens::create(
                pool,
                &tokens::NewToken {
                    name,
                    scope,
                    monthly_scans,
                    max_concurrent: concurrent,
                },
                now,
            )
            .await?;
            println!("id:     {}", row.id);
            println!("name:   {}", row.name);
            println!("scope:  {}", row.scope.replace('\n', ", "));
            println!(
                "quota:  {} scans/month, {} concurrent",
                row.monthly_scans, row.max_concurrent
            );
            println!("token:  {secret}");
            eprintln!("Store the token now: it is shown only once.");
        }
        TokenCmd::List => {
            println!("id\tname\tscope\tmonthly_scans\tconcurrent\tcreated_at\trevoked_at");
            for r in tokens::list(pool).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.name,
                    r.scope.replace('\n', ","),
                    r.monthly_scans,
                    r.max_concurrent,
                    r.created_at,
                    r.revoked_at.map_or("-".to_string(), |t| t.to_string())
                );
            }
        }
        TokenCmd::Revoke { id_or_name } => {
            let r = tokens::revoke(pool, &id_or_name, now).await?;
            println!("revoked {} ({})", r.id, r.name);
        }
    }
    store.close().await;
    Ok(())
}

fn merge(args: Args) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        c.listen = args.listen;
    }
    if let Some(v) = args.db {
        c.db = v;
    }
    if let Some(v) = args.engine_socket {
        c.engine_socket = v;
    }
    if args.no_worker {
        c.worker = false;
    }
    c.allow_target.extend(args.allow_target);
    c.trusted_proxy.extend(args.trusted_proxy);
    c.allow_callback.extend(args.allow_callback);
    if args.opt_out.is_some() {
        c.opt_out = args.opt_out;
    }
    if args.asn_table.is_some() {
        c.asn_table = args.asn_table;
    }
    if args.log_file.is_some() {
        c.log_file = args.log_file;
    }
    Ok(c)
}

fn init_logging(file: Option<&PathBuf>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let file_layer = match file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f)),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .init();
    Ok(())
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts a thread, so every thread inherits it.
    let hardened = portscope_control_api::privs::harden().map_err(anyhow::Error::msg)?;
    raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(hardened))
}

/// Raises the soft open-file limit to the hard one (connections are capped below it).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The connection limit, kept below the open-file limit (room for the database, the
/// engine socket, webhooks and banner connections).
fn connection_limit(configured: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let fds = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let room = usize::try_from(fds.saturating_sub(256).max(64)).unwrap_or(usize::MAX);
    configured.min(room)
}

async fn run(hardened: portscope_control_api::privs::Hardened) -> anyhow::Result<()> {
    let mut args = Args::parse();
    let command = args.command.take();
    let config = merge(args)?;
    use portscope_control_api::jobs::cli;
    match command {
        Some(Command::Token { cmd }) => return token_command(&config, cmd).await,
        Some(Command::Jobs { cmd }) => return cli::jobs_command(&config.db, cmd).await,
        Some(Command::Worker(w)) => {
            init_logging(config.log_file.as_ref())?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            return cli::worker_command(&config.db, w, shutdown).await;
        }
        None => {}
    }
    init_logging(config.log_file.as_ref())?;
    tracing::info!(
        no_new_privs = hardened.no_new_privs,
        bounding_set_empty = hardened.bounding_empty,
        "no capabilities held"
    );

    let engine = Arc::new(UnixEngineClient::spawn(
        config.engine_socket.clone(),
        Backoff::default(),
    ));
    let banners: Arc<dyn portscope_control_api::enrich::BannerGrabber> = if config.banners {
        Arc::new(TcpBanners {
            timeout: Duration::from_millis(config.banner_timeout_ms),
            max_bytes: 256,
            concurrency: config.banner_concurrency,
            max_ports: config.banner_max_ports,
        })
    } else {
        Arc::new(NoBanners)
    };
    let ptr: Arc<dyn portscope_control_api::enrich::PtrResolver> = if config.ptr {
        match HickoryPtr::from_system(Duration::from_millis(config.ptr_timeout_ms)) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!(error = %e, "no system resolver; PTR records will be null");
                Arc::new(NoPtr)
            }
        }
    } else {
        Arc::new(NoPtr)
    };
    let state = start(
        &config,
        Services {
            engine: engine.clone(),
            clock: Arc::new(SystemClock),
            banners,
            ptr,
        },
    )
    .await?;

    let token = CancellationToken::new();
    tokio::spawn(shutdown_signal(token.clone()));
    let mut servers = tokio::task::JoinSet::new();
    let mut limits = config.conn_limits();
    limits.total = connection_limit(limits.total);
    let listens = config
        .listen
        .iter()
        .map(|a| {
            let headers = portscope_control_api::http::protocol_headers(&state);
            (*a, app(state.clone()), Some(headers))
        })
        .chain(config.metrics_listen.map(|a| {
            let router = portscope_control_api::http::metrics_app(state.clone());
            (a, router, None)
        }));
    for (addr, router, headers) in listens {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(%addr, "listening");
        let token = token.clone();
        servers.spawn(async move {
            serve_with_headers(listener, router, limits, headers, async move {
                token.cancelled().await
            })
            .await
        });
    }
    while let Some(r) = servers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "server failed");
            token.cancel();
        }
    }
    state.shutdown().await;
    engine.close();
    Ok(())
}
