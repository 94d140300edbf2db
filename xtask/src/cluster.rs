//! `cargo xtask cluster --nodes N [--kill-one AT%]`: the multi-node scan of issue 8 in the
//! lab. Brings up a lab with N scanner namespaces, a throwaway PostgreSQL (`pg`), an engine
//! per namespace (`nodes`) and a `portscope-api worker` beside each (unprivileged, its
//! engine's socket), and one API node (`portscope-api --no-worker`, unprivileged, on
//! loopback). It submits a deep scan of 16 lab hosts (198.19.0.16/28) THROUGH THE HTTP API:
//! a token made with `portscope-api token create`, then `POST /api/v1/scan`, a managed scan
//! whose chunks the workers run. It optionally SIGKILLs one node's worker and engine when
//! that share of chunks is done, and prints per-node chunk counts, wall time, database
//! writes per million probes, the managed scan as the API serves it, and the exactness
//! against the lab truth. Exits 1 unless every (host, port) pair has exactly one answer
//! equal to the truth and the API serves the scan `complete`. Bounded: the scan must end
//! within 5 minutes; every process is stopped by PID and the lab taken down.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::lab::{Expected, LabConfig, LabGuard};
use crate::nodes::Engines;
use crate::pg::{PgGuard, DATABASE};
use crate::stack::{stop, API_UID};

/// Longest a scan may take.
const SCAN_LIMIT: Duration = Duration::from_secs(300);

/// N nodes (engine + worker each) on one PostgreSQL run a deep scan of lab hosts as chunk
/// jobs, optionally killing one node.
#[derive(Debug, clap::Parser)]
struct Options {
    /// Scanning nodes (engine + worker each), 1 to 16.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::lab::MAX_SCANNERS)))]
    nodes: u32,
    /// SIGKILL the last node's worker and engine when AT% of chunks are done (1% to 99%).
    #[arg(long = "kill-one", value_name = "AT%", value_parser = percent)]
    kill_at: Option<u32>,
    /// Lab hosts in the deep scan: 1, 2, 4, 8 or 16, the CIDR 198.19.0.16/(32 - log2 N)
    /// posted as one managed scan.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = cidr_hosts)]
    hosts: u32,
    /// Most probes per chunk (the default makes 4 chunks a host).
    #[arg(long = "chunk-probes", value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..))]
    chunk_probes: u32,
    /// Use the binaries in DIR (default: build the release binaries).
    #[arg(long, value_name = "DIR")]
    bins: Option<PathBuf>,
    /// Lab name.
    #[arg(long, value_name = "NAME", default_value_t = format!("cl{}", std::process::id() % 100_000))]
    name: String,
}

/// `--hosts`: a power of two up to 16 (one CIDR block of the lab's extra hosts).
fn cidr_hosts(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|n: &u32| n.is_power_of_two() && *n <= 16)
        .ok_or_else(|| "takes 1, 2, 4, 8 or 16".into())
}

/// `--kill-one`: a percentage from 1 to 99, with or without `%`.
fn percent(s: &str) -> Result<u32, String> {
    s.trim_end_matches('%')
        .parse()
        .ok()
        .filter(|p| (1..=99).contains(p))
        .ok_or_else(|| "takes 1% to 99%".into())
}

/// `portscope-api` as the API's user with no capabilities, logging to `log` (created).
fn api_command(bins: &Path, log: &Path) -> anyhow::Result<Command> {
    let out = File::create(log)?;
    let mut cmd = Command::new("setpriv");
    crate::stack::as_api_user(&mut cmd)
        .arg("--inh-caps=-all")
        .arg(bins.join("portscope-api"))
        .env("RUST_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(cmd)
}

/// One worker process, stopped by PID on drop.
struct WorkerProc {
    node: u32,
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        stop(&mut self.child, false);
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    let o: Options = crate::args::parse("cluster", args);
    if o.kill_at.is_some() && o.nodes < 2 {
        bail!("--kill-one needs at least 2 nodes");
    }
    let bins = match &o.bins {
        Some(b) => b.clone(),
        None => crate::release::build_service(&crate::release::workspace_root(), "cluster")?,
    };
    let lab = LabGuard::up(&LabConfig {
        name: o.name.clone(),
        // Extra hosts 198.19.0.1-32: the scanned CIDR is 198.19.0.16/28 or a part of it.
        hosts: 32,
        scanners: o.nodes,
        ..LabConfig::default()
    })?;
    let pg = PgGuard::start()?;
    let mut engines = Engines::start(&lab, &bins, &[])?;
    let url = pg.url();
    let mut workers = Vec::new();
    for node in engines.nodes() {
        let log = node.log.with_file_name("worker.log");
        let child = api_command(&bins, &log)?
            .args(["worker", "--db", &url, "--engine-socket"])
            .arg(&node.socket)
            .args(["--node", &format!("node{}", node.number)])
            .spawn()
            .context("starting portscope-api worker")?;
        workers.push(WorkerProc {
            node: node.number,
            child: Some(child),
            log,
        });
    }
    let bits = o.hosts.trailing_zeros();
    let cidr = format!("198.19.0.16/{}", 32 - bits);
    let hosts: Vec<IpAddr> = (16..16 + o.hosts)
        .map(|k| IpAddr::V4(crate::lab::truth::extra_v4(k)))
        .collect();
    let api = ApiNode::start(&bins, &url, &o.name, o.chunk_probes)?;
    let token = api.token(&bins, &url, &cidr)?;
    // Let the workers reach the queue before the clock starts.
    std::thread::sleep(Duration::from_secs(1));
    let q = |sql: &str| pg.psql(DATABASE, sql);
    let wal0 = q("SELECT pg_current_wal_lsn()")?;
    let rows0 = written_rows(&pg)?;
    let started = Instant::now();
    let (code, body) = api
        .call(
            "POST",
            "/api/v1/scan",
            &token,
            Some(&format!(r#"{{"target":"{cidr}","profile":"deep"}}"#)),
        )
        .map_err(anyhow::Error::msg)?;
    if code != 201 {
        bail!("POST /api/v1/scan: {code} {body}\n{}", read(&api.log));
    }
    let reply: serde_json::Value = serde_json::from_str(&body)?;
    let id = reply["id"].as_str().unwrap_or_default().to_owned();
    if id.len() != 36 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        bail!("POST /api/v1/scan answered {body}, no scan id");
    }
    let mut killed = None;
    let wall = loop {
        let line = q(&format!(
            "SELECT s.status, (SELECT count(*) FROM scan_chunks c WHERE c.scan_id = s.id \
             AND c.status = 'done'), s.chunks_total FROM job_scans s WHERE s.id = '{id}'"
        ))?;
        let f: Vec<&str> = line.trim().split('|').collect();
        let (status, done, total): (&str, u64, u64) = match f.as_slice() {
            [s, d, t] => (s, d.parse()?, t.parse()?),
            _ => bail!("unexpected scan row {line:?}"),
        };
        if status != "running" {
            if status != "complete" {
                bail!("scan ended {status}");
            }
            break started.elapsed();
        }
        if let Some(at) = o.kill_at {
            if killed.is_none() && done * 100 >= u64::from(at) * total {
                let victim = o.nodes;
                if let Some(w) = workers.iter_mut().find(|w| w.node == victim) {
                    stop(&mut w.child, true);
                }
                engines.node_mut(victim).stop(true);
                eprintln!(
                    "cluster: killed node{victim} (worker and engine) at {done}/{total} chunks"
                );
                killed = Some(victim);
            }
        }
        if started.elapsed() > SCAN_LIMIT {
            for w in &workers {
                eprintln!("--- node{} worker log ---\n{}", w.node, read(&w.log));
            }
            bail!(
                "scan {id} not finished in {} s ({done}/{total})",
                SCAN_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Statistics reach pg_stat_* when a backend goes idle; give them a moment.
    std::thread::sleep(Duration::from_millis(1500));
    let wal = q(&format!(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{}')",
        wal0.trim()
    ))?;
    let wal: f64 = wal.trim().parse()?;
    let rows = written_rows(&pg)? - rows0;
    let sizes = q("SELECT pg_total_relation_size('port_results'), \
                   pg_total_relation_size('scan_chunks') + pg_total_relation_size('job_scans'), \
                   pg_total_relation_size('apalis.jobs') + pg_total_relation_size('apalis.workers')")?;
    let per_node = q(&format!(
        "SELECT node, count(*), sum(runs) FROM scan_chunks WHERE scan_id = '{id}' \
         GROUP BY node ORDER BY node"
    ))?;
    let reruns = q(&format!(
        "SELECT count(*) FROM scan_chunks WHERE scan_id = '{id}' AND runs > 1"
    ))?;
    let sent: u64 = q(&format!(
        "SELECT sum(sent) FROM scan_chunks WHERE scan_id = '{id}'"
    ))?
    .trim()
    .parse()?;
    let served = api.wait_complete(&token, &id)?;
    let mut wrong = exactness(&pg, &lab, &id, &hosts)?;
    if served["status"] != "complete" {
        wrong.push(format!("the API serves the scan as {}", served["status"]));
    }
    let pairs = hosts.len() as u64 * 65_535;
    let mprobes = sent as f64 / 1e6;

    println!(
        "cluster: {} nodes, deep scan of {} hosts ({pairs} pairs), POST /api/v1/scan {cidr} \
         to an API node without a worker",
        o.nodes,
        hosts.len()
    );
    if let Some(k) = killed {
        println!(
            "  node{k} killed with SIGKILL at {}% of chunks",
            o.kill_at.unwrap_or(0)
        );
    }
    println!(
        "  wall time: {:.2} s ({:.0} pairs/s)",
        wall.as_secs_f64(),
        pairs as f64 / wall.as_secs_f64()
    );
    for line in per_node.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if let [node, chunks, runs] = f.as_slice() {
            println!("  {node}: {chunks} chunks committed ({runs} runs started)");
        }
    }
    println!("  chunks run more than once: {}", reruns.trim());
    println!(
        "  the API serves it: {} grade {} ({} open ports in results)",
        served["status"], served["grade"], served["summary"]["open"]
    );
    println!(
        "  database: {:.0} WAL bytes and {:.0} rows written per million probes ({sent} probes); \
         sizes (results | scans+chunks | queue): {}",
        wal / mprobes,
        rows as f64 / mprobes,
        sizes.trim().replace('|', " | ")
    );
    if wrong.is_empty() {
        println!("  exact: every (host, port) pair has exactly one answer equal to the truth");
        Ok(0)
    } else {
        println!("  NOT exact: {} problems, e.g.:", wrong.len());
        for w in wrong.iter().take(10) {
            println!("    {w}");
        }
        Ok(1)
    }
}

/// The API node: `portscope-api --no-worker` on the cluster's database, listening on
/// loopback, unprivileged (it never probes); stopped by PID on drop, its directory removed.
struct ApiNode {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl ApiNode {
    /// Starts it with `chunk-probes` = `chunk_probes` and waits until it answers.
    fn start(bins: &Path, url: &str, name: &str, chunk_probes: u32) -> anyhow::Result<ApiNode> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("portscope-{name}-api"));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(&dir, Some(API_UID), Some(API_UID))?;
        let config = dir.join("api.toml");
        std::fs::write(
            &config,
            format!(
                "chunk-probes = {chunk_probes}\nsecret-file = \"{}\"\n",
                dir.join("api.secret").display()
            ),
        )?;
        std::os::unix::fs::chown(&config, Some(API_UID), Some(API_UID))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.join("api.log");
        let child = api_command(bins, &log)?
            .args(["--no-worker", "--db", url, "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--allow-target", "198.18.0.0/15"])
            .arg("--engine-socket")
            .arg(dir.join("no-engine.sock"))
            .spawn()
            .context("starting the API node")?;
        let node = ApiNode {
            child: Some(child),
            dir,
            log,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while node.call("GET", "/v1/openapi.json", "", None).map(|r| r.0) != Ok(200) {
            if Instant::now() > deadline {
                bail!("the API node never answered\n{}", read(&node.log));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(node)
    }

    /// A token scoped to `cidr`, made with the API's own CLI on the cluster's database.
    fn token(&self, bins: &Path, url: &str, cidr: &str) -> anyhow::Result<String> {
        crate::stack::create_token(
            Command::new(bins.join("portscope-api"))
                .args(["--db", url, "token", "create", "--name", "cluster"])
                .args(["--monthly-scans", "10", "--scope", cidr]),
        )
    }

    /// `method path` with the bearer `token` (none when empty) and a JSON `body`:
    /// (status, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let agent = crate::http::agent_from(
            IpAddr::from([127, 0, 0, 1]),
            crate::http::Timeouts {
                connect: Duration::from_secs(3),
                io: Duration::from_secs(10),
            },
        );
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let auth = format!("Bearer {token}");
        let resp = match (method, body) {
            ("POST", Some(b)) => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(b),
            ("GET", None) => agent.get(&url).header("authorization", &auth).call(),
            _ => return Err(format!("{method} with body {body:?} is not used")),
        };
        let mut resp = resp.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, text))
    }

    /// The scan as the API serves it once final (its finisher grades it; at most 30 s).
    fn wait_complete(&self, token: &str, id: &str) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self
                .call("GET", &format!("/api/v1/scan/{id}"), token, None)
                .map_err(anyhow::Error::msg)?;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let live = v["status"] == "queued" || v["status"] == "running";
            if code == 200 && !live {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("GET /api/v1/scan/{id}: {code} {body}\n{}", read(&self.log));
            }
            // The managed API allows 60 requests a minute per client.
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
}

impl Drop for ApiNode {
    fn drop(&mut self) {
        stop(&mut self.child, false);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Rows inserted, updated or deleted in every user table so far.
fn written_rows(pg: &PgGuard) -> anyhow::Result<i64> {
    let n = pg.psql(
        DATABASE,
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables",
    )?;
    Ok(n.trim().parse()?)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Every problem with scan `id` against the truth: a stored pair that should not be, one
/// missing or different, a chunk not done, closed counts that do not add up.
fn exactness(
    pg: &PgGuard,
    lab: &LabGuard,
    id: &str,
    hosts: &[IpAddr],
) -> anyhow::Result<Vec<String>> {
    let mut wrong = Vec::new();
    let mut stored: BTreeMap<(IpAddr, u16), (String, String)> = BTreeMap::new();
    let rows = pg.psql(
        DATABASE,
        &format!("SELECT address, port, state, reason FROM port_results WHERE scan_id = '{id}'"),
    )?;
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let [addr, port, state, reason] = f.as_slice() else {
            bail!("unexpected result row {line:?}");
        };
        let key = (addr.parse()?, port.parse()?);
        if stored
            .insert(key, (state.to_string(), reason.to_string()))
            .is_some()
        {
            wrong.push(format!("{addr}:{port} stored twice"));
        }
    }
    let mut closed_want = 0u64;
    for &addr in hosts {
        let host = lab.truth().host(addr).context("a lab host")?;
        closed_want += host.closed_count() as u64;
        for port in 1..=65535u16 {
            let got = stored.remove(&(addr, port));
            let got = got.as_ref().map(|(s, r)| (s.as_str(), r.as_str()));
            let ok = match host.expected(port) {
                Expected::Open => got == Some(("open", "syn-ack")),
                Expected::FilteredSilent => got == Some(("filtered", "no-response")),
                Expected::FilteredIcmp => got == Some(("filtered", "icmp-unreachable")),
                Expected::Closed => got.is_none(),
            };
            if !ok {
                wrong.push(format!(
                    "{addr}:{port} want {:?} got {got:?}",
                    host.expected(port)
                ));
            }
        }
    }
    for ((addr, port), _) in stored {
        wrong.push(format!("{addr}:{port} stored but not scanned"));
    }
    let chunks = pg.psql(
        DATABASE,
        &format!(
            "SELECT count(*) FILTER (WHERE status <> 'done'), coalesce(sum(closed), 0), \
             sum(probes) FROM scan_chunks WHERE scan_id = '{id}'"
        ),
    )?;
    let f: Vec<u64> = chunks
        .trim()
        .split('|')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if let [undone, closed, probes] = f.as_slice() {
        if *undone != 0 {
            wrong.push(format!("{undone} chunks not done"));
        }
        if *closed != closed_want {
            wrong.push(format!(
                "closed ports counted {closed}, truth {closed_want}"
            ));
        }
        if *probes != hosts.len() as u64 * 65_535 {
            wrong.push(format!("chunks cover {probes} pairs"));
        }
    }
    Ok(wrong)
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        crate::args::try_parse("cluster", &args)
    }

    #[test]
    fn options_take_their_defaults_and_bounds() {
        let o = parse(&["--nodes", "3", "--kill-one", "50%"]).unwrap();
        assert_eq!(
            (o.nodes, o.kill_at, o.hosts, o.chunk_probes),
            (3, Some(50), 16, 16_384)
        );
        assert!(o.bins.is_none() && o.name.starts_with("cl"));
        for bad in [
            &["--hosts", "4"][..],
            &["--nodes", "0"],
            &["--nodes", "17"],
            &["--nodes", "2", "--kill-one", "100"],
            &["--nodes", "2", "--hosts", "3"],
            &["--nodes", "2", "--hosts", "32"],
            &["--nodes", "2", "--chunk-probes", "0"],
            &["--nodes", "2", "--frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
