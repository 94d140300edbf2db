//! The agent: this program re-executed in the target namespace (`--service-agent`), which makes
//! the API requests the parent asks for over stdin and reports replies and webhooks on stdout,
//! timed by its own monotonic clock.

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::Timeouts;
use crate::lab::truth;

use super::webhook::serve_hooks;
use super::{CONNECT_TIMEOUT, IO_TIMEOUT};

/// One request the parent asks the agent to make.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AgentReq {
    pub(super) id: u64,
    /// The lab host address the connection is bound to (the requester the API sees).
    pub(super) src: IpAddr,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
}

/// The answer to one request. Times are microseconds of the agent's monotonic clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Reply {
    /// Just before connecting.
    pub(super) t_start_us: u64,
    /// When the whole response had been read.
    pub(super) t_end_us: u64,
    /// 0 when no response came (see `error`).
    pub(super) status: u16,
    pub(super) body: String,
    pub(super) error: Option<String>,
}

impl Reply {
    pub(super) fn failed(e: impl Into<String>) -> Reply {
        Reply {
            error: Some(e.into()),
            ..Reply::default()
        }
    }

    pub(super) fn latency_us(&self) -> u64 {
        self.t_end_us.saturating_sub(self.t_start_us)
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `404`, `429 rate limit reached: ...`, `error: connect ...`, for counting outcomes.
    pub(super) fn outcome(&self) -> String {
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

/// A line the agent writes to stdout. Times are microseconds of the agent's monotonic clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum AgentMsg {
    Ready,
    Resp {
        id: u64,
        reply: Reply,
    },
    Hook {
        /// When the webhook's body had been read (before the 204 is sent back).
        t_us: u64,
        path: String,
        body: String,
    },
}

/// Whether `ip` is in the lab's 198.18.0.0/15.
pub(super) fn in_lab(ip: IpAddr) -> bool {
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
                    reply: Reply::failed(format!("bad request line: {e}")),
                },
            };
            emit(&msg);
        });
    }
    Ok(0)
}

pub(super) fn micros_since(t0: Instant, t: Instant) -> u64 {
    u64::try_from(t.duration_since(t0).as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn emit(msg: &AgentMsg) {
    let line = serde_json::to_string(msg).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn handle_request(api: SocketAddr, req: &AgentReq, t0: Instant) -> AgentMsg {
    let start = Instant::now();
    let result = http_call(api, req);
    let end = Instant::now();
    let mut reply = match result {
        Ok((status, body)) => Reply {
            status,
            body,
            ..Reply::default()
        },
        Err(e) => Reply::failed(format!("{e:#}")),
    };
    reply.t_start_us = micros_since(t0, start);
    reply.t_end_us = micros_since(t0, end);
    AgentMsg::Resp { id: req.id, reply }
}

/// One request from `req.src` to the API on a connection of its own; (status, body).
fn http_call(api: SocketAddr, req: &AgentReq) -> anyhow::Result<(u16, String)> {
    if !matches!(req.method.as_str(), "GET" | "POST") || !req.path.starts_with("/v1/") {
        bail!("refusing {} {}", req.method, req.path);
    }
    let timeouts = Timeouts {
        connect: CONNECT_TIMEOUT,
        io: IO_TIMEOUT,
    };
    let url = format!("http://{api}{}", req.path);
    crate::http::call(req.src, timeouts, &req.method, &url, &req.headers)
}
