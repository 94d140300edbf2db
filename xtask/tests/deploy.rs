//! Repository invariants about `deploy/`: the systemd units pass `systemd-analyze verify`,
//! the engine gets CAP_NET_RAW and nothing else, and the API gets no capability at all.

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("ps-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for name in ["portscope-engine.service", "portscope-api.service"] {
        // verify checks that ExecStart binaries exist: point them at one that does.
        let text = unit(name)
            .replace("/usr/local/bin/portscope-api ", "/bin/true ")
            .replace("/usr/local/bin/portscope ", "/bin/true ");
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&paths)
        .output()
        .expect("systemd-analyze (package systemd) is installed by .ci/setup");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    assert!(stderr.trim().is_empty(), "verify warned: {stderr}");
}

#[test]
fn engine_has_only_cap_net_raw_and_api_none() {
    let engine = unit("portscope-engine.service");
    assert!(engine.contains("\nAmbientCapabilities=CAP_NET_RAW\n"));
    assert!(engine.contains("\nCapabilityBoundingSet=CAP_NET_RAW\n"));
    assert!(engine.contains("\nNoNewPrivileges=yes\n"));
    assert!(!engine.contains("User=root"));
    let api = unit("portscope-api.service");
    assert!(api.contains("\nCapabilityBoundingSet=\n") && api.contains("\nAmbientCapabilities=\n"));
    assert!(api.contains("\nDynamicUser=yes\n"));
    let tmpfiles = std::fs::read_to_string(deploy_dir().join("portscope.conf")).unwrap();
    assert!(tmpfiles.contains("d /run/portscope 0750 portscope-engine portscope"));
}
