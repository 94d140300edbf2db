//! Live results over Server-Sent Events, read by a real SSE client (Python `httpx-sse`
//! from the venv `.ci/setup` makes) from an API on 127.0.0.1 with the fake engine: a
//! managed scan (`/api/v1/scan/{id}/events`) streams progress and each port as the engine
//! reports it, a self-scan (`/v1/deep/events`, a job scan) each chunk's ports as the chunk
//! is committed, while the scan runs; both end with the final document.

mod support;

use axum::http::{Method, StatusCode};
use portscope_control_api::managed::service::ManagedSettings;
use portscope_control_api::model::Status;
use portscope_core::results::PortState;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use support::managed::M;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const CLIENT: &str = r#"
import json, sys, httpx
from httpx_sse import connect_sse
url, key = sys.argv[1], sys.argv[2]
headers = {"Authorization": f"Bearer {key}"} if key else {}
with httpx.Client(timeout=30) as c:
    with connect_sse(c, "GET", url, headers=headers) as es:
        assert es.response.status_code == 200, es.response.status_code
        assert es.response.headers["content-type"].startswith("text/event-stream")
        for sse in es.iter_sse():
            print(json.dumps({"event": sse.event, "data": sse.json()}), flush=True)
print(json.dumps({"event": "closed"}), flush=True)
"#;

fn python() -> PathBuf {
    support::pytool("python", "PORTSCOPE_PYTHON")
}

async fn serve(m: &M) -> String {
    support::serve_on_loopback(m.router.clone()).await
}

struct Sse {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl Sse {
    fn open(url: &str, key: &str) -> Sse {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sse.py"), CLIENT).unwrap();
        let mut child = tokio::process::Command::new(python())
            .arg(dir.path().join("sse.py"))
            .args([url, key])
            .env("NO_PROXY", "*")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Sse {
            _child: child,
            lines,
            _dir: dir,
        }
    }

    /// The next event (name, data), within 10 s.
    async fn next(&mut self) -> (String, Value) {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("an SSE event within 10 s")
            .unwrap()
            .expect("the client printed an event");
        let v: Value = serde_json::from_str(&line).unwrap();
        (v["event"].as_str().unwrap().to_string(), v["data"].clone())
    }

    /// Reads events until `enough` of those read so far; returns them, in order.
    async fn read_until(
        &mut self,
        enough: impl Fn(&[(String, Value)]) -> bool,
    ) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        while !enough(&seen) {
            seen.push(self.next().await);
        }
        seen
    }

    /// Events up to and including the first `name`.
    async fn until(&mut self, name: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        loop {
            let e = self.next().await;
            let done = e.0 == name;
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

fn ports_of(events: &[(String, Value)]) -> Vec<Value> {
    events
        .iter()
        .filter(|(n, _)| n == "port")
        .map(|(_, d)| d.clone())
        .collect()
}

async fn api() -> M {
    M::with(
        |c| c.allow_target.push("127.0.0.0/8".parse().unwrap()),
        ManagedSettings {
            scheduler_interval: Duration::ZERO,
            ..ManagedSettings::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_scan_streams_progress_ports_and_the_final_document() {
    let m = api().await;
    let base = serve(&m).await;
    let key = m.token("sse", &["198.18.0.0/15"], 100, 5).await;
    let r = m
        .post(
            "/api/v1/scan",
            &key,
            Some(json!({"target": "198.18.0.5", "profile": "deep"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();

    let mut sse = Sse::open(&format!("{base}/api/v1/scan/{id}/events"), &key);
    let (name, first) = sse.next().await;
    assert_eq!(name, "progress");
    assert_eq!(first["status"], "queued");

    // Chunk 0 of 4 (a deep scan): two ports, streamed while the scan runs.
    m.progress(&id, 0).await;
    m.ports(
        &id,
        0,
        &[
            ("198.18.0.5", 22, PortState::Open),
            ("198.18.0.5", 80, PortState::Filtered),
        ],
    )
    .await;
    m.finish_chunk(&id, 0, 100).await;
    let running = |seen: &[(String, Value)]| {
        seen.iter()
            .any(|(n, d)| n == "progress" && d["status"] == "running")
    };
    let seen = sse
        .read_until(|seen| ports_of(seen).len() >= 2 && running(seen))
        .await;
    assert_eq!(
        ports_of(&seen),
        [
            json!({"host": "198.18.0.5", "port": 22, "state": "open", "service": "SSH"}),
            json!({"host": "198.18.0.5", "port": 80, "state": "filtered", "service": "HTTP"}),
        ]
    );
    assert!(
        seen.iter()
            .any(|(n, d)| n == "progress" && d["status"] == "running"),
        "{seen:?}"
    );
    assert_eq!(
        m.row(&id).await.status,
        Status::Running,
        "streamed before the end"
    );

    // The other chunks and completion: one more port, then the final document, then the end.
    m.ports(&id, 1, &[("198.18.0.5", 20000, PortState::Open)])
        .await;
    for chunk in 1..4 {
        m.finish_chunk(&id, chunk, 100).await;
    }
    let rest = sse.until("result").await;
    assert_eq!(
        ports_of(&rest),
        [json!({"host": "198.18.0.5", "port": 20000, "state": "open", "service": null})]
    );
    let (_, result) = rest.last().unwrap();
    assert_eq!(result["id"], id);
    assert_eq!(result["status"], "complete");
    assert_eq!(result["summary"]["open"], 2);
    assert_eq!(result["summary"]["filtered"], 1);
    assert!(result["grade"].is_string());
    let get = m.get(&format!("/api/v1/scan/{id}"), &key).await;
    assert_eq!(&get.body, result, "the result event is the GET document");
    assert_eq!(
        sse.next().await.0,
        "closed",
        "the stream ends after the result"
    );

    // Another token's scan, or no token: refused before any stream.
    let other = m.token("other", &["198.18.0.0/15"], 100, 5).await;
    let r = m
        .send(
            Method::GET,
            &format!("/api/v1/scan/{id}/events"),
            Some(&other),
            None,
            "127.0.0.3",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = m
        .send(
            Method::GET,
            &format!("/api/v1/scan/{id}/events"),
            None,
            None,
            "127.0.0.3",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Completes every chunk run of the fake engine not in `done` (only those of chunk
/// `only_chunk` when given), each with `ports`.
fn finish_runs(
    engine: &portscope_control_api::engine::fake::FakeEngine,
    done: &mut Vec<String>,
    only_chunk: Option<u32>,
    ports: &[(u16, PortState)],
) {
    for id in engine.submitted_ids() {
        let chunk: u32 = id.split('/').nth(1).unwrap().parse().unwrap();
        if done.contains(&id) || only_chunk.is_some_and(|c| c != chunk) {
            continue;
        }
        engine.ports(&id, chunk, ports, 0);
        engine.complete(&id, 10);
        done.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_scan_streams_progress_ports_and_the_final_document() {
    let m = api().await;
    let base = serve(&m).await;
    let r = m
        .send(Method::POST, "/v1/deep", None, None, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let mut sse = Sse::open(&format!("{base}/v1/deep/events"), "");
    let (name, first) = sse.next().await;
    assert_eq!(name, "progress");
    assert_eq!(first["status"], "queued");

    // Chunk 0 (ports 1-2048) is committed with two ports: they stream while the scan runs.
    let mut done = Vec::new();
    while done.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        finish_runs(
            &m.engine,
            &mut done,
            Some(0),
            &[(22, PortState::Open), (25, PortState::Filtered)],
        );
    }
    let seen = sse.read_until(|seen| ports_of(seen).len() >= 2).await;
    assert_eq!(
        ports_of(&seen),
        [
            json!({"host": "127.0.0.1", "port": 22, "state": "open", "service": "SSH"}),
            json!({"host": "127.0.0.1", "port": 25, "state": "filtered", "service": "SMTP"}),
        ]
    );
    assert!(
        seen.contains(&(
            "progress".into(),
            json!({"status": "running", "chunks_complete": 1, "total_chunks": 32})
        )),
        "{seen:?}"
    );
    // The other 31 chunks, as the worker sends them.
    let engine = m.engine.clone();
    let finisher = tokio::spawn(async move {
        loop {
            finish_runs(&engine, &mut done, None, &[]);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let rest = sse.until("result").await;
    finisher.abort();
    let (_, result) = rest.last().unwrap();
    assert_eq!(result["status"], "complete", "{result}");
    assert_eq!(result["ip"], "127.0.0.1");
    assert_eq!(result["ports_open"][0]["port"], 22);
    assert_eq!(result["ports_filtered"][0]["port"], 25);
    let get = m
        .send(Method::GET, "/v1/deep", None, None, "127.0.0.1")
        .await;
    assert_eq!(&get.body, result, "the result event is the GET document");
    assert_eq!(sse.next().await.0, "closed");

    // No fast scan of this address: the stream is just the `none` document.
    let mut none = Sse::open(&format!("{base}/v1/fast/events"), "");
    assert_eq!(
        none.next().await,
        (
            "result".to_string(),
            json!({"ip": "127.0.0.1", "scan_type": "fast", "status": "none"})
        )
    );
    assert_eq!(none.next().await.0, "closed");
}
