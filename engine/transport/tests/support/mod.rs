//! Test support for tests that need root: each such test re-runs itself as a child process
//! (this same test binary, `--exact` its own name), optionally inside a fresh network
//! namespace that only has `lo`, so nothing it sends can leave the machine. The parent
//! asserts that the child passed and deletes the namespace whatever happens.
//!
//! Not a fixture library: there is no skipping. Without root (no `ip netns add`) the
//! tests fail.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set in the child's environment to the name of the test it should run for real.
const CHILD_ENV: &str = "PORTSCOPE_TRANSPORT_TEST_CHILD";
/// A child that runs longer than this is killed and the test fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `body` in a child process inside a fresh network namespace. `name` must be the
/// calling test's name (checked: the child must report exactly one passed test).
pub fn in_netns(name: &str, body: impl FnOnce()) {
    if is_child(name) {
        body();
    } else {
        let ns = Netns::create();
        run_child(name, Some(&ns));
    }
}

/// The two ends of [`in_netns_pair`]'s link.
pub const PAIR_A: [u8; 4] = [198, 18, 0, 1];
/// The far end.
pub const PAIR_B: [u8; 4] = [198, 18, 0, 2];
/// Name of the link's end in the child's namespace.
pub const PAIR_DEV: &str = "veth-a";

/// Runs `body` in a child process inside a fresh namespace A that is linked by a veth pair
/// to a second fresh namespace B: `veth-a` 198.18.0.1/30 in A, `veth-b` 198.18.0.2/30 in
/// B (with a static neighbour entry, so no ARP). IPv6 is off on the link. Both
/// namespaces are deleted afterwards.
pub fn in_netns_pair(name: &str, body: impl FnOnce()) {
    if is_child(name) {
        body();
        return;
    }
    let a = Netns::create();
    let b = Netns::create();
    let (mac_a, mac_b) = ("02:00:00:00:00:01", "02:00:00:00:00:02");
    let steps: [&[&str]; 8] = [
        &[
            "-n",
            a.name(),
            "link",
            "add",
            PAIR_DEV,
            "address",
            mac_a,
            "type",
            "veth",
            "peer",
            "name",
            "veth-b",
            "address",
            mac_b,
            "netns",
            b.name(),
        ],
        &[
            "netns",
            "exec",
            a.name(),
            "sysctl",
            "-qw",
            "net.ipv6.conf.veth-a.disable_ipv6=1",
        ],
        &[
            "netns",
            "exec",
            b.name(),
            "sysctl",
            "-qw",
            "net.ipv6.conf.veth-b.disable_ipv6=1",
        ],
        &[
            "-n",
            a.name(),
            "addr",
            "add",
            "198.18.0.1/30",
            "dev",
            PAIR_DEV,
        ],
        &[
            "-n",
            b.name(),
            "addr",
            "add",
            "198.18.0.2/30",
            "dev",
            "veth-b",
        ],
        &["-n", a.name(), "link", "set", PAIR_DEV, "up"],
        &["-n", b.name(), "link", "set", "veth-b", "up"],
        &[
            "-n",
            a.name(),
            "neigh",
            "replace",
            "198.18.0.2",
            "lladdr",
            mac_b,
            "dev",
            PAIR_DEV,
            "nud",
            "permanent",
        ],
    ];
    for args in steps {
        let (ok, out) = ip(args);
        assert!(ok, "ip {}: {out}", args.join(" "));
    }
    run_child(name, Some(&a));
}

/// Runs `body` in a child process (same network namespace: for tests that send nothing
/// but change process-wide state, like capabilities).
pub fn in_child(name: &str, body: impl FnOnce()) {
    if is_child(name) {
        body();
    } else {
        run_child(name, None);
    }
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// A network namespace that exists while this value lives.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ps-tr-<pid>-<n>` with only `lo`, up, and no routes off the host.
    pub fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ps-tr-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = ip(&["netns", "add", &name]);
        assert!(
            out.0,
            "cannot create network namespace {name} (these tests need root): {}",
            out.1
        );
        let ns = Netns { name };
        let up = ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        assert!(up.0, "cannot bring lo up in {}: {}", ns.name, up.1);
        // Belt and braces: the namespace must be an island.
        let links = ip(&["-n", &ns.name, "-o", "link", "show"]).1;
        assert_eq!(
            links.lines().count(),
            1,
            "unexpected links in {}: {links}",
            ns.name
        );
        assert!(links.contains(" lo:"), "{links}");
        for family in ["-4", "-6"] {
            let routes = ip(&["-n", &ns.name, family, "route", "show", "table", "all"]).1;
            assert!(
                routes
                    .lines()
                    .all(|l| l.contains("dev lo") && !l.starts_with("default")),
                "unexpected routes in {}: {routes}",
                ns.name
            );
        }
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let (ok, out) = ip(&["netns", "del", &self.name]);
        if !ok {
            eprintln!("could not delete network namespace {}: {out}", self.name);
        }
    }
}

/// Runs `ip ARGS`; (success, stdout + stderr).
fn ip(args: &[&str]) -> (bool, String) {
    match Command::new("ip").args(args).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => (false, format!("cannot run ip: {e}")),
    }
}

/// Runs test `name` of this binary in a child (in `netns` if given), bounded in time.
fn run_child(name: &str, netns: Option<&Netns>) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name()]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn child test");
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if start.elapsed() > CHILD_TIMEOUT {
            // Our own child, by PID (ip netns exec execs the test binary in place).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = format!(
        "--- child stdout ---\n{}\n--- child stderr ---\n{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let Some(status) = status else {
        panic!("child test {name} timed out after {CHILD_TIMEOUT:?}\n{text}");
    };
    assert!(
        status.success(),
        "child test {name} failed ({status})\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "child test {name} did not run exactly one test\n{text}"
    );
    // Show the child's own output (e.g. what it observed about the kernel).
    println!("{text}");
}
