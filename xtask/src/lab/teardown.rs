//! Tearing a lab down: stopping its listeners (found by PID file and through /proc, only
//! processes that run this lab's `lab serve`), deleting its namespaces (every scanner's and
//! the target's) and its state.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{ip, ns_exists, Lab};

/// Kill the listener(s), delete the namespaces and the state directory of lab `name`.
pub(super) fn teardown(name: &str, child: Option<Child>) -> anyhow::Result<()> {
    let state = Lab::state_dir_for(name);
    let truth_path = state.join("truth.json");
    // The listener first: a namespace lives on while a process is inside it.
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut pids: Vec<u32> = fs::read_to_string(state.join("listener.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .into_iter()
        .collect();
    pids.extend(find_listeners(&truth_path));
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        if is_listener(pid, &truth_path) {
            kill(pid)?;
        }
    }
    let mut namespaces = super::scanners::existing_namespaces(name);
    namespaces.push(format!("{name}-t"));
    for ns in namespaces {
        if !ns_exists(&ns) {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", &ns]) {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if !pids.is_empty() {
                eprintln!(
                    "lab {name}: processes {pids:?} are still in {ns}; it lives on until they exit"
                );
            }
        }
        ip(&["netns", "del", &ns])?;
    }
    if state.exists() {
        fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    Ok(())
}

/// The arguments of process `pid`, empty if it is gone (or a zombie).
fn cmdline(pid: u32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether `pid` runs `lab serve --truth <truth_path>` (possibly still as `ip netns exec ...`).
pub(super) fn is_listener(pid: u32, truth_path: &Path) -> bool {
    let args = cmdline(pid);
    let want = ["lab", "serve", "--truth", &truth_path.to_string_lossy()];
    args.windows(4)
        .any(|w| w.iter().zip(want).all(|(a, b)| a == b))
}

/// Every process that is this lab's listener, found through /proc.
fn find_listeners(truth_path: &Path) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| is_listener(pid, truth_path))
        .collect()
}

/// Alive and not a zombie.
pub(super) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL after 2 s.
fn kill(pid: u32) -> anyhow::Result<()> {
    for (signal, wait) in [
        ("-TERM", Duration::from_secs(2)),
        ("-KILL", Duration::from_secs(2)),
    ] {
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < wait {
            if !process_alive(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    bail!("listener {pid} survived SIGKILL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_a_listener() {
        assert!(!is_listener(
            std::process::id(),
            Path::new("/run/portscope-lab/x/truth.json")
        ));
        assert!(process_alive(std::process::id()));
    }
}
