//! The seccomp filter's failure mode, in a child process (this test binary run again): a
//! system call outside the engine's list kills the process with SIGSYS, `--seccomp log`
//! lets it through, and the calls the list allows keep working. Needs no privileges
//! (`no_new_privs` allows an unprivileged filter). The root-mode confinement as a whole
//! (uid, capabilities, Landlock) is tested on the real daemon in the lab
//! (`xtask/tests/service.rs`).

use portscope_daemon::sandbox::{install_seccomp, SeccompMode};
use portscope_transport::privs;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "PORTSCOPE_SECCOMP_CHILD";

/// In the child: filter, then make an allowed call and a forbidden one (`mkdirat`).
fn child(mode: SeccompMode) {
    privs::set_no_new_privs().unwrap();
    install_seccomp(mode).unwrap();
    // Allowed: a thread, memory, a clock, a write to stdout.
    let v = std::thread::spawn(|| vec![1u8; 1 << 20].len())
        .join()
        .unwrap();
    println!("allowed calls work: {v} {:?}", std::time::Instant::now());
    let dir = std::env::temp_dir().join(format!("ps-seccomp-{}", std::process::id()));
    let made = std::fs::create_dir(&dir);
    let _ = std::fs::remove_dir(&dir);
    println!("mkdir returned {made:?}");
}

fn run_child(test: &str, mode: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .output()
        .unwrap()
}

#[test]
fn a_call_outside_the_list_kills_the_process_with_sigsys() {
    if let Ok(mode) = std::env::var(CHILD) {
        return child(mode.parse().unwrap());
    }
    let out = run_child(
        "a_call_outside_the_list_kills_the_process_with_sigsys",
        "enforce",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{:?}\n{stdout}",
        out.status
    );
    assert!(stdout.contains("allowed calls work"), "{stdout}");
    assert!(!stdout.contains("mkdir returned"), "{stdout}");
}

#[test]
fn log_mode_lets_the_call_through() {
    if let Ok(mode) = std::env::var(CHILD) {
        return child(mode.parse().unwrap());
    }
    let out = run_child("log_mode_lets_the_call_through", "log");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert!(stdout.contains("mkdir returned Ok(())"), "{stdout}");
}
