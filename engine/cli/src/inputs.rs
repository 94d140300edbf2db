//! What to scan, resolved from the command line into the engine's request strings: targets
//! from arguments and `-iL` files (or stdin), exclusions from `--exclude-file`, and the port
//! list from `-p`, `--top-ports`/`-F` (nmap's frequency table, `data/top-ports-tcp.txt`) and
//! `--exclude-ports`. Parsing of each target and port stays in `portscope-core`.

use portscope_core::targets::PortSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// nmap's TCP ports, most often open first (see the file's header for source and licence).
const TOP_PORTS: &str = include_str!("../data/top-ports-tcp.txt");

/// The `-F` port count, as nmap's.
pub(crate) const FAST_PORTS: u16 = 100;

/// The first `n` ports of nmap's frequency order; `Err` when the table is shorter.
pub(crate) fn top_ports(n: u16) -> Result<Vec<u16>, String> {
    let all: Vec<u16> = TOP_PORTS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|p| p.parse().expect("the shipped table holds port numbers"))
        .collect();
    if usize::from(n) > all.len() {
        return Err(format!(
            "--top-ports {n} is more than the {} ports nmap's frequency table ranks; use -p - for all 65535",
            all.len()
        ));
    }
    Ok(all[..usize::from(n)].to_vec())
}

/// Targets from a list file: whitespace- or comma-separated entries, `#` comments. `-`
/// reads standard input.
pub(crate) fn read_list(path: &Path) -> Result<Vec<String>, String> {
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read target list {}: {e}", path.display()))?,
        )
    };
    let mut out = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
        let line = line.split('#').next().unwrap_or("");
        out.extend(
            line.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    if out.is_empty() {
        return Err(format!("target list {} holds no targets", path.display()));
    }
    Ok(out)
}

/// The port spec to hand to the engine: from `-p` (default all), or the top `n` ports,
/// minus `exclude`. Returned as a compact range list (`1-21,23-65535`).
pub(crate) fn port_spec(
    ports: Option<&str>,
    top: Option<u16>,
    exclude: Option<&str>,
) -> Result<String, String> {
    let mut set: Vec<u16> = match (ports, top) {
        (_, Some(n)) => top_ports(n)?,
        (Some(p), None) => PortSet::parse(p)
            .map_err(|e| e.to_string())?
            .as_slice()
            .to_vec(),
        (None, None) => (1..=65535).collect(),
    };
    if let Some(x) = exclude {
        let x = PortSet::parse(x).map_err(|e| format!("--exclude-ports: {e}"))?;
        set.retain(|p| x.index_of(*p).is_none());
    }
    set.sort_unstable();
    set.dedup();
    if set.is_empty() {
        return Err("no ports left to scan after --exclude-ports".into());
    }
    Ok(compact(&set))
}

/// `1,2,3,5` -> `1-3,5`; the input is sorted and unique.
fn compact(ports: &[u16]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            ports[i].to_string()
        } else {
            format!("{}-{}", ports[i], ports[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_ports_follow_nmap_order() {
        assert_eq!(
            top_ports(10).unwrap(),
            [80, 23, 443, 21, 22, 25, 3389, 110, 445, 139]
        );
        assert_eq!(top_ports(FAST_PORTS).unwrap().len(), 100);
        let all = top_ports(4257).unwrap();
        let mut uniq = all.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), all.len(), "no port twice");
        assert!(top_ports(5000).unwrap_err().contains("4257"));
    }

    #[test]
    fn port_spec_excludes_and_compacts() {
        assert_eq!(port_spec(None, None, Some("22")).unwrap(), "1-21,23-65535");
        assert_eq!(
            port_spec(Some("20-25,80"), None, Some("23,80")).unwrap(),
            "20-22,24-25"
        );
        assert_eq!(port_spec(None, Some(3), None).unwrap(), "23,80,443");
        assert!(port_spec(Some("80"), None, Some("80")).is_err());
        assert!(port_spec(Some("80"), None, Some("x"))
            .unwrap_err()
            .contains("--exclude-ports"));
    }

    #[test]
    fn list_files_take_lines_commas_and_comments() {
        let dir = std::env::temp_dir().join(format!("ps-il-{}", std::process::id()));
        std::fs::write(
            &dir,
            "198.18.0.2 # lab\n\n198.19.0.0/30, 2001:2::2\n# done\n",
        )
        .unwrap();
        let got = read_list(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(got, ["198.18.0.2", "198.19.0.0/30", "2001:2::2"]);
        assert!(read_list(Path::new("/nonexistent/x")).is_err());
    }
}
