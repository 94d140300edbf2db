//! Findings and grades from open ports: the one rubric table (which exposed services are
//! how risky, and what each costs the grade), the per-scan findings and severity counts,
//! and `grade` / `gradeScore`. Pure: no I/O. Filtered ports produce no finding.

use serde::Serialize;

/// Finding severity, lowest first (so `>=` means "at least as severe").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Informational: an open port with no known special risk.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// `CRITICAL`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Parses any case.
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_uppercase().as_str() {
            "INFO" => Some(Severity::Info),
            "LOW" => Some(Severity::Low),
            "MEDIUM" => Some(Severity::Medium),
            "HIGH" => Some(Severity::High),
            "CRITICAL" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// Grade points one finding of this severity costs (see the README rubric).
    pub fn cost(self) -> i64 {
        match self {
            Severity::Critical => 40,
            Severity::High => 20,
            Severity::Medium => 10,
            Severity::Low => 3,
            Severity::Info => 0,
        }
    }
}

/// One rubric row: an exposed TCP service.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Port.
    pub port: u16,
    /// Severity when open to the scanner.
    pub severity: Severity,
    /// Service.
    pub service: &'static str,
    /// Why it is risky.
    pub why: &'static str,
}

const fn rule(port: u16, severity: Severity, service: &'static str, why: &'static str) -> Rule {
    Rule {
        port,
        severity,
        service,
        why,
    }
}

/// The rubric. Any other open port is INFO ("open port"). Keep in sync with the README.
pub const RUBRIC: &[Rule] = &[
    rule(
        23,
        Severity::Critical,
        "Telnet",
        "cleartext remote shell; credentials travel unencrypted",
    ),
    rule(
        2375,
        Severity::Critical,
        "Docker API",
        "unauthenticated Docker daemon API gives root on the host",
    ),
    rule(
        2376,
        Severity::High,
        "Docker API (TLS)",
        "Docker daemon API; a stolen client certificate gives root",
    ),
    rule(
        2379,
        Severity::Critical,
        "etcd",
        "cluster state and secrets, often without authentication",
    ),
    rule(
        10250,
        Severity::Critical,
        "Kubelet API",
        "node API that can run commands in pods",
    ),
    rule(
        6379,
        Severity::Critical,
        "Redis",
        "in-memory database, no authentication by default",
    ),
    rule(
        11211,
        Severity::Critical,
        "Memcached",
        "cache without authentication; also a DDoS amplifier",
    ),
    rule(
        27017,
        Severity::Critical,
        "MongoDB",
        "database often exposed without authentication",
    ),
    rule(
        9200,
        Severity::Critical,
        "Elasticsearch",
        "search database with an unauthenticated HTTP API by default",
    ),
    rule(5984, Severity::High, "CouchDB", "database HTTP API"),
    rule(
        3306,
        Severity::High,
        "MySQL",
        "database; brute force and vulnerable versions",
    ),
    rule(
        5432,
        Severity::High,
        "PostgreSQL",
        "database; brute force and vulnerable versions",
    ),
    rule(
        1433,
        Severity::High,
        "MS SQL Server",
        "database; brute force and vulnerable versions",
    ),
    rule(1521, Severity::High, "Oracle DB", "database listener"),
    rule(
        9042,
        Severity::High,
        "Cassandra",
        "database, often without authentication",
    ),
    rule(
        445,
        Severity::High,
        "SMB",
        "Windows file sharing; wormable vulnerabilities (EternalBlue)",
    ),
    rule(
        139,
        Severity::High,
        "NetBIOS/SMB",
        "Windows file sharing over NetBIOS",
    ),
    rule(
        3389,
        Severity::High,
        "RDP",
        "remote desktop; brute force and BlueKeep-class bugs",
    ),
    rule(
        5900,
        Severity::High,
        "VNC",
        "remote desktop, often with weak or no passwords",
    ),
    rule(
        6443,
        Severity::High,
        "Kubernetes API",
        "cluster control plane",
    ),
    rule(21, Severity::Medium, "FTP", "cleartext file transfer"),
    rule(
        135,
        Severity::Medium,
        "MS RPC",
        "Windows RPC endpoint mapper",
    ),
    rule(
        111,
        Severity::Medium,
        "rpcbind",
        "RPC portmapper; information leak and amplification",
    ),
    rule(2049, Severity::Medium, "NFS", "network file system exports"),
    rule(110, Severity::Medium, "POP3", "cleartext mail retrieval"),
    rule(143, Severity::Medium, "IMAP", "cleartext mail retrieval"),
    rule(
        8080,
        Severity::Low,
        "HTTP alternate",
        "often an admin interface or development server",
    ),
    rule(
        22,
        Severity::Low,
        "SSH",
        "remote shell; keep keys-only and rate limited",
    ),
];

/// The rubric row of a port, if it has one.
pub fn rule_for(port: u16) -> Option<&'static Rule> {
    RUBRIC.iter().find(|r| r.port == port)
}

/// A finding (seed 002's fields, plus host and port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// The host.
    pub target: String,
    /// Port.
    pub port: u16,
    /// Severity.
    pub severity: Severity,
    /// Always `network`.
    pub category: &'static str,
    /// One line.
    pub title: String,
    /// Why and what to do.
    pub description: String,
    /// What was seen.
    pub evidence: String,
    /// Always `portscope`.
    pub tool: &'static str,
}

/// An open port of a host, with its banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPort {
    /// Host address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Banner, if any.
    pub banner: Option<String>,
    /// Open now but not in the previous complete scan of the same target: an exposure
    /// change, at least MEDIUM whatever the service.
    pub new: bool,
}

/// The severity of a port that is newly open since the previous scan: its rubric
/// severity, at least MEDIUM. The one rule for both the finding and the
/// `new_open_port` alert, so they never disagree.
pub fn new_port_severity(port: u16) -> Severity {
    rule_for(port)
        .map_or(Severity::Info, |r| r.severity)
        .max(Severity::Medium)
}

/// The finding an open port produces.
pub fn finding(p: &OpenPort) -> Finding {
    let (severity, service, why) = match rule_for(p.port) {
        Some(r) => (r.severity, r.service.to_string(), r.why),
        None => (
            Severity::Info,
            crate::model::service_name(p.port).unwrap_or_else(|| "unknown service".into()),
            "open port; make sure it is meant to be reachable",
        ),
    };
    let (severity, why) = if p.new && severity < new_port_severity(p.port) {
        (
            new_port_severity(p.port),
            "it was not open in the previous scan of this target; close it unless the change was intended",
        )
    } else {
        (severity, why)
    };
    let mut evidence = format!("{}:{}/tcp open (SYN-ACK)", p.host, p.port);
    if p.new {
        evidence.push_str("; newly open since the previous scan");
    }
    if let Some(b) = &p.banner {
        let b: String = b.chars().take(200).collect();
        evidence.push_str(&format!("; banner: {b}"));
    }
    Finding {
        target: p.host.clone(),
        port: p.port,
        severity,
        category: "network",
        title: format!("{service} ({}/tcp) exposed on {}", p.port, p.host),
        description: format!(
            "{service} is reachable from the Internet: {why}. Restrict it with a firewall \
             rule or bind it to a private interface."
        ),
        evidence,
        tool: "portscope",
    }
}

/// Findings of a scan, most severe first, then by host and port.
pub fn findings(open: &[OpenPort]) -> Vec<Finding> {
    let mut f: Vec<Finding> = open.iter().map(finding).collect();
    f.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.target.cmp(&b.target))
            .then_with(|| a.port.cmp(&b.port))
    });
    f
}

/// Counts by severity (seed 002's `summary`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SeverityCounts {
    /// All.
    pub total: u64,
    /// CRITICAL.
    pub critical: u64,
    /// HIGH.
    pub high: u64,
    /// MEDIUM.
    pub medium: u64,
    /// LOW.
    pub low: u64,
    /// INFO.
    pub info: u64,
}

/// Counts of these findings.
pub fn counts<'a>(f: impl IntoIterator<Item = &'a Finding>) -> SeverityCounts {
    let mut c = SeverityCounts::default();
    for x in f {
        c.total += 1;
        match x.severity {
            Severity::Critical => c.critical += 1,
            Severity::High => c.high += 1,
            Severity::Medium => c.medium += 1,
            Severity::Low => c.low += 1,
            Severity::Info => c.info += 1,
        }
    }
    c
}

/// `gradeScore` (0-100: 100 minus the cost of every finding) and `grade`
/// (A+ 100, A >= 90, B+ >= 80, B >= 70, C >= 60, D >= 40, F below).
pub fn grade<'a>(f: impl IntoIterator<Item = &'a Finding>) -> (String, i64) {
    let score = (100 - f.into_iter().map(|x| x.severity.cost()).sum::<i64>()).max(0);
    let g = match score {
        100 => "A+",
        90..=99 => "A",
        80..=89 => "B+",
        70..=79 => "B",
        60..=69 => "C",
        40..=59 => "D",
        _ => "F",
    };
    (g.to_string(), score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(port: u16) -> OpenPort {
        OpenPort {
            host: "198.18.0.5".into(),
            port,
            banner: None,
            new: false,
        }
    }

    #[test]
    fn rubric_grades_and_counts() {
        assert_eq!(grade(&findings(&[])), ("A+".into(), 100));
        assert_eq!(grade(&findings(&[open(443), open(80)])), ("A+".into(), 100));
        let f = findings(&[open(22), open(3306), open(6379)]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].title, "Redis (6379/tcp) exposed on 198.18.0.5");
        assert_eq!(grade(&f), ("F".into(), 37));
        let c = counts(&f);
        assert_eq!((c.total, c.critical, c.high, c.low), (3, 1, 1, 1));
        assert!(Severity::Critical > Severity::High);
        let ports: std::collections::HashSet<u16> = RUBRIC.iter().map(|r| r.port).collect();
        assert_eq!(ports.len(), RUBRIC.len(), "one row per port");
    }

    #[test]
    fn a_newly_open_port_is_at_least_medium() {
        let mut p = open(4444);
        assert_eq!(
            finding(&p).severity,
            Severity::Info,
            "an unknown port alone is INFO"
        );
        p.new = true;
        let f = finding(&p);
        assert_eq!(f.severity, Severity::Medium);
        assert!(f.evidence.contains("newly open"), "{}", f.evidence);
        // A port already worse than MEDIUM keeps its severity.
        let mut db = open(6379);
        let before = finding(&db).severity;
        db.new = true;
        assert_eq!(finding(&db).severity, before.max(Severity::Medium));
    }
}
