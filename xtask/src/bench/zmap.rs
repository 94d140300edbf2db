//! Which zmap the bench runs: Debian's 2.1 (one port per run) or a build named by `--zmap`
//! (zmap 4 from its source, which probes many ports per run), and what that build can do.

use std::process::Command;

use anyhow::Context;
use serde::Serialize;

/// Debian's package.
pub const SYSTEM: &str = "/usr/sbin/zmap";

/// The zmap binary of this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zmap {
    /// The binary's path.
    pub program: String,
    /// `[major, minor, patch]` as `--version` prints it; `None` when it could not be read.
    pub version: Option<[u32; 3]>,
}

/// Arguments for every zmap call: no config file. The bench puts every option on the command
/// line, and zmap 4 reads `/etc/zmap/zmap.conf` first and stops at Debian zmap 2.1's
/// `blacklist-file` there when both are installed.
pub const NO_CONFIG: [&str; 2] = ["-C", "/dev/null"];

impl Zmap {
    /// Debian's zmap when it does not answer `--version` (not installed: the run reports
    /// it missing); one port per run.
    pub fn debian() -> Zmap {
        Zmap {
            program: SYSTEM.into(),
            version: None,
        }
    }

    /// Asks `program --version` which zmap it is (with [`NO_CONFIG`]).
    pub fn detect(program: &str) -> anyhow::Result<Zmap> {
        let out = Command::new(program)
            .args(NO_CONFIG)
            .arg("--version")
            .output()
            .with_context(|| format!("running {program} --version"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = parse_version(&text)
            .with_context(|| format!("{program} --version printed no zmap version: {text:?}"))?;
        Ok(Zmap {
            program: program.to_owned(),
            version: Some(version),
        })
    }

    /// Whether one run probes a range of ports (`-p 1-65535`): zmap 4.0 and later.
    pub fn multiport(&self) -> bool {
        self.version.is_some_and(|[major, ..]| major >= 4)
    }

    /// The name in the notes: `zmap 4.3.4 (/opt/zmap/src/zmap)`.
    pub fn describe(&self) -> String {
        match self.version {
            None => format!("zmap of unknown version ({})", self.program),
            Some([a, b, c]) => format!("zmap {a}.{b}.{c} ({})", self.program),
        }
    }
}

/// `zmap 2.1.1` or `zmap v4.3.4...` (zmap 4 runs its log line on without a newline) ->
/// `[major, minor, patch]`.
pub fn parse_version(text: &str) -> Option<[u32; 3]> {
    let rest = &text[text.find("zmap ")? + "zmap ".len()..];
    let rest = rest.strip_prefix('v').unwrap_or(rest);
    let mut parts = rest.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let digits: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some([major, minor, digits.parse().ok()?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_debian_and_of_a_source_build() {
        assert_eq!(parse_version("zmap 2.1.1\n"), Some([2, 1, 1]));
        // zmap 4's own output: the version runs into its first log line.
        let v4 = "zmap v4.3.4Dec 03 16:25:40.338 [INFO] zmap: By default, ZMap will output ...";
        assert_eq!(parse_version(v4), Some([4, 3, 4]));
        assert_eq!(parse_version("zmap DEVELOPMENT"), None);
        assert_eq!(parse_version("masscan 1.3.2"), None);
    }

    #[test]
    fn a_described_build_names_its_path() {
        let z = Zmap {
            program: "/opt/zmap/src/zmap".into(),
            version: Some([4, 3, 4]),
        };
        assert_eq!(z.describe(), "zmap 4.3.4 (/opt/zmap/src/zmap)");
        assert!(z.multiport());
        let debian = Zmap {
            version: Some([2, 1, 1]),
            ..z
        };
        assert!(!debian.multiport());
        assert!(!Zmap::debian().multiport(), "unknown: one port per run");
        assert_eq!(
            Zmap::debian().describe(),
            "zmap of unknown version (/usr/sbin/zmap)"
        );
    }
}
