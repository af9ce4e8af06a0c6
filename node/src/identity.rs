//! A node's persistent libp2p identity: an Ed25519 key in a file readable by its owner only,
//! so a seed node keeps its peer id (and its bootstrap address) across restarts.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

/// Why an identity file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file does not hold a key.
    #[error("not a Fjord node identity file: {0}")]
    Format(String),
}

/// Loads the key in `path`, or creates the file with a new key if it does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the identity file is readable by other users; run chmod 600 on it"
                );
            }
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| IdentityError::Format(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Format(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(&bytes)?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Format(_))
        ));
    }
}
