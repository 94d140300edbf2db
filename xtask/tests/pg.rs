//! The test PostgreSQL server (`xtask::pg::PgGuard`): it starts from Debian's binaries with no
//! system service, answers over TCP on 127.0.0.1 and over its Unix socket, keeps data, and
//! leaves no process and no directory behind when dropped; a lab namespace reaches it through
//! its socket.

use std::net::TcpStream;
use std::path::Path;

use xtask::lab::{LabConfig, LabGuard};
use xtask::pg::{PgGuard, DATABASE, USER};

fn alive(pid: u32) -> bool {
    // A zombie counts as gone: its state follows the parenthesised name.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

fn cmdline(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
}

#[test]
fn a_server_starts_keeps_data_and_leaves_nothing_behind() {
    let pg = PgGuard::start().unwrap_or_else(|e| panic!("PgGuard::start: {e:#}"));
    let (port, pid, dir) = (pg.port(), pg.pid(), pg.dir().to_path_buf());
    assert_eq!(
        pg.url(),
        format!("postgres://{USER}@127.0.0.1:{port}/{DATABASE}")
    );
    assert!(pg.socket_url().contains(&format!("host={}", dir.display())));
    assert!(alive(pid), "postmaster {pid} not running");
    assert!(cmdline(pid).contains("postgres"), "{}", cmdline(pid));
    // As root the server must not run as root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().skip(1).any(|u| u == "0"), "{uid}");
    // TCP on 127.0.0.1 only, and the socket in the private directory.
    TcpStream::connect(("127.0.0.1", port)).expect("TCP on 127.0.0.1");
    assert_eq!(
        pg.psql(DATABASE, "SHOW listen_addresses").unwrap().trim(),
        "127.0.0.1"
    );
    assert!(dir.join(format!(".s.PGSQL.{port}")).exists());

    pg.psql(
        DATABASE,
        "CREATE TABLE port_results (scan bigint, address inet, port int, state text, \
         PRIMARY KEY (scan, address, port))",
    )
    .unwrap();
    pg.psql(
        DATABASE,
        "INSERT INTO port_results VALUES (1, '198.19.0.2', 22, 'open'), (1, '2001:2:0:1::3', 23, 'filtered') \
         ON CONFLICT (scan, address, port) DO UPDATE SET state = excluded.state",
    )
    .unwrap();
    // The key holds: a second insert of the same pair conflicts.
    let dup = pg.psql(
        DATABASE,
        "INSERT INTO port_results VALUES (1, '198.19.0.2', 22, 'closed')",
    );
    assert!(
        format!("{:#}", dup.unwrap_err()).contains("duplicate key"),
        "a duplicate (scan, address, port) was accepted"
    );
    let rows = pg
        .psql(
            DATABASE,
            "SELECT address, port, state FROM port_results ORDER BY port",
        )
        .unwrap();
    assert_eq!(rows, "198.19.0.2|22|open\n2001:2:0:1::3|23|filtered\n");
    // A wrong statement is an error, not an empty answer.
    assert!(pg.psql(DATABASE, "SELECT * FROM no_such_table").is_err());

    // A second server at the same time gets its own port and directory.
    let other = PgGuard::start().unwrap();
    assert_ne!(other.port(), port);
    assert_ne!(other.dir(), dir);
    assert_eq!(
        other
            .psql(
                DATABASE,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'port_results'"
            )
            .unwrap()
            .trim(),
        "0"
    );
    let other_pid = other.pid();
    drop(other);
    assert!(!alive(other_pid), "second server {other_pid} survived drop");

    drop(pg);
    assert!(!alive(pid), "postmaster {pid} survived drop");
    assert!(!Path::new(&dir).exists(), "{} survived drop", dir.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still answers"
    );
}

#[test]
fn a_lab_namespace_reaches_the_server_over_its_socket_not_over_tcp() {
    let pg = PgGuard::start().unwrap_or_else(|e| panic!("PgGuard::start: {e:#}"));
    let lab = LabGuard::up(&LabConfig {
        // `q`: no other test binary names its labs so.
        name: format!("q{}", std::process::id() % 10_000),
        hosts: 0,
        ..LabConfig::default()
    })
    .expect("lab up (needs root)");
    let psql = xtask::pg::bin_dir().unwrap().join("psql");
    let query = |host: &str| {
        lab.scanner_cmd(&psql)
            .args(["-X", "-A", "-t", "-h", host, "-p", &pg.port().to_string()])
            .args(["-U", USER, "-d", DATABASE, "-c", "SELECT 40 + 2"])
            .env("PGCONNECT_TIMEOUT", "3")
            .output()
            .unwrap()
    };
    let out = query(&pg.socket_dir().to_string_lossy());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // 127.0.0.1 in the lab is the namespace's own loopback: no server there.
    let out = query("127.0.0.1");
    assert!(!out.status.success(), "{out:?}");
}
