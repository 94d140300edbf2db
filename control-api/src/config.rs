//! The API's configuration: embedded defaults, overridden by a TOML file (`--config`),
//! overridden by flags. TOML keys are the flag names (`engine-socket = "..."`).
//!
//! Everything has a default, so `portscope-api` runs with no flags: listen on
//! 127.0.0.1:8080, SQLite file `portscope.db`, engine socket `/run/portscope/engine.sock`,
//! no opt-outs, no ASN table (clients grouped by /24 and /48), no allowed private ranges.
//! The snake_case spellings (`engine_socket`) and the plural list names (`allow_targets`,
//! `trusted_proxies`, `allow_callbacks`) of `deploy/api.example.toml` are accepted too.

use crate::netaddr::Cidr;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The finishers' default poll on SQLite, ms ([`Config::finisher_poll`]).
pub const FINISHER_POLL_SQLITE_MS: u64 = 250;
/// The finishers' default poll on PostgreSQL, ms: other nodes' commits are notified, so
/// this only bounds what a lost notification costs.
pub const FINISHER_POLL_POSTGRES_MS: u64 = 2_000;

/// Every setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Addresses to listen on (one per family, e.g. `127.0.0.1:8080` and `[::1]:8080`).
    pub listen: Vec<SocketAddr>,
    /// The database: a SQLite file (the default, embedded) or a `postgres://` URL (a
    /// server any number of API nodes share).
    pub db: PathBuf,
    /// The engine daemon's Unix socket.
    #[serde(alias = "engine_socket")]
    pub engine_socket: PathBuf,
    /// Ranges the default-deny target policy lets through (lab, demo, tests).
    #[serde(
        alias = "allow_target",
        alias = "allow_targets",
        alias = "allow-targets"
    )]
    pub allow_target: Vec<Cidr>,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(
        alias = "trusted_proxy",
        alias = "trusted_proxies",
        alias = "trusted-proxies"
    )]
    pub trusted_proxy: Vec<Cidr>,
    /// File of opted-out addresses / CIDRs (403 `not_available`).
    #[serde(alias = "opt_out")]
    pub opt_out: Option<PathBuf>,
    /// File of `CIDR ASN` lines for per-ASN limits.
    #[serde(alias = "asn_table")]
    pub asn_table: Option<PathBuf>,
    /// Non-public ranges callbacks may still go to (lab, tests).
    #[serde(
        alias = "allow_callback",
        alias = "allow_callbacks",
        alias = "allow-callbacks"
    )]
    pub allow_callback: Vec<Cidr>,
    /// Also log to this file (stderr always).
    #[serde(alias = "log_file")]
    pub log_file: Option<PathBuf>,
    /// Retired (`engine-grace-secs`: a scan now waits in the queue for any worker's
    /// engine): accepted so older config files still load, ignored, and named by
    /// [`Config::retired_keys`] for a warning at start.
    #[serde(rename = "engine-grace-secs", alias = "engine_grace_secs")]
    pub retired_engine_grace_secs: Option<serde::de::IgnoredAny>,
    /// Seconds results are kept after completion / failure.
    #[serde(alias = "result_ttl_secs")]
    pub result_ttl_secs: u64,
    /// Retired (`submit-wait-ms`: a POST no longer waits for an engine): accepted and
    /// ignored like `engine-grace-secs`.
    #[serde(rename = "submit-wait-ms", alias = "submit_wait_ms")]
    pub retired_submit_wait_ms: Option<serde::de::IgnoredAny>,
    /// Retired (`worker-poll-ms`: the queue wakes its workers, nothing polls since apalis
    /// 1): accepted and ignored like `engine-grace-secs`.
    #[serde(rename = "worker-poll-ms", alias = "worker_poll_ms")]
    pub retired_worker_poll_ms: Option<serde::de::IgnoredAny>,
    /// Whole-request timeout, seconds (408).
    #[serde(alias = "request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Largest request body, bytes (413).
    #[serde(alias = "body_limit_bytes")]
    pub body_limit_bytes: usize,
    /// Requests in flight at most.
    #[serde(alias = "max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// How often expiry purge, grace checks and limiter pruning run, ms.
    #[serde(alias = "maintenance_interval_ms")]
    pub maintenance_interval_ms: u64,
    /// Run a chunk worker in this process against `engine-socket` (the embedded default:
    /// one process serves the API and runs the chunk jobs); `false` for an API node of a
    /// cluster whose workers run beside their engines (`portscope-api worker`).
    pub worker: bool,
    /// Chunks the in-process worker runs at once (a deep self-scan is 32 chunks).
    #[serde(alias = "worker_concurrency")]
    pub worker_concurrency: usize,
    /// How long the in-process worker waits for the engine per chunk run before the run
    /// fails (and is retried), ms.
    #[serde(alias = "worker_connect_ms")]
    pub worker_connect_ms: u64,
    /// Most probes (hosts x ports) per chunk of a managed scan: about a second of one
    /// engine's sending by default.
    #[serde(alias = "chunk_probes")]
    pub chunk_probes: u32,
    /// How long the in-process worker fetches nothing after a failed chunk run, ms (the
    /// chunk goes back to the queue at once, for any worker).
    #[serde(alias = "worker_retry_ms")]
    pub worker_retry_ms: u64,
    /// How often the finishers look for chunks other processes committed, ms; unset: the
    /// backend's default ([`Config::finisher_poll`]).
    #[serde(alias = "finisher_poll_ms")]
    pub finisher_poll_ms: Option<u64>,
    /// Grab banners of open ports after a scan.
    pub banners: bool,
    /// Banner connect+read deadline per port, ms.
    #[serde(alias = "banner_timeout_ms")]
    pub banner_timeout_ms: u64,
    /// Banner connects in flight at most.
    #[serde(alias = "banner_concurrency")]
    pub banner_concurrency: usize,
    /// Ports banner-grabbed at most per scan.
    #[serde(alias = "banner_max_ports")]
    pub banner_max_ports: usize,
    /// Look up PTR names.
    pub ptr: bool,
    /// PTR lookup deadline, ms.
    #[serde(alias = "ptr_timeout_ms")]
    pub ptr_timeout_ms: u64,
    /// Webhook attempts.
    #[serde(alias = "webhook_attempts")]
    pub webhook_attempts: u32,
    /// Webhook per-attempt timeout, ms.
    #[serde(alias = "webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Delay before the second webhook attempt (doubling after), ms.
    #[serde(alias = "webhook_backoff_ms")]
    pub webhook_backoff_ms: u64,
    /// SMTP server for managed-scan alert e-mail (`smtp://host:25`,
    /// `smtp://user:pass@host:587?tls=required`, `smtps://host:465`); none = no e-mail.
    #[serde(alias = "smtp_url")]
    pub smtp_url: Option<String>,
    /// Sender of alert e-mail, e.g. `Portscope <alerts@example.com>`.
    #[serde(alias = "smtp_from")]
    pub smtp_from: Option<String>,
    /// Serve `GET /metrics` on this separate address (no edge limit); none = not served.
    #[serde(alias = "metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// A request head must arrive within this, seconds (also the keep-alive idle wait).
    #[serde(alias = "header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// A connection with no bytes moving either way this long is closed, seconds.
    #[serde(alias = "idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Open connections per client address (429 `too_many_connections` beyond).
    #[serde(alias = "max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Open connections in all (503 `overloaded` beyond; also kept below the fd limit).
    #[serde(alias = "max_connections")]
    pub max_connections: usize,
    /// File of the server secret report keys are derived from (created, mode 0600, when
    /// missing); default: the database path with `.secret` appended (a PostgreSQL `db`:
    /// `portscope-api.secret`). Never in the database.
    #[serde(alias = "secret_file")]
    pub secret_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            db: PathBuf::from("portscope.db"),
            engine_socket: PathBuf::from("/run/portscope/engine.sock"),
            allow_target: Vec::new(),
            trusted_proxy: Vec::new(),
            opt_out: None,
            asn_table: None,
            allow_callback: Vec::new(),
            log_file: None,
            retired_engine_grace_secs: None,
            result_ttl_secs: 24 * 3600,
            retired_submit_wait_ms: None,
            retired_worker_poll_ms: None,
            request_timeout_secs: 15,
            body_limit_bytes: 16 * 1024,
            max_concurrent_requests: 1024,
            maintenance_interval_ms: 1000,
            worker: true,
            worker_concurrency: 8,
            worker_connect_ms: 1000,
            chunk_probes: crate::jobs::plan::DEFAULT_CHUNK_PROBES,
            worker_retry_ms: 20,
            finisher_poll_ms: None,
            banners: true,
            banner_timeout_ms: 1500,
            banner_concurrency: 16,
            banner_max_ports: 64,
            ptr: true,
            ptr_timeout_ms: 2000,
            webhook_attempts: 3,
            webhook_timeout_ms: 5000,
            webhook_backoff_ms: 1000,
            smtp_url: None,
            smtp_from: None,
            metrics_listen: None,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections_per_ip: 64,
            max_connections: 4096,
            secret_file: None,
        }
    }
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("invalid config {path}: {source}")]
    Toml {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
}

impl Config {
    /// Parses TOML text (missing keys keep their defaults; unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Toml {
            path: path.display().to_string(),
            source,
        })
    }

    /// The listener's connection limits.
    pub fn conn_limits(&self) -> crate::serve::ConnLimits {
        crate::serve::ConnLimits {
            header_read: Duration::from_secs(self.header_read_timeout_secs.clamp(1, 3600)),
            idle: Duration::from_secs(self.idle_timeout_secs.clamp(1, 86_400)),
            per_ip: self.max_connections_per_ip.max(1),
            total: self.max_connections.max(1),
        }
    }

    /// The secret file: `secret-file`, or the database path with `.secret` appended
    /// (`portscope-api.secret` in the working directory when the database is a
    /// PostgreSQL URL; API nodes of one database need the same secret file).
    pub fn secret_path(&self) -> PathBuf {
        self.secret_file.clone().unwrap_or_else(|| {
            if self.db.to_str().is_some_and(crate::store::is_postgres_url) {
                return PathBuf::from("portscope-api.secret");
            }
            let mut p = self.db.clone().into_os_string();
            p.push(".secret");
            PathBuf::from(p)
        })
    }

    /// How often the finishers poll (`finisher-poll-ms`, else the backend's default): on
    /// SQLite a worker in another process is heard of only by polling; on PostgreSQL the
    /// commits of other nodes are notified (`store::notify`), and the poll is the safety
    /// net behind a lost notification.
    pub fn finisher_poll(&self, backend: crate::store::Backend) -> Duration {
        let default = match backend {
            crate::store::Backend::Sqlite => FINISHER_POLL_SQLITE_MS,
            crate::store::Backend::Postgres => FINISHER_POLL_POSTGRES_MS,
        };
        Duration::from_millis(self.finisher_poll_ms.unwrap_or(default).max(1))
    }

    /// The retired keys this config sets (they do nothing; the API warns at start).
    pub fn retired_keys(&self) -> Vec<&'static str> {
        [
            (
                "engine-grace-secs",
                self.retired_engine_grace_secs.is_some(),
            ),
            ("submit-wait-ms", self.retired_submit_wait_ms.is_some()),
            ("worker-poll-ms", self.retired_worker_poll_ms.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_are_the_flag_names() {
        let c = Config::from_toml(
            r#"
            listen = ["127.0.0.1:9000", "[::1]:9000"]
            db = "/var/lib/portscope/api.db"
            engine-socket = "/run/e.sock"
            allow-target = ["198.18.0.0/15"]
            trusted-proxy = ["127.0.0.1"]
            allow-callback = ["::ffff:127.0.0.0/104"]
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.engine_socket, PathBuf::from("/run/e.sock"));
        assert_eq!(c.allow_target[0].to_string(), "198.18.0.0/15");
        assert_eq!(c.trusted_proxy[0].to_string(), "127.0.0.1/32");
        assert_eq!(c.allow_callback[0].to_string(), "127.0.0.0/8");
        assert_eq!(c.result_ttl_secs, 86_400);
        assert!(Config::from_toml("nonsense = 1").is_err());
    }

    #[test]
    fn snake_case_and_plural_spellings_are_accepted() {
        // The keys of deploy/api.example.toml.
        let c = Config::from_toml(
            r#"
            listen = ["127.0.0.1:8080"]
            db = "portscope.db"
            engine_socket = "/run/portscope/engine.sock"
            trusted_proxies = ["10.0.0.0/8"]
            allow_targets = ["198.18.0.0/15"]
            opt_out = "/etc/portscope/opt-out.txt"
            asn_table = "/etc/portscope/asn.txt"
            allow_callbacks = ["198.18.0.0/15"]
            result_ttl_secs = 7
            "#,
        )
        .unwrap();
        assert_eq!(c.trusted_proxy.len(), 1);
        assert_eq!(c.allow_target.len(), 1);
        assert_eq!(c.allow_callback.len(), 1);
        assert_eq!(c.result_ttl_secs, 7);
        assert!(c.opt_out.is_some() && c.asn_table.is_some());
    }

    #[test]
    fn the_finishers_poll_by_backend_unless_set() {
        let d = Config::default();
        assert_eq!(
            d.finisher_poll(crate::store::Backend::Sqlite),
            Duration::from_millis(250)
        );
        assert_eq!(
            d.finisher_poll(crate::store::Backend::Postgres),
            Duration::from_secs(2)
        );
        let c = Config::from_toml("finisher-poll-ms = 600000").unwrap();
        for b in [
            crate::store::Backend::Sqlite,
            crate::store::Backend::Postgres,
        ] {
            assert_eq!(c.finisher_poll(b), Duration::from_secs(600));
        }
    }

    #[test]
    fn retired_keys_still_load_and_are_named_for_a_warning() {
        // A config file written for the engine-conversation API (before chunk jobs).
        let old = Config::from_toml(
            "engine-grace-secs = 30\nsubmit_wait_ms = 2000\nresult-ttl-secs = 60\n",
        )
        .unwrap();
        assert_eq!(old.retired_keys(), ["engine-grace-secs", "submit-wait-ms"]);
        assert_eq!(old.result_ttl_secs, 60);
        let only = Config::from_toml("submit-wait-ms = 1").unwrap();
        assert_eq!(only.retired_keys(), ["submit-wait-ms"]);
        // A config file written for the apalis 0.7 queue, which polled.
        let polled = Config::from_toml("worker-poll-ms = 100\nworker-retry-ms = 50").unwrap();
        assert_eq!(polled.retired_keys(), ["worker-poll-ms"]);
        assert_eq!(polled.worker_retry_ms, 50);
        assert!(Config::default().retired_keys().is_empty());
        // Their values are not read: any value loads.
        assert!(Config::from_toml("engine-grace-secs = \"soon\"").is_ok());
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let c = Config::from_toml(include_str!("../portscope-api.example.toml")).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }
}
