//! A throwaway PostgreSQL server for tests and lab runs: Debian's binaries
//! (`/usr/lib/postgresql/<version>/bin`, the `postgresql` package `.ci/setup` installs),
//! `initdb` into a fresh directory, `pg_ctl start` on a free port of 127.0.0.1 only, with its
//! Unix socket in that directory; stopped and deleted when the [`PgGuard`] drops. No system
//! service, no cluster of the system's is touched.
//!
//! As root the server runs as the `postgres` user (or `nobody` if there is none), through
//! `setpriv`: PostgreSQL refuses to run as root. The database `portscope` belongs to the
//! superuser `portscope`, with `trust` authentication, which is fine for a server that
//! listens on 127.0.0.1 and a private socket directory and lives for one test.
//!
//! The TCP address is reachable only from the root network namespace; processes inside a lab
//! namespace reach the server through the Unix socket ([`PgGuard::socket_url`]), as
//! filesystem sockets cross network namespaces.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::lab::run;

/// Superuser and database name of every server.
pub const USER: &str = "portscope";
pub const DATABASE: &str = "portscope";

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server in a temporary directory; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgGuard {
    /// `<tmp>/portscope-pg-<pid>-<n>`: `data/`, `postgres.log` and the socket.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// uid and gid the server runs as, when this process is root.
    run_as: Option<(u32, u32)>,
    /// The postmaster's PID, read from `postmaster.pid` after the start.
    pid: u32,
}

impl PgGuard {
    /// initdb, start on a free port of 127.0.0.1 and create the database `portscope`.
    /// A port taken between choosing and binding it is retried on another port.
    pub fn start() -> anyhow::Result<PgGuard> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portscope-pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Others may traverse it to reach the socket; `data/` stays 0700 (initdb).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let run_as = server_user()?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let mut pg = PgGuard {
            dir,
            bin,
            port: 0,
            run_as,
            pid: 0,
        };
        // On any failure below, `drop` stops whatever started and deletes the directory.
        pg.initdb()?;
        let mut last = None;
        for _ in 0..3 {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e.context(format!("server log:\n{}", pg.log())));
        }
        pg.pid = pg.read_pid()?;
        pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        Ok(pg)
    }

    /// `postgres://portscope@127.0.0.1:<port>/portscope`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The same database over the Unix socket (`host=` the socket directory), for processes
    /// in another network namespace.
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://{USER}@localhost:{}/{DATABASE}?host={}",
            self.port,
            self.dir.display()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of everything: data, log, socket. Gone after drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Stop the server as a crash would (immediate shutdown: no checkpoint, clients cut off,
    /// crash recovery on the next start) and keep its data, to simulate a database outage;
    /// [`PgGuard::start_server`] brings it back on the same port.
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        let mut cmd = self.cmd("pg_ctl");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", &PG_CTL_WAIT.as_secs().to_string()])
            .args(["-m", "immediate", "stop"]);
        run(&mut cmd).context("pg_ctl stop")?;
        Ok(())
    }

    /// Start the server again after [`PgGuard::stop_server`], on the same port.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start()
            .map_err(|e| e.context(format!("server log:\n{}", self.log())))?;
        self.pid = self.read_pid()?;
        Ok(())
    }

    /// Run `sql` with `psql` in database `db` (stops at the first error); rows unaligned,
    /// `|`-separated, one a line.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = self.cmd("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                &self.dir.to_string_lossy(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", USER, "-d", db, "-c", sql]);
        run(&mut cmd)
    }

    /// A PostgreSQL program of the server's version, as the server's user when root.
    fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={gid}"),
                    "--clear-groups",
                ])
                .arg(path);
                c
            }
            None => Command::new(path),
        };
        // A working directory the server's user can read, and no inherited PG* settings.
        cmd.current_dir(&self.dir)
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGDATABASE")
            .env_remove("PGUSER");
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = self.cmd("initdb");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync");
        run(&mut cmd).context("initdb")?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        // listen_addresses: 127.0.0.1 only; the socket in our directory; no fsync (a test
        // server's data need not survive a power cut).
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let mut cmd = self.cmd("pg_ctl");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", &PG_CTL_WAIT.as_secs().to_string(), "-o", &opts])
            .arg("start");
        run(&mut cmd).context("pg_ctl start")?;
        Ok(())
    }

    fn read_pid(&self) -> anyhow::Result<u32> {
        let path = self.dir.join("data/postmaster.pid");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("no PID in {}", path.display()))
    }

    /// Stop the server (fast shutdown, then SIGKILL of the postmaster we started) and delete
    /// the directory. Problems are printed: it runs from `Drop`.
    fn stop(&mut self) {
        if self.dir.join("data/postmaster.pid").exists() {
            let mut cmd = self.cmd("pg_ctl");
            cmd.arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "-t", &PG_CTL_WAIT.as_secs().to_string()])
                .args(["-m", "immediate", "stop"]);
            if let Err(e) = run(&mut cmd) {
                eprintln!("pg: pg_ctl stop: {e:#}");
                if self.pid != 0 {
                    let _ = Command::new("kill")
                        .args(["-KILL", &self.pid.to_string()])
                        .status();
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("pg: removing {}: {e}", self.dir.display());
            }
        }
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$PORTSCOPE_PG_BIN`, or the newest `/usr/lib/postgresql/<version>/bin` with `pg_ctl`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PORTSCOPE_PG_BIN") {
        return Ok(dir.into());
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server in {}/<version>/bin: install the `postgresql` package \
             (.ci/setup does) or set PORTSCOPE_PG_BIN",
            root.display()
        ),
    }
}

/// The uid and gid to run the server as: `None` when not root, else `postgres` or `nobody`.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = nix::unistd::User::from_name(name)? {
            return Ok(Some((user.uid.as_raw(), user.gid.as_raw())));
        }
    }
    bail!("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `cargo xtask pg`: run a command beside a throwaway PostgreSQL server.
#[derive(Debug, clap::Parser)]
struct PgOptions {
    /// The command and its arguments (after `--`); run with `PORTSCOPE_TEST_PG` set.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// `cargo xtask pg -- COMMAND...`: runs COMMAND with `PORTSCOPE_TEST_PG` set to the URL of a
/// throwaway server (the control-api tests then keep every database there: one fresh
/// database per test), and stops the server after it. Exits with COMMAND's status.
pub fn with_server(args: &[String]) -> anyhow::Result<i32> {
    let PgOptions { command } = crate::args::parse("pg", args);
    let (program, rest) = command.split_first().context("clap requires a command")?;
    let pg = PgGuard::start()?;
    eprintln!("PORTSCOPE_TEST_PG={}", pg.url());
    let status = Command::new(program)
        .args(rest)
        .env("PORTSCOPE_TEST_PG", pg.url())
        .status()
        .with_context(|| format!("running {program}"))?;
    drop(pg);
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_free_loopback_port() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
