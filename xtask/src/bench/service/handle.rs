//! The parent's handle on the agent: starts it in the target namespace, sends it requests,
//! and collects its replies and webhooks in an inbox the phases wait on.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::lab::{xtask_bin, Lab};

use super::agent::{AgentMsg, AgentReq, Reply};
use super::{AGENT, API_ADDR, REQUEST_LIMIT};

/// A webhook as received.
#[derive(Debug, Clone)]
pub(super) struct Hook {
    pub(super) t_us: u64,
    pub(super) body: String,
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
pub(super) struct Agent {
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
    pub(super) fn start(lab: &Lab, hook: SocketAddr, log: &Path) -> anyhow::Result<Agent> {
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
    pub(super) fn request(
        &self,
        src: Ipv4Addr,
        method: &str,
        path: &str,
        hook_tag: Option<&str>,
    ) -> Reply {
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
    pub(super) fn hooks(&self, tags: &[String], deadline: Instant) -> HashMap<String, Hook> {
        self.wait(deadline, |s| {
            tags.iter().all(|t| s.hooks.contains_key(t)).then_some(())
        });
        let st = self.inbox.lock();
        tags.iter()
            .filter_map(|t| st.hooks.get(t).map(|h| (t.clone(), h.clone())))
            .collect()
    }

    pub(super) fn has_hook(&self, tag: &str) -> bool {
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
            AgentMsg::Resp { id, reply } => {
                st.replies.insert(id, reply);
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
