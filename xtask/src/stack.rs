//! The whole service inside the lab: the engine daemon (started as root, confined to `nobody`
//! with CAP_NET_RAW only, seccomp and Landlock) and the
//! control API (an unprivileged user, no capabilities) in the scanner namespace, clients
//! (curl) in the target namespace, so the requester address the API sees is a lab host.
//!
//! Used by the demo and by end-to-end tests. Processes are started and stopped by PID; the
//! lab (no default route) is torn down when the [`Stack`] is dropped.

use crate::lab::LabGuard;
use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// uid/gid the API runs as (`nobody`/`nogroup`).
pub const API_UID: u32 = 65534;
/// The API's port on the scanner's lab addresses.
pub const API_PORT: u16 = 8080;

/// The self-scan API's fast-scan ports (control-api/README.md; 25 always included).
pub const FAST_PORTS: [u16; 32] = [
    21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 465, 587, 993, 995, 1433, 1521,
    2049, 3306, 3389, 5432, 5900, 6379, 8080, 8443, 9000, 9200, 11211, 27017, 50000,
];

/// The ports listed under `key` (`ports_open`, `ports_filtered`) of a self-scan result; none
/// when the key is absent.
pub fn ports_of(v: &serde_json::Value, key: &str) -> BTreeSet<u16> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["port"].as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// [`ports_of`] for tests: panics unless `key` lists ports, each with a port number.
pub fn expect_ports_of(v: &serde_json::Value, key: &str) -> BTreeSet<u16> {
    let valid = |p: &serde_json::Value| p["port"].as_u64().is_some_and(|n| n <= 65_535);
    assert!(
        v[key].as_array().is_some_and(|a| a.iter().all(valid)),
        "no list of {key} in {v}"
    );
    ports_of(v, key)
}

/// `setpriv` arguments that run what follows as the API's user, with no supplementary groups.
pub(crate) fn as_api_user(setpriv: &mut Command) -> &mut Command {
    setpriv.args([
        &format!("--reuid={API_UID}"),
        &format!("--regid={API_UID}"),
        "--clear-groups",
    ])
}

/// Runs a `portscope-api ... token create ...` command line and returns the token it prints.
pub(crate) fn create_token(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().context("running portscope-api token create")?;
    if !out.status.success() {
        bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:").map(|t| t.trim().to_string()))
        .with_context(|| format!("no token in {stdout}"))
}

/// Extra arguments for the two processes.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Appended to `portscope engine ...`.
    pub engine_args: Vec<String>,
    /// Appended to `portscope-api ...`.
    pub api_args: Vec<String>,
    /// TOML written to the API's config file (`--config`), if any.
    pub api_config: Option<String>,
}

/// Engine + API running in a lab.
#[derive(Debug)]
pub struct Stack {
    /// The lab (dropped last: fields drop in order, and `Drop for Stack` stops processes).
    pub lab: LabGuard,
    dir: PathBuf,
    bins: PathBuf,
    opts: StackOptions,
    engine: Option<Child>,
    api: Option<Child>,
}

/// Where `cargo` put the workspace binaries of the current profile.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("PORTSCOPE_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().context("exe has a directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

impl Stack {
    /// Starts the engine, then the API, in `lab`, from the binaries next to this program.
    pub fn up(lab: LabGuard, opts: StackOptions) -> anyhow::Result<Stack> {
        Self::up_with(lab, opts, bin_dir()?)
    }

    /// Like [`Stack::up`] with the binaries taken from `bins`.
    pub fn up_with(lab: LabGuard, opts: StackOptions, bins: PathBuf) -> anyhow::Result<Stack> {
        for b in ["portscope", "portscope-api"] {
            if !bins.join(b).exists() {
                bail!(
                    "{} not built (run `cargo build --workspace` or `cargo test --workspace`)",
                    bins.join(b).display()
                );
            }
        }
        let dir = lab.state_dir().join("stack");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("api"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        // The API's state directory belongs to the API's user.
        let st = Command::new("chown")
            .arg(format!("{API_UID}:{API_UID}"))
            .arg(dir.join("api"))
            .status()?;
        if !st.success() {
            bail!("chown of the API state directory failed");
        }
        let mut s = Stack {
            lab,
            dir,
            bins,
            opts,
            engine: None,
            api: None,
        };
        s.start_engine()?;
        s.start_api()?;
        Ok(s)
    }

    /// The API's process id (`setpriv` and `ip netns exec` exec in place).
    pub fn api_pid(&self) -> Option<u32> {
        self.api.as_ref().map(Child::id)
    }

    /// The engine's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("engine.sock")
    }

    /// The API's SQLite file.
    pub fn db(&self) -> PathBuf {
        self.dir.join("api/portscope.db")
    }

    /// Log files of the engine and the API.
    pub fn log_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("engine.log"), self.dir.join("api/api.log"))
    }

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        let (e, a) = self.log_paths();
        format!(
            "--- engine log ---\n{}\n--- api log ---\n{}",
            std::fs::read_to_string(e).unwrap_or_default(),
            std::fs::read_to_string(a).unwrap_or_default()
        )
    }

    /// Base URL of the API over IPv4.
    pub fn url_v4(&self) -> String {
        format!("http://198.18.0.1:{API_PORT}")
    }

    /// Base URL of the API over IPv6.
    pub fn url_v6(&self) -> String {
        format!("http://[2001:2::1]:{API_PORT}")
    }

    fn log(&self, path: &Path) -> anyhow::Result<File> {
        Ok(File::options().create(true).append(true).open(path)?)
    }

    /// Starts the engine daemon (as root, which it reduces to CAP_NET_RAW) and waits for
    /// its socket.
    pub fn start_engine(&mut self) -> anyhow::Result<()> {
        let log = self.log(&self.dir.join("engine.log"))?;
        let sock = self.socket();
        let _ = std::fs::remove_file(&sock);
        let child = engine_command(
            self.lab.scanner_cmd(self.bins.join("portscope")),
            &sock,
            &self.opts.engine_args,
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the engine")?;
        self.engine = Some(child);
        wait_for(Duration::from_secs(10), || sock.exists())
            .with_context(|| format!("engine socket never appeared\n{}", self.logs()))
    }

    /// Creates an API token with the API's own CLI, as the API's user, on the API's
    /// database; returns its secret.
    pub fn create_token(
        &self,
        name: &str,
        scopes: &[&str],
        monthly_scans: u32,
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new("setpriv");
        as_api_user(&mut cmd)
            .arg(self.bins.join("portscope-api"))
            .arg("--db")
            .arg(self.db())
            .args(["token", "create", "--name", name, "--monthly-scans"])
            .arg(monthly_scans.to_string());
        for scope in scopes {
            cmd.args(["--scope", scope]);
        }
        create_token(&mut cmd)
    }

    /// Starts the API as an unprivileged user and waits until it answers.
    pub fn start_api(&mut self) -> anyhow::Result<()> {
        let log = self.log(&self.dir.join("api/api.log"))?;
        let mut cmd = self.lab.scanner_cmd("setpriv");
        as_api_user(&mut cmd)
            .arg("--inh-caps=-all")
            .arg(self.bins.join("portscope-api"))
            .args([
                "--listen",
                &format!("198.18.0.1:{API_PORT}"),
                "--listen",
                &format!("[2001:2::1]:{API_PORT}"),
            ])
            .arg("--db")
            .arg(self.db())
            .arg("--engine-socket")
            .arg(self.socket())
            .args(match &self.opts.api_config {
                Some(toml) => {
                    let path = self.dir.join("api/api.toml");
                    std::fs::write(&path, toml)?;
                    vec!["--config".into(), path.into_os_string()]
                }
                None => vec![],
            })
            .args([
                "--allow-target",
                "198.18.0.0/15",
                "--allow-target",
                "2001:2::/48",
            ])
            .args([
                "--allow-callback",
                "198.18.0.0/15",
                "--allow-callback",
                "2001:2::/48",
            ])
            .args(&self.opts.api_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.api = Some(cmd.spawn().context("starting the API")?);
        let url = format!("{}/v1/openapi.json", self.url_v4());
        wait_for(Duration::from_secs(15), || {
            self.curl(
                "198.18.0.2",
                &["-o", "/dev/null", "-w", "%{http_code}", &url],
            )
            .output()
            .map(|o| o.stdout == b"200")
            .unwrap_or(false)
        })
        .with_context(|| format!("API never answered\n{}", self.logs()))
    }

    /// Stops the engine: `SIGTERM` (clean) or `SIGKILL` (a crash).
    pub fn stop_engine(&mut self, kill: bool) {
        stop(&mut self.engine, kill);
    }

    /// Stops the API.
    pub fn stop_api(&mut self, kill: bool) {
        stop(&mut self.api, kill);
    }

    /// The engine process's pid, while it runs (for reading `/proc/PID/status`).
    pub fn engine_pid(&self) -> Option<u32> {
        self.engine.as_ref().map(Child::id)
    }

    /// Whether the engine process is still running.
    pub fn engine_running(&mut self) -> bool {
        self.engine
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// A curl from `source` (a lab host address in the target namespace), with timeouts.
    pub fn curl(&self, source: &str, args: &[&str]) -> Command {
        let mut c = self.lab.target_cmd("curl");
        c.args([
            "-sS",
            "--max-time",
            "10",
            "--connect-timeout",
            "3",
            "--interface",
            source,
        ])
        .args(args);
        c
    }

    /// Runs curl and returns (status code, headers, body).
    pub fn http(
        &self,
        source: &str,
        method: &str,
        url: &str,
        extra: &[&str],
    ) -> anyhow::Result<HttpReply> {
        let mut c = self.curl(source, &["-X", method, "-D", "-", "-o", "/dev/stdout", url]);
        c.args(extra);
        let out: Output = c.output()?;
        if !out.status.success() {
            bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        HttpReply::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Stack {
    /// `method path` on the API over IPv4 from `source` with `Authorization: Bearer
    /// token` (and a JSON `body`): the status and the body as JSON (a JSON string when the
    /// body is not JSON).
    pub fn bearer(
        &self,
        source: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}{path}", self.url_v4());
        let auth = format!("Authorization: Bearer {token}");
        let mut extra = vec!["-H", auth.as_str()];
        if let Some(b) = body {
            extra.extend(["-H", "Content-Type: application/json", "--data", b]);
        }
        let r = self.http(source, method, &url, &extra)?;
        let v = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body));
        Ok((r.status, v))
    }
}

/// A parsed HTTP reply from curl `-D - -o /dev/stdout`.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl HttpReply {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .context("no header/body separator")?;
        let mut lines = head.lines();
        let status_line = lines.next().context("empty reply")?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(HttpReply {
            status,
            headers,
            body: body.to_string(),
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// `<program> engine` as the stack runs it: socket `sock` (mode 0666, the API's uid allowed),
/// the lab ranges allowed, 250,000 packets a second unless `extra` names a `--rate`, then
/// `extra`. `cmd` is `portscope` inside a scanner namespace (`Lab::scanner_cmd`,
/// `Scanner::cmd`).
pub(crate) fn engine_command(mut cmd: Command, sock: &Path, extra: &[String]) -> Command {
    cmd.arg("engine")
        .arg("--socket")
        .arg(sock)
        .args(["--socket-mode", "0666", "--allow-uid", &API_UID.to_string()])
        .args(["--allow", "198.18.0.0/15", "--allow", "2001:2::/48"])
        .args(if extra.iter().any(|a| a == "--rate") {
            &[][..]
        } else {
            &["--rate", "250000"][..]
        })
        .args(extra);
    cmd
}

/// [`stop_within`] with a 10 s limit.
pub(crate) fn stop(child: &mut Option<Child>, kill: bool) {
    stop_within(child, kill, Duration::from_secs(10));
}

/// Stops a child we started, by PID: SIGTERM (or SIGKILL when `kill`); SIGKILL if it has
/// not exited within `limit`, then reaped.
pub fn stop_within(child: &mut Option<Child>, kill: bool, limit: Duration) {
    if let Some(mut c) = child.take() {
        let sig = if kill { "-KILL" } else { "-TERM" };
        // Only the process we started, by PID (`ip netns exec` execs in place).
        let _ = Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Polls `ready` every 50 ms until it holds or `limit` passes.
pub(crate) fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not ready after {limit:?}")
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_api(false);
        self.stop_engine(false);
    }
}
