//! `cargo xtask bench --service`: the self-scan API's own figures (issue 3), measured end to end in the lab: POST-to-complete times, 100 concurrent deep scans, API latency under load.
//!
//! The engine daemon and the control API run in the lab's scanner namespace (`Stack`), with
//! the engine's metrics on 127.0.0.1:9464 of that namespace. Every client is an *agent*: this
//! program re-executed inside the target namespace (`xtask bench --service-agent`), which
//! issues the HTTP requests the parent asks for over its stdin, each bound to a lab host
//! address (so the requester the API sees is that lab host), times them with its own
//! monotonic clock, and also runs the webhook receiver (on 198.19.255.254:9999, an address no
//! scan targets). A scan's POST-to-complete time is the agent's time of the webhook's arrival
//! minus the time the POST's response was read: no polling granularity.
//!
//! Phases, in one run:
//! 1. fast and deep scans from 198.18.0.2, one at a time, `--repeats` times each (the API is
//!    restarted between deep scans: its 1-deep-scan-per-IP-per-5-minutes counter lives in
//!    memory);
//! 2. one deep scan alone from an extra host (the single-scan rate), then `--concurrent`
//!    deep scans at once from as many extra hosts, engine `--max-running` at its default;
//! 3. `--concurrent` more deep scans from other hosts while every scanning host polls (GET)
//!    and re-POSTs (joining its live scan) and `--pollers` more addresses poll, each address
//!    at most 28 requests a minute (the edge limit is 30): latency in `hdrhistogram`s;
//! 4. (unless `--skip-extra`) the concurrent burst again with `--max-running-alt`, and once
//!    with the engine's default queue (`--max-queued 64`) to count the scans it refuses.
//!
//! Every host is its own "ASN" (`--asn-table`), so the per-ASN deep limit (200 an hour) does
//! not throttle the bench. Probes are the engine's `portscope_engine_probes_sent_total`.
//!
//! **Network safety:** everything runs in the lab's namespaces (no default route); the agent
//! refuses any API or listen address outside the lab's 198.18.0.0/15; every request, wait and
//! child process is bounded; only processes started here are stopped, by PID; the labs are
//! torn down on every exit path (`LabGuard`, `Stack` and `Agent` drop in that order).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

use crate::lab::{truth, xtask_bin, Expected, Lab, LabConfig, LabGuard, Truth};
use crate::stack::{Stack, StackOptions, API_PORT};

/// The hidden flag that turns `xtask bench` into the in-namespace agent.
pub const AGENT: &str = "--service-agent";

const USAGE: &str = "\
usage: cargo xtask bench --service [--repeats N] [--concurrent N] [--pollers N]
                                   [--max-running-alt N] [--skip-extra] [--bins DIR]

  --repeats N          fast and deep scans from one host, N times each; the median is reported (default 3)
  --concurrent N       deep scans started at once from N lab hosts (default 100)
  --pollers N          extra addresses that only poll during the load phase (default 200)
  --max-running-alt N  repeat the concurrent burst with engine --max-running N (default 32)
  --skip-extra         skip that repeat and the engine-default-queue check
  --bins DIR           use portscope and portscope-api from DIR instead of building target/release

Writes target/bench/service.json; logs in target/bench/service/.";

/// The engine's `--max-running` default (engine/cli/src/engine_cmd.rs).
const ENGINE_MAX_RUNNING_DEFAULT: u32 = 8;
/// The engine's `--max-queued` default.
const ENGINE_MAX_QUEUED_DEFAULT: u32 = 64;
/// Queue length for the main runs: every concurrent scan is accepted.
const MAX_QUEUED: u32 = 1024;
/// The rate `Stack` gives the engine (its global ceiling and each chunk's rate).
const ENGINE_RATE: u64 = 250_000;
/// The engine's own `--rate` default.
const ENGINE_DEFAULT_RATE: u64 = 10_000;
/// The engine's metrics endpoint inside the scanner namespace.
const METRICS_LISTEN: &str = "127.0.0.1:9464";
/// The API inside the scanner namespace (`Stack::url_v4`).
const API_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), API_PORT);
/// The webhook receiver's port, on the lab's last extra host (which no scan targets).
const HOOK_PORT: u16 = 9999;
/// The host of phase 1 (the lab's primary target).
const HOST: Ipv4Addr = truth::TARGET_V4;
/// Pause between single scans.
const SETTLE: Duration = Duration::from_millis(1000);
/// Time between two requests of one load client: at most 28 a minute (edge limit 30).
const LOAD_INTERVAL: Duration = Duration::from_millis(2200);
/// Bounds on waiting.
const FAST_LIMIT: Duration = Duration::from_secs(90);
const DEEP_LIMIT: Duration = Duration::from_secs(300);
const BURST_LIMIT: Duration = Duration::from_secs(1200);
/// Longest wait for one request's reply from the agent (its own socket timeouts are shorter).
const REQUEST_LIMIT: Duration = Duration::from_secs(40);
/// The agent's socket timeouts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle GETs before the load phase (at most one per poller address).
const IDLE_REQUESTS: usize = 100;

/// The API's fast-scan ports (control-api/README.md).
const FAST_PORTS: [u16; 32] = [
    21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 465, 587, 993, 995, 1433, 1521,
    2049, 3306, 3389, 5432, 5900, 6379, 8080, 8443, 9000, 9200, 11211, 27017, 50000,
];

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Options {
    repeats: usize,
    concurrent: u32,
    pollers: u32,
    max_running_alt: u32,
    skip_extra: bool,
    bins: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options {
            repeats: 3,
            concurrent: 100,
            pollers: 200,
            max_running_alt: 32,
            skip_extra: false,
            bins: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut num = |flag: &str, lo: u64, hi: u64| -> anyhow::Result<u64> {
                it.next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|n| (lo..=hi).contains(n))
                    .with_context(|| format!("{flag} takes a number from {lo} to {hi}\n\n{USAGE}"))
            };
            match arg.as_str() {
                "--repeats" => o.repeats = num("--repeats", 1, 20)? as usize,
                // Two sets of hosts plus the single-scan host fit in the lab's 1000.
                "--concurrent" => o.concurrent = num("--concurrent", 1, 499)? as u32,
                "--pollers" => o.pollers = num("--pollers", 0, 996)? as u32,
                "--max-running-alt" => o.max_running_alt = num("--max-running-alt", 1, 64)? as u32,
                "--skip-extra" => o.skip_extra = true,
                "--bins" => {
                    o.bins = Some(
                        it.next()
                            .map(PathBuf::from)
                            .with_context(|| format!("--bins needs a directory\n\n{USAGE}"))?,
                    );
                }
                other => bail!("unknown bench --service flag {other:?}\n\n{USAGE}"),
            }
        }
        if o.main_lab_hosts() > truth::MAX_EXTRA_HOSTS {
            bail!(
                "2 x --concurrent + --pollers + 2 lab hosts is more than the lab's {}",
                truth::MAX_EXTRA_HOSTS
            );
        }
        Ok(o)
    }

    /// Extra hosts of the main lab: the burst, the single scan, the load phase's scans, the
    /// pollers (every client address must be a lab host: the lab drops packets to the
    /// others), and the webhook receiver.
    fn main_lab_hosts(&self) -> u32 {
        2 * self.concurrent + self.pollers + 2
    }
}

// ---------------------------------------------------------------------------------------
// The agent: runs inside the target namespace
// ---------------------------------------------------------------------------------------

/// One request the parent asks the agent to make.
#[derive(Debug, Serialize, Deserialize)]
struct AgentReq {
    id: u64,
    /// The lab host address the connection is bound to (the requester the API sees).
    src: IpAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// A line the agent writes to stdout. Times are microseconds of the agent's monotonic clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AgentMsg {
    Ready,
    Resp {
        id: u64,
        /// Just before connecting.
        t_start_us: u64,
        /// When the whole response had been read.
        t_end_us: u64,
        /// 0 when no response came (see `error`).
        status: u16,
        body: String,
        error: Option<String>,
    },
    Hook {
        /// When the webhook's body had been read (before the 204 is sent back).
        t_us: u64,
        path: String,
        body: String,
    },
}

/// Whether `ip` is in the lab's 198.18.0.0/15.
fn in_lab(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => u32::from(a) >> 17 == u32::from(truth::SCANNER_V4) >> 17,
        IpAddr::V6(_) => false,
    }
}

/// `xtask bench --service-agent --api ADDR --hook ADDR`: reads `AgentReq` lines on stdin,
/// answers with `AgentMsg` lines on stdout, serves webhooks on `--hook`. Exits when stdin
/// closes (the parent is gone).
pub fn agent(args: &[String]) -> anyhow::Result<i32> {
    let mut api = None;
    let mut hook = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut addr = |flag: &str| -> anyhow::Result<SocketAddr> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{flag} takes IP:PORT"))
        };
        match a.as_str() {
            "--api" => api = Some(addr("--api")?),
            "--hook" => hook = Some(addr("--hook")?),
            other => bail!("unknown agent flag {other:?}"),
        }
    }
    let api: SocketAddr = api.context("--api is required")?;
    let hook: SocketAddr = hook.context("--hook is required")?;
    for a in [api, hook] {
        if !in_lab(a.ip()) {
            bail!("{a} is outside the lab's 198.18.0.0/15: refusing");
        }
    }
    let t0 = Instant::now();
    let listener =
        TcpListener::bind(hook).with_context(|| format!("binding the webhook receiver {hook}"))?;
    thread::spawn(move || serve_hooks(&listener, t0));
    emit(&AgentMsg::Ready);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        thread::spawn(move || {
            let msg = match serde_json::from_str::<AgentReq>(&line) {
                Ok(req) => handle_request(api, &req, t0),
                Err(e) => AgentMsg::Resp {
                    id: u64::MAX,
                    t_start_us: 0,
                    t_end_us: 0,
                    status: 0,
                    body: String::new(),
                    error: Some(format!("bad request line: {e}")),
                },
            };
            emit(&msg);
        });
    }
    Ok(0)
}

fn micros_since(t0: Instant, t: Instant) -> u64 {
    u64::try_from(t.duration_since(t0).as_micros()).unwrap_or(u64::MAX)
}

fn emit(msg: &AgentMsg) {
    let line = serde_json::to_string(msg).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn handle_request(api: SocketAddr, req: &AgentReq, t0: Instant) -> AgentMsg {
    let start = Instant::now();
    let result = http_call(api, req);
    let end = Instant::now();
    let (status, body, error) = match result {
        Ok((status, body)) => (status, body, None),
        Err(e) => (0, String::new(), Some(format!("{e:#}"))),
    };
    AgentMsg::Resp {
        id: req.id,
        t_start_us: micros_since(t0, start),
        t_end_us: micros_since(t0, end),
        status,
        body,
        error,
    }
}

/// One HTTP/1.1 request (`Connection: close`) from `req.src` to the API; (status, body).
fn http_call(api: SocketAddr, req: &AgentReq) -> anyhow::Result<(u16, String)> {
    if !matches!(req.method.as_str(), "GET" | "POST") || !req.path.starts_with("/v1/") {
        bail!("refusing {} {}", req.method, req.path);
    }
    let clean = |s: &str| !s.contains(['\r', '\n']);
    if !clean(&req.path) || !req.headers.iter().all(|(k, v)| clean(k) && clean(v)) {
        bail!("CR or LF in the request");
    }
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SocketAddr::new(req.src, 0).into())
        .with_context(|| format!("binding to {}", req.src))?;
    sock.connect_timeout(&api.into(), CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {api}"))?;
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {api}\r\nUser-Agent: portscope-bench\r\nAccept: */*\r\nConnection: close\r\n",
        req.method, req.path
    );
    if req.method == "POST" {
        text += "Content-Length: 0\r\n";
    }
    for (k, v) in &req.headers {
        let _ = write!(text, "{k}: {v}\r\n");
    }
    text += "\r\n";
    s.write_all(text.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the response")?;
    parse_response(&raw)
}

/// Splits an HTTP message into head and body (chunked or `Content-Length` bodies decoded).
fn split_message(raw: &[u8]) -> anyhow::Result<(String, Vec<u8>)> {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let rest = &raw[at + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < n {
            bail!("body cut short: {} of {n} bytes", rest.len());
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((head, body))
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("chunk cut short");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// (status, body) of a response.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let (head, body) = split_message(raw)?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn serve_hooks(listener: &TcpListener, t0: Instant) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        thread::spawn(move || {
            if let Ok((t, path, body)) = read_hook(conn) {
                emit(&AgentMsg::Hook {
                    t_us: micros_since(t0, t),
                    path,
                    body,
                });
            }
        });
    }
}

/// Reads one webhook POST, answers 204; (arrival time, path, body).
fn read_hook(mut c: TcpStream) -> anyhow::Result<(Instant, String, String)> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > 4 << 20 {
            bail!("webhook too large");
        }
        if let Ok((head, body)) = split_message(&raw) {
            let want = head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if want.is_none_or(|n| body.len() >= n) {
                break;
            }
        }
    }
    let t = Instant::now();
    let (head, body) = split_message(&raw)?;
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "POST" {
        bail!("webhook method {method}");
    }
    let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    Ok((
        t,
        path.to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

// ---------------------------------------------------------------------------------------
// The parent's handle on the agent
// ---------------------------------------------------------------------------------------

/// One reply as the parent sees it.
#[derive(Debug, Clone, Default)]
struct Reply {
    t_start_us: u64,
    t_end_us: u64,
    status: u16,
    body: String,
    error: Option<String>,
}

impl Reply {
    fn failed(e: impl Into<String>) -> Reply {
        Reply {
            error: Some(e.into()),
            ..Reply::default()
        }
    }

    fn latency_us(&self) -> u64 {
        self.t_end_us.saturating_sub(self.t_start_us)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `404`, `429 rate limit reached: ...`, `error: connect ...`, for counting outcomes.
    fn outcome(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => format!("error: {e}"),
            (None, 200) => "200".into(),
            (None, s) => {
                let v = self.json();
                let what = v["message"]
                    .as_str()
                    .or(v["error"].as_str())
                    .unwrap_or("")
                    .to_owned();
                format!("{s} {what}").trim().to_owned()
            }
        }
    }
}

/// A webhook as received.
#[derive(Debug, Clone)]
struct Hook {
    t_us: u64,
    body: String,
}

#[derive(Debug, Default)]
struct InboxState {
    ready: bool,
    closed: bool,
    replies: HashMap<u64, Reply>,
    /// By tag (`/hook/<tag>`).
    hooks: HashMap<String, Hook>,
}

#[derive(Debug, Default)]
struct Inbox {
    state: Mutex<InboxState>,
    cv: Condvar,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The agent process in the target namespace. Dropping it kills it (by PID) and reaps it.
#[derive(Debug)]
struct Agent {
    child: Child,
    stdin: Mutex<ChildStdin>,
    inbox: Arc<Inbox>,
    next: AtomicU64,
    reader: Option<thread::JoinHandle<()>>,
    log: PathBuf,
    /// Where the agent receives webhooks.
    hook: SocketAddr,
}

impl Agent {
    fn start(lab: &Lab, hook: SocketAddr, log: &Path) -> anyhow::Result<Agent> {
        let mut child = lab
            .target_cmd(xtask_bin()?)
            .args(["bench", AGENT, "--api"])
            .arg(API_ADDR.to_string())
            .arg("--hook")
            .arg(hook.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log)?)
            .spawn()
            .context("starting the agent in the target namespace")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("agent pipes missing");
        };
        let inbox = Arc::new(Inbox::default());
        let reader = {
            let inbox = Arc::clone(&inbox);
            thread::spawn(move || read_agent(stdout, &inbox))
        };
        let agent = Agent {
            child,
            stdin: Mutex::new(stdin),
            inbox,
            next: AtomicU64::new(1),
            reader: Some(reader),
            log: log.to_owned(),
            hook,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if agent.wait(deadline, |s| s.ready.then_some(())).is_none() {
            bail!(
                "the agent did not start: {}",
                fs::read_to_string(&agent.log).unwrap_or_default().trim()
            );
        }
        Ok(agent)
    }

    /// Waits until `f` returns something, the agent is gone, or `deadline`.
    fn wait<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&mut InboxState) -> Option<T>,
    ) -> Option<T> {
        let mut st = self.inbox.lock();
        loop {
            if let Some(v) = f(&mut st) {
                return Some(v);
            }
            let now = Instant::now();
            if st.closed || now >= deadline {
                return None;
            }
            st = self
                .inbox
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// `method path` from `src` to the API, optionally with a webhook to `/hook/<tag>`.
    fn request(&self, src: Ipv4Addr, method: &str, path: &str, hook_tag: Option<&str>) -> Reply {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let headers = hook_tag
            .map(|t| {
                vec![(
                    "X-Callback-Url".to_owned(),
                    format!("http://{}/hook/{t}", self.hook),
                )]
            })
            .unwrap_or_default();
        let req = AgentReq {
            id,
            src: src.into(),
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
        };
        let line = match serde_json::to_string(&req) {
            Ok(l) => l,
            Err(e) => return Reply::failed(e.to_string()),
        };
        {
            let mut w = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                return Reply::failed(format!("agent stdin: {e}"));
            }
        }
        self.wait(Instant::now() + REQUEST_LIMIT, |s| s.replies.remove(&id))
            .unwrap_or_else(|| Reply::failed("no reply from the agent"))
    }

    /// Waits for the webhooks of all `tags` (until `deadline`); returns those that came.
    fn hooks(&self, tags: &[String], deadline: Instant) -> HashMap<String, Hook> {
        self.wait(deadline, |s| {
            tags.iter().all(|t| s.hooks.contains_key(t)).then_some(())
        });
        let st = self.inbox.lock();
        tags.iter()
            .filter_map(|t| st.hooks.get(t).map(|h| (t.clone(), h.clone())))
            .collect()
    }

    fn has_hook(&self, tag: &str) -> bool {
        self.inbox.lock().hooks.contains_key(tag)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Our own child only, by PID (`ip netns exec` exec'd the agent).
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_agent(stdout: ChildStdout, inbox: &Inbox) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<AgentMsg>(&line) else {
            continue;
        };
        let mut st = inbox.lock();
        match msg {
            AgentMsg::Ready => st.ready = true,
            AgentMsg::Resp {
                id,
                t_start_us,
                t_end_us,
                status,
                body,
                error,
            } => {
                st.replies.insert(
                    id,
                    Reply {
                        t_start_us,
                        t_end_us,
                        status,
                        body,
                        error,
                    },
                );
            }
            AgentMsg::Hook { t_us, path, body } => {
                let tag = path.strip_prefix("/hook/").unwrap_or(&path).to_owned();
                st.hooks.insert(tag, Hook { t_us, body });
            }
        }
        drop(st);
        inbox.cv.notify_all();
    }
    inbox.lock().closed = true;
    inbox.cv.notify_all();
}

// ---------------------------------------------------------------------------------------
// Engine metrics
// ---------------------------------------------------------------------------------------

/// One reading of the engine's metrics.
#[derive(Debug, Clone, Default, Serialize)]
struct EngineSample {
    /// Seconds since the phase started (0 for single readings).
    t_s: f64,
    probes_sent: u64,
    running: u64,
    queued: u64,
    complete: u64,
    failed: u64,
    /// Packets the kernel dropped because the engine's capture buffer was full.
    kernel_drops: u64,
    /// `/proc/net/softnet_stat` drops, summed over CPUs (not from the engine).
    backlog_drops: u64,
    /// `portscope_engine_discards_total` by reason (not in the timeline).
    #[serde(skip)]
    discards: BTreeMap<String, u64>,
}

fn parse_metrics(text: &str) -> anyhow::Result<EngineSample> {
    let mut s = EngineSample::default();
    let mut seen = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        match name.trim() {
            "portscope_engine_probes_sent_total" => {
                s.probes_sent = v;
                seen = true;
            }
            "portscope_engine_scans{state=\"running\"}" => s.running = v,
            "portscope_engine_scans{state=\"queued\"}" => s.queued = v,
            "portscope_engine_scans{state=\"complete\"}" => s.complete = v,
            "portscope_engine_scans{state=\"failed\"}" => s.failed = v,
            "portscope_engine_kernel_drops_total" => s.kernel_drops = v,
            other => {
                if let Some(reason) = other
                    .strip_prefix("portscope_engine_discards_total{reason=\"")
                    .and_then(|r| r.strip_suffix("\"}"))
                {
                    s.discards.insert(reason.to_owned(), v);
                }
            }
        }
    }
    if !seen {
        bail!("no portscope_engine_probes_sent_total in the engine's metrics");
    }
    Ok(s)
}

/// Sum of the `dropped` column (the second) of `/proc/net/softnet_stat`: packets the per-CPU
/// input backlog had no room for.
fn parse_softnet(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// The engine's metrics, read with curl inside the scanner namespace, and the backlog drops.
fn engine_sample(lab: &Lab) -> anyhow::Result<EngineSample> {
    let backlog_drops =
        parse_softnet(&fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default());
    let out = lab
        .scanner_cmd("curl")
        .args(["-sS", "--max-time", "5", "--connect-timeout", "2"])
        .arg(format!("http://{METRICS_LISTEN}/metrics"))
        .stdin(Stdio::null())
        .output()
        .context("running curl for the engine's metrics")?;
    if !out.status.success() {
        bail!(
            "reading the engine's metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut s = parse_metrics(&String::from_utf8_lossy(&out.stdout))?;
    s.backlog_drops = backlog_drops;
    Ok(s)
}

/// Samples the engine every 500 ms until `stop`.
fn sample_until(lab: &Lab, stop: &AtomicBool, t0: Instant) -> Vec<EngineSample> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut s) = engine_sample(lab) {
            s.t_s = t0.elapsed().as_secs_f64();
            out.push(s);
        }
        let next = Instant::now() + Duration::from_millis(500);
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(20));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// Latency percentiles of one kind of request, client side.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    n: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 us to 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        n: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    })
}

/// One scan, from its POST to its webhook.
#[derive(Debug, Clone, Serialize)]
struct ScanRun {
    src: String,
    kind: String,
    post_status: u16,
    post_outcome: String,
    post_latency_ms: f64,
    /// POST response read -> webhook received.
    post_to_complete_s: Option<f64>,
    /// POST sent -> webhook received (the rate's denominator).
    wall_s: Option<f64>,
    /// Webhook received, seconds after the burst's first POST (bursts only).
    done_at_s: Option<f64>,
    /// `complete`, `failed: REASON`, `no webhook`, `not accepted`.
    status: String,
    /// The API's `duration_ms` (the engine's run time, queue excluded).
    duration_ms: Option<u64>,
    open_found: usize,
    open_ok: bool,
    filtered_ok: bool,
    /// How the result differs from the truth, if it does (the first 8 ports of each kind).
    diff: Option<String>,
    /// Ports whose open/filtered/closed state differs from the truth.
    wrong_ports: usize,
    /// Single scans only.
    probes: Option<u64>,
    probes_per_s: Option<f64>,
}

impl ScanRun {
    fn truth_ok(&self) -> bool {
        self.status == "complete" && self.open_ok && self.filtered_ok
    }
}

fn ports_of(v: &Value, key: &str) -> BTreeSet<u16> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["port"].as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The open and filtered ports of `ip` a `kind` scan should report.
fn want(truth: &Truth, ip: IpAddr, kind: &str) -> Option<(BTreeSet<u16>, BTreeSet<u16>)> {
    let host = truth.host(ip)?;
    let scanned: Vec<u16> = if kind == "deep" {
        host.open
            .iter()
            .chain(&host.filtered_silent)
            .chain(&host.filtered_icmp)
            .copied()
            .collect()
    } else {
        FAST_PORTS.to_vec()
    };
    let of = |f: fn(Expected) -> bool| -> BTreeSet<u16> {
        scanned
            .iter()
            .copied()
            .filter(|p| f(host.expected(*p)))
            .collect()
    };
    Some((
        of(|e| e == Expected::Open),
        of(|e| matches!(e, Expected::FilteredSilent | Expected::FilteredIcmp)),
    ))
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// A `ScanRun` from the POST's reply and the webhook, checked against the truth.
fn scan_run(
    truth: &Truth,
    src: Ipv4Addr,
    kind: &str,
    post: &Reply,
    hook: Option<&Hook>,
) -> ScanRun {
    let mut run = ScanRun {
        src: src.to_string(),
        kind: kind.to_owned(),
        post_status: post.status,
        post_outcome: post.outcome(),
        post_latency_ms: post.latency_us() as f64 / 1000.0,
        post_to_complete_s: None,
        wall_s: None,
        done_at_s: None,
        status: if post.status == 200 {
            "no webhook".into()
        } else {
            "not accepted".into()
        },
        duration_ms: None,
        open_found: 0,
        open_ok: false,
        filtered_ok: false,
        diff: None,
        wrong_ports: 0,
        probes: None,
        probes_per_s: None,
    };
    let Some(hook) = hook else { return run };
    run.post_to_complete_s = Some(secs(hook.t_us.saturating_sub(post.t_end_us)));
    run.wall_s = Some(secs(hook.t_us.saturating_sub(post.t_start_us)));
    let v: Value = serde_json::from_str(&hook.body).unwrap_or(Value::Null);
    run.status = match v["status"].as_str() {
        Some("complete") => "complete".into(),
        Some("failed") => format!("failed: {}", v["fail_reason"].as_str().unwrap_or("?")),
        other => format!("webhook status {other:?}"),
    };
    run.duration_ms = v["duration_ms"].as_u64();
    let open = ports_of(&v, "ports_open");
    run.open_found = open.len();
    if let Some((want_open, want_filtered)) = want(truth, src.into(), kind) {
        let filtered = ports_of(&v, "ports_filtered");
        run.open_ok = v["ip"] == src.to_string() && open == want_open;
        run.filtered_ok = filtered == want_filtered;
        let mut diff = Vec::new();
        for (what, got, want) in [
            ("open", &open, &want_open),
            ("filtered", &filtered, &want_filtered),
        ] {
            let missing: Vec<_> = want.difference(got).collect();
            let extra: Vec<_> = got.difference(want).collect();
            run.wrong_ports += missing.len() + extra.len();
            for (how, ports) in [("missing", missing), ("extra", extra)] {
                if !ports.is_empty() {
                    let first: Vec<_> = ports.iter().take(8).collect();
                    diff.push(format!("{what} {how}: {} {first:?}", ports.len()));
                }
            }
        }
        run.diff = (!diff.is_empty()).then(|| diff.join("; "));
    }
    run
}

/// Median of the values present.
fn median(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Concurrent deep scans, one per host.
#[derive(Debug, Serialize)]
struct Burst {
    label: String,
    max_running: u32,
    max_queued: u32,
    scans: usize,
    post_outcomes: BTreeMap<String, usize>,
    accepted: usize,
    complete: usize,
    /// Complete, and open and filtered ports equal the truth of that host.
    truth_ok: usize,
    /// First POST sent -> last webhook received.
    wall_s: Option<f64>,
    probes: u64,
    probes_per_s: Option<f64>,
    /// Replies the kernel dropped (capture buffer full) during the burst.
    kernel_drops: u64,
    /// Packets dropped by the kernel's per-CPU input backlog (`/proc/net/softnet_stat`, all
    /// namespaces: the veth's traffic goes through it) during the burst.
    backlog_drops: u64,
    /// Ports of all scans whose state differs from the truth.
    wrong_ports: usize,
    /// Replies the engine received but discarded, by reason (non-zero deltas only).
    discards: BTreeMap<String, u64>,
    first_done_s: Option<f64>,
    median_done_s: Option<f64>,
    median_duration_ms: Option<f64>,
    max_duration_ms: Option<u64>,
    post_latency: Option<Latency>,
    peak_running: u64,
    peak_queued: u64,
    /// Extra observations (the default-queue check).
    note: Option<String>,
    timeline: Vec<EngineSample>,
    runs: Vec<ScanRun>,
}

/// The load phase.
#[derive(Debug, Serialize)]
struct Load {
    scan_clients: usize,
    pollers: usize,
    interval_ms: u64,
    duration_s: f64,
    requests: u64,
    requests_per_s: f64,
    get_idle: Option<Latency>,
    get: Option<Latency>,
    post_join: Option<Latency>,
    post_new: Option<Latency>,
    /// `GET 200`, `POST 429 rate limit reached: ...`, ... over the whole phase.
    outcomes: BTreeMap<String, u64>,
    rate_limited: u64,
    errors: u64,
    /// The scans of this phase (webhook-timed, as in the burst).
    scans: Burst,
}

#[derive(Debug, Serialize)]
struct Phase1 {
    host: String,
    fast: Vec<ScanRun>,
    deep: Vec<ScanRun>,
    fast_median_s: Option<f64>,
    deep_median_s: Option<f64>,
    fast_duration_ms_median: Option<f64>,
    deep_duration_ms_median: Option<f64>,
}

/// One line of the table.
#[derive(Debug, Serialize)]
struct Row {
    section: String,
    metric: String,
    value: String,
    reference: String,
}

#[derive(Debug, Serialize)]
struct Report {
    generated_unix: u64,
    cpus: usize,
    loadavg_before: String,
    engine_rate_pps: u64,
    engine_max_running_default: u32,
    engine_max_queued_default: u32,
    engine_chunks_in_flight: u32,
    deep_chunks: u32,
    options: BTreeMap<String, String>,
    rows: Vec<Row>,
    notes: Vec<String>,
    phase1: Phase1,
    /// Phase 1 again at the engine's default rate (unless `--skip-extra`).
    default_rate: Option<Phase1>,
    single: ScanRun,
    bursts: Vec<Burst>,
    load: Load,
}

// ---------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------

/// `cargo xtask bench --service`; `args` without `--service`.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "help" | "--help" | "-h"))
    {
        println!("{USAGE}");
        return Ok(0);
    }
    let opts = Options::parse(args)?;
    let root = super::workspace_root();
    let out_dir = root.join("target/bench");
    let logs = out_dir.join("service");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let bins = match &opts.bins {
        Some(dir) => dir.clone(),
        None => {
            eprintln!("bench --service: building the release binaries ...");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "-p",
                    "portscope",
                    "-p",
                    "portscope-control-api",
                ])
                .current_dir(&root)
                .status()
                .context("running cargo build")?;
            if !status.success() {
                bail!("cargo build failed");
            }
            root.join("target/release")
        }
    };
    let loadavg_before = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());

    // Main lab: phase 1 on 198.18.0.2; extra hosts 1..=N burst, N+1 single, N+2..=2N+1 load
    // scans, then the pollers, then the webhook receiver.
    let n = opts.concurrent;
    let (one, single, main_burst, load) = {
        let mut s = Session::open("bsvc", opts.main_lab_hosts(), &[], &bins, &logs)?;
        let agent = s.agent.as_ref().context("the agent is gone")?;
        main_lab(&mut s.stack, agent, &opts)?
    };
    let mut bursts = vec![main_burst];
    let mut default_rate = None;
    if !opts.skip_extra {
        let alt = opts.max_running_alt.to_string();
        let s = Session::open("bsvc2", n + 1, &["--max-running", &alt], &bins, &logs)?;
        eprintln!("bench --service: {n} deep scans at once, engine --max-running {alt}");
        bursts.push(burst(
            &s.stack,
            s.agent()?,
            &hosts(1, n),
            "alt",
            &format!("max-running {alt}"),
            opts.max_running_alt,
            MAX_QUEUED,
        )?);
        drop(s);

        let queued = ENGINE_MAX_QUEUED_DEFAULT.to_string();
        let s = Session::open("bsvc3", n + 1, &["--max-queued", &queued], &bins, &logs)?;
        eprintln!(
            "bench --service: {n} deep scans at once, engine defaults (--max-queued {queued})"
        );
        let agent = s.agent()?;
        let mut b = burst(
            &s.stack,
            agent,
            &hosts(1, n),
            "dq",
            "engine defaults (max-queued 64)",
            ENGINE_MAX_RUNNING_DEFAULT,
            ENGINE_MAX_QUEUED_DEFAULT,
        )?;
        // A refused host asks again at once.
        if let Some(r) = b.runs.iter().find(|r| r.post_status != 200) {
            let src: Ipv4Addr = r.src.parse()?;
            let again = agent.request(src, "POST", "/v1/deep", None);
            b.note = Some(format!(
                "{} of {} POSTs refused; {src} POSTing again at once gets: {}",
                b.scans - b.accepted,
                b.scans,
                again.outcome()
            ));
        }
        bursts.push(b);
        drop(s);

        let rate = ENGINE_DEFAULT_RATE.to_string();
        let mut s = Session::open("bsvc4", 1, &["--rate", &rate], &bins, &logs)?;
        eprintln!(
            "bench --service: fast and deep scans from {HOST} at the engine's default --rate {rate}"
        );
        let agent = s.agent.as_ref().context("the agent is gone")?;
        default_rate = Some(phase1(&mut s.stack, agent, opts.repeats)?);
        drop(s);
    }

    let report = Report {
        generated_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cpus,
        loadavg_before,
        engine_rate_pps: ENGINE_RATE,
        engine_max_running_default: ENGINE_MAX_RUNNING_DEFAULT,
        engine_max_queued_default: ENGINE_MAX_QUEUED_DEFAULT,
        engine_chunks_in_flight: 4,
        deep_chunks: 32,
        options: BTreeMap::from([
            ("repeats".into(), opts.repeats.to_string()),
            ("concurrent".into(), opts.concurrent.to_string()),
            ("pollers".into(), opts.pollers.to_string()),
            ("max_running_alt".into(), opts.max_running_alt.to_string()),
            ("skip_extra".into(), opts.skip_extra.to_string()),
        ]),
        rows: rows(&one, default_rate.as_ref(), &single, &bursts, &load, cpus),
        notes: notes(&opts, cpus),
        phase1: one,
        default_rate,
        single,
        bursts,
        load,
    };
    print!("{}", render(&report));
    let json = out_dir.join("service.json");
    fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("bench --service: wrote {}", json.display());
    Ok(0)
}

/// Extra hosts `first..first+count` (198.19.0.0 + k).
fn hosts(first: u32, count: u32) -> Vec<Ipv4Addr> {
    (first..first + count).map(truth::extra_v4).collect()
}

/// A lab with `n_hosts` extra hosts, each its own "ASN", and the stack in it: engine
/// metrics on, the queue long enough for every scan unless `engine_extra` says otherwise.
fn up(name: &str, n_hosts: u32, engine_extra: &[&str], bins: &Path) -> anyhow::Result<Stack> {
    eprintln!("bench --service: lab {name} up ({n_hosts} extra hosts) ...");
    let lab = LabGuard::up(&LabConfig {
        name: name.into(),
        hosts: n_hosts,
        ..LabConfig::default()
    })?;
    // Readable by the API's unprivileged user.
    let dir = lab.state_dir().join("svcbench");
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let asn = dir.join("asn.txt");
    fs::write(&asn, asn_table(n_hosts))?;
    fs::set_permissions(&asn, fs::Permissions::from_mode(0o644))?;
    let mut engine_args: Vec<String> = vec!["--metrics-listen".into(), METRICS_LISTEN.into()];
    if !engine_extra.contains(&"--max-queued") {
        engine_args.extend(["--max-queued".into(), MAX_QUEUED.to_string()]);
    }
    engine_args.extend(engine_extra.iter().map(|s| s.to_string()));
    let opts = StackOptions {
        engine_args,
        api_args: vec!["--asn-table".into(), asn.display().to_string()],
        api_config: None,
    };
    Stack::up_with(lab, opts, bins.to_path_buf())
}

/// `CIDR ASN` lines: the primary target and every extra host its own private ASN.
fn asn_table(n_hosts: u32) -> String {
    let mut t = String::from("# one ASN per lab host (cargo xtask bench --service)\n");
    let _ = writeln!(t, "{}/32 AS4200000000", truth::TARGET_V4);
    for k in 1..=n_hosts {
        let _ = writeln!(t, "{}/32 AS{}", truth::extra_v4(k), 4_200_000_000 + k);
    }
    t
}

/// A lab, the stack in it and the agent in its target namespace. Dropping it stops the
/// agent, saves the engine and API logs, then stops the stack and tears the lab down.
#[derive(Debug)]
struct Session {
    agent: Option<Agent>,
    stack: Stack,
    name: String,
    logs: PathBuf,
}

impl Session {
    /// `n_hosts` extra hosts; the last one runs the webhook receiver.
    fn open(
        name: &str,
        n_hosts: u32,
        engine_extra: &[&str],
        bins: &Path,
        logs: &Path,
    ) -> anyhow::Result<Session> {
        let stack = up(name, n_hosts, engine_extra, bins)?;
        let hook = SocketAddr::new(truth::extra_v4(n_hosts).into(), HOOK_PORT);
        let agent = Agent::start(&stack.lab, hook, &logs.join(format!("agent-{name}.log")))?;
        Ok(Session {
            agent: Some(agent),
            stack,
            name: name.to_owned(),
            logs: logs.to_owned(),
        })
    }

    fn agent(&self) -> anyhow::Result<&Agent> {
        self.agent.as_ref().context("the agent is gone")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.agent.take());
        let (e, a) = self.stack.log_paths();
        let _ = fs::copy(e, self.logs.join(format!("engine-{}.log", self.name)));
        let _ = fs::copy(a, self.logs.join(format!("api-{}.log", self.name)));
    }
}

/// Phases 1-3 in the main lab.
fn main_lab(
    stack: &mut Stack,
    agent: &Agent,
    opts: &Options,
) -> anyhow::Result<(Phase1, ScanRun, Burst, Load)> {
    let n = opts.concurrent;
    eprintln!(
        "bench --service: 1/3 fast and deep scans from {HOST}, {} each",
        opts.repeats
    );
    let phase1 = phase1(stack, agent, opts.repeats)?;
    eprintln!("bench --service: 2/3 one deep scan alone, then {n} at once");
    thread::sleep(SETTLE);
    let single = single_scan(
        stack,
        agent,
        truth::extra_v4(n + 1),
        "deep",
        "single",
        DEEP_LIMIT,
    )?;
    thread::sleep(SETTLE);
    let b = burst(
        stack,
        agent,
        &hosts(1, n),
        "burst",
        "max-running 8 (default)",
        ENGINE_MAX_RUNNING_DEFAULT,
        MAX_QUEUED,
    )?;
    thread::sleep(SETTLE);
    eprintln!(
        "bench --service: 3/3 API latency: {n} more deep scans, their hosts and {} more addresses polling",
        opts.pollers
    );
    let load = load(
        stack,
        agent,
        &hosts(n + 2, n),
        &hosts(2 * n + 2, opts.pollers),
    )?;
    Ok((phase1, single, b, load))
}

fn phase1(stack: &mut Stack, agent: &Agent, repeats: usize) -> anyhow::Result<Phase1> {
    let mut fast = Vec::new();
    for i in 0..repeats {
        thread::sleep(SETTLE);
        let r = single_scan(stack, agent, HOST, "fast", &format!("fast{i}"), FAST_LIMIT)?;
        eprintln!(
            "bench --service:   fast {}/{repeats}: POST->complete {:.3} s, duration_ms {:?}, {} probes",
            i + 1,
            r.post_to_complete_s.unwrap_or(f64::NAN),
            r.duration_ms,
            r.probes.unwrap_or(0)
        );
        fast.push(r);
    }
    let mut deep = Vec::new();
    for i in 0..repeats {
        if i > 0 {
            // The 1-deep-scan-per-IP-per-5-minutes window lives in the API's memory.
            stack.stop_api(false);
            stack.start_api()?;
        }
        thread::sleep(SETTLE);
        let r = single_scan(stack, agent, HOST, "deep", &format!("deep{i}"), DEEP_LIMIT)?;
        eprintln!(
            "bench --service:   deep {}/{repeats}: POST->complete {:.3} s, duration_ms {:?}, {} probes",
            i + 1,
            r.post_to_complete_s.unwrap_or(f64::NAN),
            r.duration_ms,
            r.probes.unwrap_or(0)
        );
        deep.push(r);
    }
    let med = |runs: &[ScanRun]| median(runs.iter().filter_map(|r| r.post_to_complete_s));
    let med_d =
        |runs: &[ScanRun]| median(runs.iter().filter_map(|r| r.duration_ms.map(|d| d as f64)));
    Ok(Phase1 {
        host: HOST.to_string(),
        fast_median_s: med(&fast),
        deep_median_s: med(&deep),
        fast_duration_ms_median: med_d(&fast),
        deep_duration_ms_median: med_d(&deep),
        fast,
        deep,
    })
}

/// One scan alone: POST with a webhook, wait for it; probes from the engine's counter.
fn single_scan(
    stack: &Stack,
    agent: &Agent,
    src: Ipv4Addr,
    kind: &str,
    tag: &str,
    limit: Duration,
) -> anyhow::Result<ScanRun> {
    let before = engine_sample(&stack.lab)?;
    let post = agent.request(src, "POST", &format!("/v1/{kind}"), Some(tag));
    if post.status != 200 {
        bail!(
            "POST /v1/{kind} from {src}: {}\n{}",
            post.outcome(),
            stack.logs()
        );
    }
    let hooks = agent.hooks(&[tag.to_owned()], Instant::now() + limit);
    let Some(hook) = hooks.get(tag) else {
        bail!(
            "no webhook for the {kind} scan of {src} within {limit:?}\n{}",
            stack.logs()
        );
    };
    let after = engine_sample(&stack.lab)?;
    let mut run = scan_run(stack.lab.truth(), src, kind, &post, Some(hook));
    let probes = after.probes_sent.saturating_sub(before.probes_sent);
    run.probes = Some(probes);
    run.probes_per_s = run.wall_s.map(|w| probes as f64 / w.max(1e-9));
    if !run.truth_ok() {
        eprintln!(
            "bench --service:   {kind} scan of {src}: {} (open ok {}, filtered ok {})",
            run.status, run.open_ok, run.filtered_ok
        );
    }
    Ok(run)
}

/// A deep scan from every host at once (one thread each), timed by webhooks.
fn burst(
    stack: &Stack,
    agent: &Agent,
    hosts: &[Ipv4Addr],
    tag: &str,
    label: &str,
    max_running: u32,
    max_queued: u32,
) -> anyhow::Result<Burst> {
    let lab: &Lab = &stack.lab;
    let before = engine_sample(lab)?;
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let tags: Vec<String> = (0..hosts.len()).map(|i| format!("{tag}{i}")).collect();
    let (replies, hooks, timeline) = thread::scope(|s| {
        let sampler = s.spawn(|| sample_until(lab, &stop, t0));
        let posts: Vec<_> = hosts
            .iter()
            .zip(&tags)
            .map(|(h, t)| s.spawn(move || agent.request(*h, "POST", "/v1/deep", Some(t))))
            .collect();
        let replies: Vec<Reply> = posts
            .into_iter()
            .map(|p| {
                p.join()
                    .unwrap_or_else(|_| Reply::failed("thread panicked"))
            })
            .collect();
        let accepted: Vec<String> = replies
            .iter()
            .zip(&tags)
            .filter(|(r, _)| r.status == 200)
            .map(|(_, t)| t.clone())
            .collect();
        let hooks = agent.hooks(&accepted, Instant::now() + BURST_LIMIT);
        stop.store(true, Ordering::Relaxed);
        let timeline = sampler.join().unwrap_or_default();
        (replies, hooks, timeline)
    });
    let after = engine_sample(lab)?;
    Ok(summarize(
        lab.truth(),
        label,
        max_running,
        max_queued,
        hosts,
        &tags,
        &replies,
        &hooks,
        (before, after),
        timeline,
    ))
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    truth: &Truth,
    label: &str,
    max_running: u32,
    max_queued: u32,
    hosts: &[Ipv4Addr],
    tags: &[String],
    replies: &[Reply],
    hooks: &HashMap<String, Hook>,
    (before, after): (EngineSample, EngineSample),
    timeline: Vec<EngineSample>,
) -> Burst {
    let probes = after.probes_sent.saturating_sub(before.probes_sent);
    let start_us = replies
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.t_start_us)
        .min();
    let mut runs: Vec<ScanRun> = hosts
        .iter()
        .zip(tags)
        .zip(replies)
        .map(|((h, t), r)| {
            let hook = hooks.get(t);
            let mut run = scan_run(truth, *h, "deep", r, hook);
            run.done_at_s = start_us
                .zip(hook)
                .map(|(s, k)| secs(k.t_us.saturating_sub(s)));
            run
        })
        .collect();
    runs.sort_by(|a, b| {
        a.done_at_s
            .unwrap_or(f64::MAX)
            .total_cmp(&b.done_at_s.unwrap_or(f64::MAX))
    });
    let mut post_outcomes = BTreeMap::new();
    let mut post_hist = new_hist();
    for r in replies {
        *post_outcomes.entry(r.outcome()).or_insert(0) += 1;
        if r.status == 200 {
            post_hist.saturating_record(r.latency_us().max(1));
        }
    }
    let last_us = hooks.values().map(|h| h.t_us).max();
    let wall_s = start_us
        .zip(last_us)
        .map(|(s, e)| secs(e.saturating_sub(s)));
    let done: Vec<f64> = runs.iter().filter_map(|r| r.done_at_s).collect();
    Burst {
        label: label.to_owned(),
        max_running,
        max_queued,
        scans: hosts.len(),
        accepted: replies.iter().filter(|r| r.status == 200).count(),
        complete: runs.iter().filter(|r| r.status == "complete").count(),
        truth_ok: runs.iter().filter(|r| r.truth_ok()).count(),
        post_outcomes,
        wall_s,
        probes,
        probes_per_s: wall_s.map(|w| probes as f64 / w.max(1e-9)),
        kernel_drops: after.kernel_drops.saturating_sub(before.kernel_drops),
        backlog_drops: after.backlog_drops.saturating_sub(before.backlog_drops),
        wrong_ports: runs.iter().map(|r| r.wrong_ports).sum(),
        discards: after
            .discards
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(before.discards.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect(),
        first_done_s: done.first().copied(),
        median_done_s: median(done.iter().copied()),
        median_duration_ms: median(runs.iter().filter_map(|r| r.duration_ms.map(|d| d as f64))),
        max_duration_ms: runs.iter().filter_map(|r| r.duration_ms).max(),
        post_latency: latency(&post_hist),
        peak_running: timeline.iter().map(|s| s.running).max().unwrap_or(0),
        peak_queued: timeline.iter().map(|s| s.queued).max().unwrap_or(0),
        note: None,
        timeline,
        runs,
    }
}

/// Latency histograms of the load phase.
#[derive(Debug)]
struct Hists {
    get: Histogram<u64>,
    post_join: Histogram<u64>,
    post_new: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
}

impl Hists {
    fn record(&mut self, what: &str, r: &Reply) {
        *self
            .outcomes
            .entry(format!("{what} {}", r.outcome()))
            .or_insert(0) += 1;
        if r.status == 200 {
            let h = match what {
                "POST new" => &mut self.post_new,
                "POST join" => &mut self.post_join,
                _ => &mut self.get,
            };
            h.saturating_record(r.latency_us().max(1));
        }
    }
}

/// Sleeps until `at` unless `stop` is set first; false if stopped.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        thread::sleep((at - now).min(Duration::from_millis(50)));
    }
}

/// Phase 3: `scan_hosts` each start a deep scan (webhook-timed), then poll it (GET) and
/// re-POST (joining it) alternately every `LOAD_INTERVAL` until it is done; `pollers` more
/// addresses GET every `LOAD_INTERVAL` until every scan is done.
fn load(
    stack: &Stack,
    agent: &Agent,
    scan_hosts: &[Ipv4Addr],
    pollers: &[Ipv4Addr],
) -> anyhow::Result<Load> {
    let lab: &Lab = &stack.lab;
    // Idle latency first: one GET at a time, each from its own (poller) address.
    let mut idle = new_hist();
    for src in pollers.iter().take(IDLE_REQUESTS) {
        let r = agent.request(*src, "GET", "/v1/deep", None);
        if r.status == 200 {
            idle.saturating_record(r.latency_us().max(1));
        }
    }
    let poller_addrs = pollers;
    let before = engine_sample(lab)?;
    let hists = Mutex::new(Hists {
        get: new_hist(),
        post_join: new_hist(),
        post_new: new_hist(),
        outcomes: BTreeMap::new(),
    });
    let record = |what: &str, r: &Reply| {
        hists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(what, r);
    };
    let remaining = AtomicUsize::new(scan_hosts.len());
    let stop = AtomicBool::new(false);
    let requests = AtomicU64::new(0);
    let t0 = Instant::now();
    let deadline = t0 + BURST_LIMIT;
    let tags: Vec<String> = (0..scan_hosts.len()).map(|i| format!("load{i}")).collect();
    let spread = |i: usize, n: usize| LOAD_INTERVAL.mul_f64(i as f64 / n.max(1) as f64);
    let (posts, hooks, timeline, duration_s) = thread::scope(|s| {
        let sampler = s.spawn(|| sample_until(lab, &stop, t0));
        let (record, remaining, stop, requests) = (&record, &remaining, &stop, &requests);
        let clients: Vec<_> = scan_hosts
            .iter()
            .zip(&tags)
            .enumerate()
            .map(|(i, (h, tag))| {
                s.spawn(move || {
                    let post = agent.request(*h, "POST", "/v1/deep", Some(tag));
                    requests.fetch_add(1, Ordering::Relaxed);
                    record("POST new", &post);
                    if post.status == 200 {
                        let start = Instant::now() + spread(i, scan_hosts.len());
                        for k in 1u32.. {
                            if !sleep_until(start + LOAD_INTERVAL * k, stop)
                                || Instant::now() > deadline
                            {
                                break;
                            }
                            // Re-POST only while the scan is live: after it, a POST would be
                            // a new deep scan (429 for 5 minutes).
                            let join = k % 2 == 0 && !agent.has_hook(tag);
                            let (what, method) = if join {
                                ("POST join", "POST")
                            } else {
                                ("GET", "GET")
                            };
                            let r = agent.request(*h, method, "/v1/deep", None);
                            requests.fetch_add(1, Ordering::Relaxed);
                            record(what, &r);
                            let st = r.json()["status"].as_str().unwrap_or("").to_owned();
                            if !join && (st == "complete" || st == "failed") {
                                break;
                            }
                        }
                    }
                    remaining.fetch_sub(1, Ordering::Relaxed);
                    post
                })
            })
            .collect();
        let n_pollers = poller_addrs.len();
        let polls: Vec<_> = poller_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                s.spawn(move || {
                    let start = Instant::now() + spread(i, n_pollers);
                    for k in 0u32.. {
                        if remaining.load(Ordering::Relaxed) == 0
                            || !sleep_until(start + LOAD_INTERVAL * k, stop)
                            || Instant::now() > deadline
                        {
                            break;
                        }
                        let r = agent.request(*a, "GET", "/v1/deep", None);
                        requests.fetch_add(1, Ordering::Relaxed);
                        record("GET", &r);
                    }
                })
            })
            .collect();
        let posts: Vec<Reply> = clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap_or_else(|_| Reply::failed("thread panicked"))
            })
            .collect();
        for p in polls {
            let _ = p.join();
        }
        let duration_s = t0.elapsed().as_secs_f64();
        // The webhooks of the scans (sent when a scan completes, so around the GET that
        // saw it complete).
        let accepted: Vec<String> = posts
            .iter()
            .zip(&tags)
            .filter(|(r, _)| r.status == 200)
            .map(|(_, t)| t.clone())
            .collect();
        let hooks = agent.hooks(&accepted, Instant::now() + Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        let timeline = sampler.join().unwrap_or_default();
        (posts, hooks, timeline, duration_s)
    });
    let after = engine_sample(lab)?;
    let h = hists.into_inner().unwrap_or_else(|e| e.into_inner());
    let requests = requests.load(Ordering::Relaxed);
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        h.outcomes
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, v)| *v)
            .sum()
    };
    let rate_limited = count(&|k| k.contains(" 429"));
    let errors = count(&|k| !k.ends_with(" 200") && !k.contains(" 429"));
    let scans = summarize(
        lab.truth(),
        "under API load (max-running 8)",
        ENGINE_MAX_RUNNING_DEFAULT,
        MAX_QUEUED,
        scan_hosts,
        &tags,
        &posts,
        &hooks,
        (before, after),
        timeline,
    );
    Ok(Load {
        scan_clients: scan_hosts.len(),
        pollers: pollers.len(),
        interval_ms: LOAD_INTERVAL.as_millis() as u64,
        duration_s,
        requests,
        requests_per_s: requests as f64 / duration_s.max(1e-9),
        get_idle: latency(&idle),
        get: latency(&h.get),
        post_join: latency(&h.post_join),
        post_new: latency(&h.post_new),
        outcomes: h.outcomes,
        rate_limited,
        errors,
        scans,
    })
}

// ---------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------

fn f_s(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3} s"))
}

fn f_rate(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| super::thousands(v.round() as u64))
}

fn f_lat(l: &Option<Latency>) -> String {
    l.as_ref().map_or_else(
        || "-".into(),
        |l| {
            format!(
                "p50 {:.2} / p99 {:.2} / max {:.2} ms (n={})",
                l.p50_ms, l.p99_ms, l.max_ms, l.n
            )
        },
    )
}

fn runs_list(runs: &[ScanRun]) -> String {
    runs.iter()
        .map(|r| {
            r.post_to_complete_s
                .map_or("-".into(), |v| format!("{v:.3}"))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

type AddRow<'a> = dyn FnMut(&str, &str, String, &str) + 'a;

fn phase1_rows(s1: &str, p1: &Phase1, add: &mut AddRow<'_>) {
    let n = p1.fast.len();
    let ok = |runs: &[ScanRun]| runs.iter().filter(|r| r.truth_ok()).count();
    add(
        s1,
        &format!("fast: POST -> complete (webhook), median of {n}"),
        format!("{} (runs {} s)", f_s(p1.fast_median_s), runs_list(&p1.fast)),
        "10-20 s (portscan.com)",
    );
    add(
        s1,
        "fast: API duration_ms (engine run), median",
        p1.fast_duration_ms_median
            .map_or("-".into(), |d| format!("{d:.0} ms")),
        "",
    );
    add(
        s1,
        "fast: probes per scan; results = truth",
        format!(
            "{}; {}/{n}",
            p1.fast.first().and_then(|r| r.probes).unwrap_or(0),
            ok(&p1.fast)
        ),
        "32 ports",
    );
    add(
        s1,
        &format!("deep: POST -> complete (webhook), median of {n}"),
        format!("{} (runs {} s)", f_s(p1.deep_median_s), runs_list(&p1.deep)),
        "30-90 s (portscan.com)",
    );
    add(
        s1,
        "deep: API duration_ms (engine run), median",
        p1.deep_duration_ms_median
            .map_or("-".into(), |d| format!("{d:.0} ms")),
        "",
    );
    let deep_rate = median(p1.deep.iter().filter_map(|r| r.probes_per_s));
    add(
        s1,
        "deep: probes per scan; probes/s; results = truth",
        format!(
            "{}; {}; {}/{n}",
            p1.deep
                .first()
                .and_then(|r| r.probes)
                .map_or("-".into(), super::thousands),
            f_rate(deep_rate),
            ok(&p1.deep)
        ),
        "65,535 ports",
    );
}

fn rows(
    p1: &Phase1,
    default_rate: Option<&Phase1>,
    single: &ScanRun,
    bursts: &[Burst],
    load: &Load,
    cpus: usize,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |section: &str, metric: &str, value: String, reference: &str| {
        rows.push(Row {
            section: section.into(),
            metric: metric.into(),
            value,
            reference: reference.into(),
        });
    };
    phase1_rows(
        &format!(
            "1 one scan at a time, from {} (engine --rate {ENGINE_RATE})",
            p1.host
        ),
        p1,
        &mut add,
    );
    if let Some(p) = default_rate {
        phase1_rows(
            &format!("1b the same at the engine's default --rate {ENGINE_DEFAULT_RATE}"),
            p,
            &mut add,
        );
    }
    let s2 = format!("2 deep scans of extra hosts (engine --rate {ENGINE_RATE})");
    add(
        &s2,
        &format!("single deep scan ({} alone): POST -> complete", single.src),
        format!(
            "{} (duration_ms {})",
            f_s(single.post_to_complete_s),
            single.duration_ms.map_or("-".into(), |d| d.to_string())
        ),
        "30-90 s",
    );
    add(
        &s2,
        "single deep scan: probes; probes/s",
        format!(
            "{}; {}",
            single.probes.map_or("-".into(), super::thousands),
            f_rate(single.probes_per_s)
        ),
        "",
    );
    let burst_rows = |section: &str, b: &Burst, add: &mut AddRow<'_>| {
        add(
            section,
            "scans POSTed / accepted / complete / = truth",
            format!(
                "{} / {} / {} / {}",
                b.scans, b.accepted, b.complete, b.truth_ok
            ),
            "",
        );
        add(
            section,
            "wrong ports; capture-buffer drops; input-backlog drops",
            format!(
                "{}; {}; {}",
                super::thousands(b.wrong_ports as u64),
                super::thousands(b.kernel_drops),
                super::thousands(b.backlog_drops)
            ),
            "0",
        );
        if !b.discards.is_empty() {
            let d: Vec<String> = b
                .discards
                .iter()
                .map(|(k, v)| format!("{k} {}", super::thousands(*v)))
                .collect();
            add(section, "replies the engine discarded", d.join(", "), "");
        }
        if b.accepted < b.scans {
            let o: Vec<String> = b
                .post_outcomes
                .iter()
                .map(|(k, v)| format!("{v}x {k}"))
                .collect();
            add(section, "POST outcomes", o.join("; "), "");
        }
        add(
            section,
            "first POST -> last webhook (all done)",
            f_s(b.wall_s),
            "",
        );
        add(
            section,
            "webhooks after the first POST: first / median",
            format!("{} / {}", f_s(b.first_done_s), f_s(b.median_done_s)),
            "",
        );
        add(
            section,
            "per-scan duration_ms (engine run, no queue): median / max",
            format!(
                "{} / {} ms",
                b.median_duration_ms
                    .map_or("-".into(), |d| format!("{d:.0}")),
                b.max_duration_ms.map_or("-".into(), |d| d.to_string())
            ),
            "",
        );
        let ratio = b
            .probes_per_s
            .zip(single.probes_per_s)
            .map_or("-".into(), |(a, s)| format!("{:.2}x", a / s));
        add(
            section,
            "aggregate probes/s (vs single)",
            format!("{} ({ratio})", f_rate(b.probes_per_s)),
            "",
        );
        add(
            section,
            "engine scans running / queued (peak)",
            format!("{} / {}", b.peak_running, b.peak_queued),
            &format!("max-running {}, max-queued {}", b.max_running, b.max_queued),
        );
        add(
            section,
            "POST new deep scan, client latency",
            f_lat(&b.post_latency),
            "",
        );
        if let Some(note) = &b.note {
            add(section, "note", note.clone(), "");
        }
    };
    for b in bursts {
        let section = format!("2 {} concurrent deep scans, {}", b.scans, b.label);
        burst_rows(&section, b, &mut add);
    }
    let s3 = format!(
        "3 API latency: {} scanning hosts poll + {} pollers, 1 req / {:.1} s each",
        load.scan_clients,
        load.pollers,
        load.interval_ms as f64 / 1000.0
    );
    add(
        &s3,
        "requests; rate; duration",
        format!(
            "{}; {:.1}/s; {:.1} s",
            load.requests, load.requests_per_s, load.duration_s
        ),
        &format!("{cpus} CPUs shared by all"),
    );
    add(
        &s3,
        "GET /v1/deep, idle (one at a time)",
        f_lat(&load.get_idle),
        "",
    );
    add(&s3, "GET /v1/deep, under load", f_lat(&load.get), "");
    add(
        &s3,
        "POST /v1/deep joining a live scan, under load",
        f_lat(&load.post_join),
        "",
    );
    add(
        &s3,
        "POST /v1/deep new scan, under load",
        f_lat(&load.post_new),
        "",
    );
    add(
        &s3,
        "429s; other non-200s / errors",
        format!("{}; {}", load.rate_limited, load.errors),
        "edge 30/IP/min",
    );
    let b = &load.scans;
    add(
        &s3,
        "its deep scans: complete / = truth; all done; probes/s",
        format!(
            "{} / {}; {}; {}",
            b.complete,
            b.truth_ok,
            f_s(b.wall_s),
            f_rate(b.probes_per_s)
        ),
        "",
    );
    rows
}

fn notes(opts: &Options, cpus: usize) -> Vec<String> {
    vec![
        format!(
            "engine: `portscope engine --rate {ENGINE_RATE}` (the Stack's default: global ceiling and each chunk's rate), \
             --max-running {ENGINE_MAX_RUNNING_DEFAULT} (its default) unless stated, 4 chunks in flight per scan, \
             a deep scan = 32 chunks; --max-queued {MAX_QUEUED} so that no scan is refused, except in the \
             'engine defaults' burst (64)"
        ),
        "POST -> complete: the agent in the target namespace (this program re-executed with `ip netns exec`) times \
         the POST (its response fully read) and the webhook (its body fully read) with one monotonic clock; the \
         API sends the webhook after the engine finished, banners were grabbed and the PTR looked up. \
         duration_ms is the API's field: the engine's run time of the scan, queue time excluded"
            .into(),
        "probes/s: delta of the engine's portscope_engine_probes_sent_total (curl in the scanner namespace) \
         from before the POST(s) to after the last webhook, divided by first POST sent -> last webhook"
            .into(),
        "latency: client side, from connect() to the last byte of the response, one new TCP connection per \
         request (Connection: close), like curl's time_total; recorded in hdrhistogram (3 significant digits); \
         only 200s are in the histograms, the rest are counted"
            .into(),
        format!(
            "rate limits: every lab host is its own ASN (--asn-table); every client address sends at most one \
             request per {:.1} s (edge limit 30/min); the API is restarted between the deep scans of phase 1 \
             (its 1-deep-per-IP-per-5-min counter is in memory); pollers are lab hosts that never scan \
             (the lab drops packets to its unlisted addresses), the first 100 of them also sent the idle GETs",
            LOAD_INTERVAL.as_secs_f64()
        ),
        format!(
            "{cpus} CPUs run everything: engine, API, the target's kernel, the agent, this program; \
             repeats {}, concurrent {}",
            opts.repeats, opts.concurrent
        ),
    ]
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nPortscope service in the lab ({} CPUs, load average before: {})\n",
        report.cpus, report.loadavg_before
    );
    let header = ["metric", "value", "reference"];
    let cells: Vec<[String; 3]> = report
        .rows
        .iter()
        .map(|r| [r.metric.clone(), r.value.clone(), r.reference.clone()])
        .collect();
    let mut w = header.map(str::len);
    for c in &cells {
        for (wi, cell) in w.iter_mut().zip(c) {
            *wi = (*wi).max(cell.chars().count());
        }
    }
    let line = |c: &[String; 3]| -> String {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            s += cell;
            if i < 2 {
                s += &" ".repeat(w[i] - cell.chars().count() + 2);
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "  {}", line(&header.map(str::to_owned)));
    let mut section = "";
    for (r, c) in report.rows.iter().zip(&cells) {
        if r.section != section {
            section = &r.section;
            let _ = writeln!(out, "{section}");
        }
        let _ = writeln!(out, "  {}", line(c));
    }
    out.push('\n');
    for n in &report.notes {
        let _ = writeln!(out, "- {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!((o.repeats, o.concurrent, o.pollers), (3, 100, 200));
        assert!(!o.skip_extra);
        let o = Options::parse(&args(&[
            "--repeats",
            "1",
            "--concurrent",
            "5",
            "--skip-extra",
        ]))
        .unwrap();
        assert_eq!((o.repeats, o.concurrent, o.skip_extra), (1, 5, true));
        for bad in [
            &["--concurrent", "500"][..],
            &["--repeats", "0"],
            &["--max-running-alt", "65"],
            &["--pollers"],
            &["--quick"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses_are_parsed() {
        let (s, b) = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (200, "{}"));
        let (s, b) = parse_response(
            b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (429, "abcde"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn engine_metrics_are_parsed() {
        let text = "# HELP portscope_engine_probes_sent_total Probes.\n\
                    # TYPE portscope_engine_probes_sent_total counter\n\
                    portscope_engine_probes_sent_total 131070\n\
                    portscope_engine_scans{state=\"queued\"} 3\n\
                    portscope_engine_scans{state=\"running\"} 8\n\
                    portscope_engine_scans{state=\"complete\"} 12\n\
                    portscope_engine_scans{state=\"failed\"} 1\n\
                    portscope_engine_discards_total{reason=\"no_scan\"} 7\n";
        let s = parse_metrics(text).unwrap();
        assert_eq!(
            (s.probes_sent, s.running, s.queued, s.complete, s.failed),
            (131_070, 8, 3, 12, 1)
        );
        assert_eq!(s.discards.get("no_scan"), Some(&7));
        assert!(parse_metrics("nothing 1\n").is_err());
        let softnet = "00a1b2c3 00000010 00000000 00000000\n00000001 0000000f 00000002 00000000\n";
        assert_eq!(parse_softnet(softnet), 31);
    }

    #[test]
    fn agent_addresses_stay_in_the_lab() {
        assert!(in_lab(API_ADDR.ip()) && in_lab(truth::extra_v4(truth::MAX_EXTRA_HOSTS).into()));
        assert!(!in_lab("10.0.0.1".parse().unwrap()));
        assert!(!in_lab("198.20.0.1".parse().unwrap()));
        assert!(!in_lab("2001:2::2".parse().unwrap()));
        assert!(agent(&args(&[
            "--api",
            "10.0.0.1:80",
            "--hook",
            "198.19.0.9:9999"
        ]))
        .is_err());
        // Every client and the receiver are lab hosts (the lab drops the other addresses).
        let o = Options::parse(&[]).unwrap();
        assert_eq!(o.main_lab_hosts(), 402);
        assert!(Options::parse(&args(&["--concurrent", "400", "--pollers", "199"])).is_err());
    }

    #[test]
    fn medians_and_asn_table() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0]), Some(2.5));
        assert_eq!(median([]), None);
        let t = asn_table(2);
        assert!(t.contains("198.18.0.2/32 AS4200000000"));
        assert!(t.contains("198.19.0.2/32 AS4200000002"));
    }

    #[test]
    fn deep_truth_of_an_extra_host() {
        let truth = Truth::compute("t", 3);
        let ip: IpAddr = truth::extra_v4(2).into();
        let (open, filtered) = want(&truth, ip, "deep").unwrap();
        assert!(open.contains(&20002) && open.contains(&22));
        assert!(filtered.contains(&30002) && filtered.contains(&23));
        let (fopen, _) = want(&truth, ip, "fast").unwrap();
        assert!(!fopen.contains(&20002) && fopen.contains(&22));
    }
}
