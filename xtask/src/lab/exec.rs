//! Running commands for the lab: inside a namespace (`ip netns exec`), `ip` itself, any
//! command with its stderr in the error, and finding the xtask binary that runs inside.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

pub(super) fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

pub(super) fn netns_exec(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Run `cmd`, returning stdout; a failure carries the command line and its stderr.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// The xtask binary, which runs `lab serve` and `lab probe` inside the namespaces.
///
/// In order: `$XTASK_BIN`; this process if it is xtask; `xtask` next to this executable or
/// one directory up (a test binary in `target/<profile>/deps/`). Tests of other crates that
/// depend on this library must make sure `cargo build -p xtask` ran (a workspace `cargo test`
/// builds it), or set `XTASK_BIN`.
pub fn xtask_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("XTASK_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    if exe.file_stem() == Some(OsStr::new("xtask")) {
        return Ok(exe);
    }
    let dir = exe.parent().context("executable without a directory")?;
    for candidate in [dir.join("xtask"), dir.join("../xtask")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the xtask binary near {}: run `cargo build -p xtask` or set XTASK_BIN",
        exe.display()
    )
}
