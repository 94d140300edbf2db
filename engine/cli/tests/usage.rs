//! Command-line errors of the real `portscope` binary, typed as nmap and masscan users type
//! them: every one exits 64 with its own message and before any socket is opened, so these
//! tests need no lab and no privilege (and a refused command never sends a packet).

use std::process::{Command, Output};

fn portscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portscope"))
        .args(args)
        .output()
        .expect("run portscope")
}

/// Asserts success and that stdout holds every line of `want`.
fn prints(out: &Output, want: &[&str]) {
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for w in want {
        assert!(text.contains(w), "{w:?} not in {text}");
    }
}

/// Asserts exit 64, nothing on stdout, and `want` in the error.
fn refused(args: &[&str], want: &str) {
    let out = portscope(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}");
    assert!(err.contains(want), "{args:?}: {err}");
}

#[test]
fn parser_errors_exit_64() {
    refused(
        &["scan", "198.18.0.2", "--bogus"],
        "unexpected argument '--bogus'",
    );
    refused(&["scan"], "TARGET");
    refused(
        &["scan", "198.18.0.2", "--rate", "fast"],
        "invalid value 'fast'",
    );
    refused(&["frobnicate"], "unrecognized subcommand");
    // Help and version are not errors.
    assert_eq!(portscope(&["scan", "--help"]).status.code(), Some(0));
    assert_eq!(portscope(&["--version"]).status.code(), Some(0));
}

#[test]
fn glued_nmap_output_flag_needs_its_file() {
    refused(
        &["scan", "198.18.0.2", "-oX"],
        "a value is required for '--output-xml",
    );
    refused(&["scan", "-oX", "198.18.0.2"], "TARGET");
    refused(&["scan", "198.18.0.2", "-oXout.xml"], "`-oX out.xml`");
    refused(&["scan", "198.18.0.2", "-oQ", "f"], "not an output flag");
    assert!(
        !std::path::Path::new("X").exists(),
        "-oX never makes a file named X"
    );
}

#[test]
fn each_bad_port_spec_has_its_own_message() {
    let lab = ["--allow", "198.18.0.0/15"];
    let scan = |p: &str| -> Vec<String> {
        ["scan", "198.18.0.2", "-p", p, lab[0], lab[1]]
            .map(str::to_owned)
            .to_vec()
    };
    let refused_owned = |a: Vec<String>, want: &str| {
        refused(&a.iter().map(String::as_str).collect::<Vec<_>>(), want)
    };
    refused_owned(
        scan("0"),
        "port 0 in `0` is out of range: ports are 1-65535",
    );
    refused_owned(
        scan("70000"),
        "port 70000 in `70000` is out of range: ports are 1-65535",
    );
    refused_owned(
        scan("80-20"),
        "port range 80-20 is backwards: did you mean 20-80?",
    );
    refused(
        &["scan", "198.18.0.2", "--top-ports", "9999"],
        "more than the 4257 ports",
    );
    refused(
        &["scan", "198.18.0.2", "-p", "80", "--exclude-ports", "80"],
        "no ports left",
    );
}

#[test]
fn bad_source_ports_are_refused_before_any_socket() {
    let scan = |v: &str| ["scan", "198.18.0.2", "-p", "80", "--source-port", v].map(str::to_owned);
    for (v, want) in [
        (
            "0",
            "invalid value '0' for '--source-port <PORT>': 0 is not in 1..=65535",
        ),
        ("65536", "65536 is not in 1..=65535"),
        ("70000", "70000 is not in 1..=65535"),
        ("dns", "invalid value 'dns' for '--source-port <PORT>'"),
    ] {
        refused(&scan(v).each_ref().map(String::as_str), want);
    }
    refused(
        &["scan", "198.18.0.2", "-p", "80", "-g", "99999"],
        "invalid value '99999' for '--source-port <PORT>': 99999 is not in 1..=65535",
    );
    refused(
        &["scan", "198.18.0.2", "-p", "80", "-g", "-5"],
        "unexpected argument '-5'",
    );
}

#[test]
fn dry_run_names_a_fixed_source_port() {
    let out = portscope(&[
        "scan",
        "198.18.0.2",
        "-p",
        "80",
        "-g",
        "53",
        "--allow",
        "198.18.0.0/15",
        "--dry-run",
    ]);
    prints(&out, &["source port: 53 (every probe and retry)"]);
}

#[test]
fn ipv6_refusal_suggests_the_narrowest_allow() {
    refused(
        &["scan", "2001:2::2", "-p", "80"],
        "pass --allow 2001:2::/48",
    );
    refused(
        &["scan", "198.18.0.2", "-p", "80"],
        "pass --allow 198.18.0.0/15",
    );
}

#[test]
fn dry_run_needs_no_privilege_and_lists_the_probes() {
    let dir = std::env::temp_dir().join(format!("ps-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("targets.txt");
    std::fs::write(&list, "198.18.0.0/30 # lab\n198.18.0.9\n").unwrap();
    let exclude = dir.join("exclude.txt");
    std::fs::write(&exclude, "198.18.0.1\n").unwrap();
    // Run unprivileged when we are root, so the dry run provably needs no CAP_NET_RAW.
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_portscope"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_portscope"))
    };
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for f in [&list, &exclude] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let out = cmd
        .arg("scan")
        .arg("-iL")
        .arg(&list)
        .arg("--exclude-file")
        .arg(&exclude)
        .args(["-F", "--exclude-ports", "80", "--allow", "198.18.0.0/15"])
        .arg("--dry-run")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    prints(
        &out,
        &[
            "targets: 4 address(es): 198.18.0.0, 198.18.0.2-198.18.0.3, 198.18.0.9",
            "ports: 99 port(s): 7,9,13,21-23,25-26,",
            "probes: 396 in the first round",
            "source port: one per round, from 61440-65535",
        ],
    );
}

/// Whether this process runs as root (read from /proc, no libc call needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}
