//! The seccomp filter's failure mode, in child processes (this test binary run again): a
//! system call outside the engine's list kills the process with SIGSYS, argument rules hold
//! (a UDP route lookup works, a TCP socket is a kill), `--seccomp log` lets calls through,
//! and the calls the list allows keep working. Needs no privileges (`no_new_privs` allows
//! an unprivileged filter). The root-mode confinement as a whole (uid, capabilities,
//! Landlock) is tested on the real daemon in the lab (`xtask/tests/service.rs`).

use portscope_daemon::sandbox::{install_seccomp, SeccompMode};
use portscope_transport::{privs, sys};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

const CHILD: &str = "PORTSCOPE_SECCOMP_CHILD";
const TEST: &str = "seccomp_kills_calls_outside_the_list_and_keeps_the_rest";

/// In the child: filter, make allowed calls, then the `action` under test.
fn child(spec: &str) {
    let (mode, action) = spec.split_once(':').unwrap();
    privs::set_no_new_privs().unwrap();
    install_seccomp(mode.parse().unwrap()).unwrap();
    // Allowed: a thread, memory, a clock, a write to stdout.
    let v = std::thread::spawn(|| vec![1u8; 1 << 20].len())
        .join()
        .unwrap();
    println!("allowed calls work: {v} {:?}", std::time::Instant::now());
    match action {
        "route" => println!(
            "route {:?}",
            sys::route_source("127.0.0.1".parse().unwrap())
        ),
        "tcp" => println!("tcp {:?}", std::net::TcpListener::bind("127.0.0.1:0")),
        "mkdir" => {
            let dir = std::env::temp_dir().join(format!("ps-seccomp-{}", std::process::id()));
            let made = std::fs::create_dir(&dir);
            let _ = std::fs::remove_dir(&dir);
            println!("mkdir {made:?}");
        }
        other => panic!("unknown action {other}"),
    }
}

fn run_child(spec: &str) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, spec)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn seccomp_kills_calls_outside_the_list_and_keeps_the_rest() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    assert!("strict".parse::<SeccompMode>().is_err());
    // (mode:action, killed by SIGSYS, what stdout shows)
    for (spec, killed, shows) in [
        ("enforce:mkdir", true, "allowed calls work"),
        ("enforce:tcp", true, "allowed calls work"),
        ("enforce:route", false, "route Ok(127.0.0.1)"),
        ("log:mkdir", false, "mkdir Ok(())"),
        ("log:tcp", false, "tcp Ok("),
    ] {
        let (status, stdout) = run_child(spec);
        if killed {
            assert_eq!(
                status.signal(),
                Some(libc::SIGSYS),
                "{spec}: {status:?}\n{stdout}"
            );
            let action = spec.split_once(':').unwrap().1;
            assert!(!stdout.contains(&format!("{action} ")), "{spec}: {stdout}");
        } else {
            assert!(status.success(), "{spec}: {status:?}\n{stdout}");
        }
        assert!(stdout.contains(shows), "{spec}: {stdout}");
    }
}
