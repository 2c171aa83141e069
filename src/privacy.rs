//! Privacy: patient names are never read; patient IDs are recorded only as a keyed hash whose
//! key stays on this machine.

use hmac::{Hmac, Mac};
use std::path::{Path, PathBuf};

/// The site key could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("site key {path}: {reason}")]
pub struct KeyError {
    pub path: PathBuf,
    pub reason: String,
}

/// Hashes patient IDs with a per-site secret, so records of one patient can be linked inside
/// the site but the ID cannot be recovered or matched against another site's database.
#[derive(Clone)]
pub struct PatientHasher {
    key: Vec<u8>,
}

impl PatientHasher {
    /// Loads the key file, creating it (mode 0600, 32 random bytes) on first use. Two
    /// processes starting at once (a daemon and a `scan`) may both find no key: the file is
    /// created atomically and never replaced, so the loser reads the winner's key and every
    /// hash of the site stays comparable.
    pub fn load_or_create(path: &Path) -> Result<PatientHasher, KeyError> {
        let key_err = |reason: String| KeyError {
            path: path.into(),
            reason,
        };
        if !path.exists() {
            let mut key = [0u8; 32];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .map_err(|e| key_err(format!("cannot read randomness: {e}")))?;
            crate::fsutil::create_private_once(path, hex::encode(key).as_bytes())
                .map_err(|e| key_err(e.to_string()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
        let key = hex::decode(text.trim()).map_err(|_| key_err("not a hex key".into()))?;
        if key.len() < 16 {
            return Err(key_err("key shorter than 16 bytes".into()));
        }
        Ok(PatientHasher { key })
    }

    pub fn hash(&self, patient_id: &str) -> String {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(patient_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_hash_is_keyed_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = PatientHasher::load_or_create(&dir.path().join("k1")).unwrap();
        let a2 = PatientHasher::load_or_create(&dir.path().join("k1")).unwrap();
        let b = PatientHasher::load_or_create(&dir.path().join("k2")).unwrap();
        assert_eq!(a.hash("P1"), a2.hash("P1"));
        assert_ne!(a.hash("P1"), b.hash("P1"));
        assert_ne!(a.hash("P1"), a.hash("P2"));
        assert!(!a.hash("P1").contains("P1"));
    }

    /// Processes starting together all end up with the one key that was written first.
    #[test]
    fn racing_creators_share_one_key() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("site.key");
            let gate = std::sync::Arc::new(std::sync::Barrier::new(8));
            let hashes: Vec<String> = (0..8)
                .map(|_| {
                    let (path, gate) = (path.clone(), gate.clone());
                    std::thread::spawn(move || {
                        gate.wait();
                        PatientHasher::load_or_create(&path).unwrap().hash("P1")
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            let on_disk = PatientHasher::load_or_create(&path).unwrap().hash("P1");
            assert!(
                hashes.iter().all(|h| *h == on_disk),
                "round {round}: every process uses the key on disk"
            );
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }
}
