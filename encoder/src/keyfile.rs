//! Channel key files on disk: created readable by their owner only, never overwritten.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use fjord_core::wire::{ChannelKey, KeyFileError};

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The file exists: overwriting it would lose a channel for good.
    #[error("{0} already exists; refusing to overwrite a channel key (move it away first)")]
    Exists(String),
    /// The operating system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The random number generator of the OS failed.
    #[error("cannot get randomness from the operating system: {0}")]
    Random(getrandom::Error),
    /// The file is not a key file.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong in it.
        source: KeyFileError,
    },
}

/// Generates a new channel key from the OS's randomness and writes it to `path` with mode 0600.
/// Fails if `path` exists, whatever it holds.
pub fn generate(path: &Path) -> Result<ChannelKey, KeyStoreError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyStoreError::Random)?;
    let key = ChannelKey::from_seed(&seed);
    seed.fill(0);
    let shown = path.display().to_string();
    let io_err = |source| KeyStoreError::Io {
        path: shown.clone(),
        source,
    };
    // create_new is atomic: no window in which another process's file could be clobbered, and
    // the mode applies from creation, so the secret is never readable by others.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyStoreError::Exists(shown.clone()),
            _ => io_err(e),
        })?;
    file.write_all(key.to_key_file().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err)?;
    Ok(key)
}

/// Reads a channel key file. Returns the key and whether the file is readable by others than
/// its owner (the caller should warn: the secret may have leaked).
pub fn load(path: &Path) -> Result<(ChannelKey, bool), KeyStoreError> {
    let shown = path.display().to_string();
    let io_err = |source| KeyStoreError::Io {
        path: shown.clone(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(io_err)?
        .permissions()
        .mode();
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    let key = ChannelKey::from_key_file(&text).map_err(|source| KeyStoreError::Format {
        path: shown.clone(),
        source,
    })?;
    Ok((key, mode & 0o077 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_an_owner_only_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channel.key");
        let key = generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let before = std::fs::read(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyStoreError::Exists(_))));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "file must be untouched"
        );

        let (loaded, exposed) = load(&path).unwrap();
        assert_eq!(loaded.channel_id(), key.channel_id());
        assert!(!exposed);
    }

    #[test]
    fn two_keys_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate(&dir.path().join("a.key")).unwrap();
        let b = generate(&dir.path().join("b.key")).unwrap();
        assert_ne!(a.channel_id(), b.channel_id());
    }

    #[test]
    fn load_flags_exposed_files_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path).unwrap().1);

        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a key\n").unwrap();
        assert!(matches!(load(&junk), Err(KeyStoreError::Format { .. })));
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(KeyStoreError::Io { .. })
        ));
    }
}
