//! Resume files: what an interrupted scan saves so `portscope scan --resume FILE` can finish
//! it without probing answered ports again.
//!
//! The file is JSON: the command line as typed (outputs, rate, retries and the rest are read
//! back from it), the resolved targets, exclusions and port list (so `-iL -` need not be read
//! twice), and every answer received. The engine is handed the answers at submit
//! (`Engine::submit_preseeded`): their pairs are skipped, and they are reported first, so the
//! resumed run writes the same output an uninterrupted scan would have written.

use crate::args::ScanArgs;
use crate::inputs;
use portscope_core::results::{PortResult, Reason};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Version of the file's shape; a different one is refused.
const VERSION: u32 = 1;

/// The default resume file, in the working directory (masscan writes `paused.conf`).
pub(crate) const DEFAULT_FILE: &str = "portscope.resume";

/// The scan's inputs after `-iL`, `--exclude-file`, `--top-ports` and `--exclude-ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resolved {
    /// Targets as the engine parses them.
    pub targets: Vec<String>,
    /// Exclusions as the engine parses them.
    pub exclude: Vec<String>,
    /// The port list (`1-1000,8080`).
    pub ports: String,
}

impl Resolved {
    /// Resolves the arguments, reading list files.
    pub(crate) fn from_args(a: &ScanArgs) -> Result<Self, String> {
        let mut targets = a.targets.clone();
        if let Some(f) = &a.input_list {
            targets.extend(inputs::read_list(f)?);
        }
        let mut exclude = a.exclude.clone();
        if let Some(f) = &a.exclude_file {
            exclude.extend(inputs::read_list(f)?);
        }
        let top = a.top_ports.or(a.fast.then_some(inputs::FAST_PORTS));
        let ports = inputs::port_spec(a.ports.as_deref(), top, a.exclude_ports.as_deref())?;
        Ok(Resolved {
            targets,
            exclude,
            ports,
        })
    }
}

/// A saved, interrupted scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResumeFile {
    /// [`VERSION`].
    pub version: u32,
    /// The original command line, program name first.
    pub argv: Vec<String>,
    /// The resolved inputs.
    pub scan: Resolved,
    /// Every answer received (no `no-response`: those pairs are probed again).
    pub results: Vec<PortResult>,
}

impl ResumeFile {
    pub(crate) fn new(argv: Vec<String>, scan: Resolved, results: Vec<PortResult>) -> Self {
        let results = results
            .into_iter()
            .filter(|r| r.reason != Reason::NoResponse)
            .collect();
        ResumeFile {
            version: VERSION,
            argv,
            scan,
            results,
        }
    }

    /// Reads a resume file.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot read resume file {}: {e}", path.display()))?;
        let r: ResumeFile = serde_json::from_reader(BufReader::new(f))
            .map_err(|e| format!("{} is not a portscope resume file: {e}", path.display()))?;
        if r.version != VERSION {
            return Err(format!(
                "{} is a version {} resume file; this portscope reads version {VERSION}",
                path.display(),
                r.version
            ));
        }
        Ok(r)
    }

    /// Writes the file (through a temporary name, so a crash never leaves half a file).
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = PathBuf::from(path);
        tmp.set_extension("partial");
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut w, self)?;
        w.write_all(b"\n")?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portscope_core::results::PortState;

    fn r(port: u16, state: PortState, reason: Reason) -> PortResult {
        PortResult::tcp("198.18.0.2".parse().unwrap(), port, state, reason, Some(64))
    }

    #[test]
    fn round_trip_drops_silent_pairs() {
        let scan = Resolved {
            targets: vec!["198.18.0.2".into()],
            exclude: vec![],
            ports: "1-100".into(),
        };
        let file = ResumeFile::new(
            vec!["portscope".into(), "scan".into()],
            scan.clone(),
            vec![
                r(22, PortState::Open, Reason::SynAck),
                r(23, PortState::Filtered, Reason::NoResponse),
            ],
        );
        let path = std::env::temp_dir().join(format!("ps-resume-{}", std::process::id()));
        file.save(&path).unwrap();
        let back = ResumeFile::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.scan, scan);
        assert_eq!(back.results.len(), 1);
        assert_eq!(back.results[0].port, 22);
        assert!(ResumeFile::load(Path::new("/nonexistent")).is_err());
    }
}
