//! `portscope engine` (the daemon) in the network lab: its probes leave as link-layer frames
//! (`--interface`, `--router-mac`), and a client on its Unix socket gets exactly the lab's
//! ground truth back; the same daemon pointed at a MAC nobody has hears nothing. Needs root.

use portscope_core::results::PortState;
use portscope_proto::{decode, encode, Counts, Event, Outcome, Request, ScanKind};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{lab_named, serial, target_mac, truth_of, ALLOW};
use xtask::lab::{LabConfig, LabGuard};

mod support;

/// One `portscope engine` in the lab's scanner namespace; stopped (by PID) and its files
/// removed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(lab: &LabGuard, tag: &str, mac: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("ps-engine-lab-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = File::create(dir.join("engine.log")).unwrap();
        let sock = dir.join("engine.sock");
        let child = lab
            .0
            .scanner_cmd(env!("CARGO_BIN_EXE_portscope"))
            .arg("engine")
            .arg("--socket")
            .arg(&sock)
            .args(ALLOW)
            .args(["--rate", "250000", "--max-wait", "200ms"])
            .args(["--interface", lab.0.scanner_if(), "--router-mac", mac])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start portscope engine");
        let d = Daemon { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "no socket: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("engine.log")).unwrap_or_default()
    }

    /// Submits one scan and returns its events up to and including `Finished`.
    fn scan(&self, targets: &[&str], ports: &str, kind: ScanKind) -> Vec<Event> {
        // The daemon renames its socket into place once it listens: no refusal to wait out.
        let mut s = UnixStream::connect(self.dir.join("engine.sock"))
            .unwrap_or_else(|e| panic!("connect: {e}: {}", self.log()));
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.write_all(&encode(&Request::Submit {
            id: "lab".into(),
            targets: targets.iter().map(ToString::to_string).collect(),
            ports: ports.into(),
            kind,
            priority: 0,
        }))
        .unwrap();
        let (mut buf, mut events) = (Vec::new(), Vec::new());
        let mut chunk = [0u8; 65_536];
        loop {
            while let Some((e, used)) = decode::<Event>(&buf).expect("a valid frame") {
                buf.drain(..used);
                let done = matches!(&e, Event::Finished { .. } | Event::Rejected { .. });
                events.push(e);
                if done {
                    return events;
                }
            }
            let n = s
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("{e}: {}", self.log()));
            assert!(n > 0, "the engine hung up: {events:?}\n{}", self.log());
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn finished(events: &[Event]) -> Counts {
    match events.last() {
        Some(Event::Finished {
            outcome: Outcome::Complete,
            counts,
            ..
        }) => *counts,
        other => panic!("scan did not complete: {other:?}"),
    }
}

#[test]
fn engine_daemon_scans_through_link_frames_exactly() {
    let lab = lab_named("e", "m", LabConfig::default());
    let _serial = serial();
    let mac = target_mac(&lab);
    let d = Daemon::start(&lab, "real", &mac);
    let addrs = ["198.18.0.2", "2001:2::2"];
    let events = d.scan(&addrs, "-", ScanKind::Deep);
    let counts = finished(&events);
    let mut open = BTreeSet::new();
    let mut filtered = BTreeSet::new();
    for e in &events {
        if let Event::Ports { results, .. } = e {
            for r in results {
                let set = match r.state {
                    PortState::Open => &mut open,
                    PortState::Filtered => &mut filtered,
                    PortState::Closed => panic!("closed ports are only counted: {r:?}"),
                };
                assert!(set.insert((r.ip, r.port)), "reported twice: {r:?}");
            }
        }
    }
    let (mut true_open, mut true_filtered, mut true_closed) = (BTreeSet::new(), BTreeSet::new(), 0);
    for a in addrs {
        let h = truth_of(&lab, a);
        let ip: IpAddr = a.parse().unwrap();
        true_open.extend(h.open.iter().map(|&p| (ip, p)));
        true_filtered.extend(
            h.filtered_silent
                .iter()
                .chain(&h.filtered_icmp)
                .map(|&p| (ip, p)),
        );
        true_closed += h.closed_count() as u64;
    }
    assert_eq!(open, true_open);
    assert_eq!(filtered, true_filtered);
    assert_eq!(counts.closed, true_closed, "{counts:?}");
    assert_eq!(
        (counts.open, counts.filtered),
        (open.len() as u64, filtered.len() as u64)
    );
    drop(d);

    // The frames really go to that MAC: addressed to one nobody has, nothing answers.
    let d = Daemon::start(&lab, "nobody", "02:00:00:00:00:99");
    let counts = finished(&d.scan(&["198.18.0.2"], "22,80,443,1000", ScanKind::Custom));
    assert_eq!(
        (counts.open, counts.closed, counts.filtered),
        (0, 0, 4),
        "{counts:?}\n{}",
        d.log()
    );
}
