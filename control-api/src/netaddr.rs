//! Who is asking: the pure address logic (client address behind `X-Forwarded-For`,
//! normalisation, CIDR sets, the prefix-to-ASN table) is [`portscope_input::netaddr`],
//! re-exported here; this module adds the two file loaders.

pub use portscope_input::netaddr::*;
use std::path::Path;

/// A file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A malformed line.
    #[error(transparent)]
    Line(#[from] ListError),
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads a file of addresses / CIDRs, one per line; `#` starts a comment.
pub fn load_cidrs(path: &Path) -> Result<CidrSet, LoadError> {
    Ok(CidrSet::parse_list(
        &read(path)?,
        &path.display().to_string(),
    )?)
}

/// Loads an ASN table file: lines `CIDR ASN` (`198.18.0.0/15 64512` or `... AS64512`).
pub fn load_asn_table(path: &Path) -> Result<AsnTable, LoadError> {
    Ok(AsnTable::parse(&read(path)?, &path.display().to_string())?)
}
