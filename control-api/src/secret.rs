//! The server secret, kept in a file outside the database (mode 0600, created with 32
//! random bytes on first start), and the per-scan report keys derived from it: a report
//! key is HMAC-SHA256(secret, scan id), so it is never stored. A copy of the database
//! alone does not open any report; `GET /api/v1/scan/{id}` still shows the `reportUrl`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Bytes of secret.
pub const SECRET_LEN: usize = 32;

/// The server secret.
#[derive(Clone)]
pub struct ServerSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// Why the secret file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("secret file {path}: {message}")]
pub struct SecretError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ServerSecret {
    /// A secret from bytes (tests).
    pub fn from_bytes(b: [u8; SECRET_LEN]) -> Self {
        ServerSecret(b)
    }

    /// Reads the file, or creates it (mode 0600, fresh random bytes) when missing. A file
    /// readable by others is narrowed to 0600.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let err = |message: String| SecretError {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let b: [u8; SECRET_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    err(format!(
                        "has {} bytes, expected {SECRET_LEN}; delete it to make a new one \
                         (existing report links then stop working)",
                        bytes.len()
                    ))
                })?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| err(e.to_string()))?;
                Ok(ServerSecret(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let b: [u8; SECRET_LEN] = rand::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                f.write_all(&b)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok(ServerSecret(b))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// The report key of a scan: the first 24 bytes of HMAC-SHA256(secret, id), as hex.
    pub fn report_key(&self, scan_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"portscope report key\0");
        mac.update(scan_id.as_bytes());
        crate::util::hex(&mac.finalize().into_bytes()[..24])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_secret_and_id_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let a = ServerSecret::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = ServerSecret::load_or_create(&p).unwrap();
        assert_eq!(a.report_key("m-1"), again.report_key("m-1"));
        assert_eq!(a.report_key("m-1").len(), 48);
        assert_ne!(a.report_key("m-1"), a.report_key("m-2"));
        let other = ServerSecret::from_bytes([7; SECRET_LEN]);
        assert_ne!(a.report_key("m-1"), other.report_key("m-1"));
        std::fs::write(&p, b"short").unwrap();
        assert!(ServerSecret::load_or_create(&p).is_err());
    }
}
