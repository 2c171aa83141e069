//! The DICOM protocol kit the rooms share: DIMSE command sets ([`dimse`]), the storage-SCU side
//! of an association ([`scu`]), UIDs and the storage SOP classes. It knows nothing of plates,
//! inboxes or the database: receiving is ingest's ([`crate::ingest::scp`]), sending on is
//! route's ([`crate::route::forward`]). The PDUs themselves are dicom-ul's.

pub mod dimse;
pub mod scu;

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Storage SOP classes for a modality code, For Presentation first.
pub fn storage_classes(modality: &str) -> &'static [&'static str] {
    match modality {
        "IO" => &[
            "1.2.840.10008.5.1.4.1.1.1.3",
            "1.2.840.10008.5.1.4.1.1.1.3.1",
        ],
        // Panoramic and cephalometric images use the Digital X-Ray classes.
        "DX" | "PX" => &[
            "1.2.840.10008.5.1.4.1.1.1.1",
            "1.2.840.10008.5.1.4.1.1.1.1.1",
        ],
        "CR" => &["1.2.840.10008.5.1.4.1.1.1"],
        _ => &[],
    }
}

/// The storage SOP classes accepted for the modalities the decoder judges: receiving what
/// would only be quarantined helps no one. An empty list (any modality) accepts all four.
pub fn accepted_classes(modalities: &[String]) -> Vec<&'static str> {
    let all = ["IO", "DX", "PX", "CR"];
    let wanted: Vec<&str> = if modalities.is_empty() {
        all.to_vec()
    } else {
        modalities.iter().map(String::as_str).collect()
    };
    let mut out: Vec<&'static str> = Vec::new();
    for m in wanted {
        for c in storage_classes(m) {
            if !out.contains(c) {
                out.push(c);
            }
        }
    }
    out
}

/// Implementation Class UID written into the meta groups of files plateqc writes (received
/// instances and rejection notes).
pub fn implementation_class_uid() -> String {
    derived_uid("plateqc implementation class 1")
}

/// Implementation Version Name beside [`implementation_class_uid`].
pub const IMPLEMENTATION_VERSION: &str = "PLATEQC_0_1";

/// An AE title as PS3.5 allows it: 1 to 16 characters, no backslash, not only spaces.
pub fn valid_ae_title(t: &str) -> bool {
    !t.trim().is_empty() && t.len() <= 16 && !t.contains('\\')
}

/// A new UID under the UUID-derived root 2.25 (PS3.5 B.2): 128 random bits as a decimal.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    if getrandom_fill(&mut b).is_err() {
        // Fall back to time and process: still unique on this node.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ ((std::process::id() as u128) << 96)).to_le_bytes();
    }
    format!("2.25.{}", u128::from_le_bytes(b))
}

/// A UID derived from `seed`: the same note for the same plate after a crash and redo.
pub fn derived_uid(seed: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_le_bytes(b))
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        for u in [&a, &b, &derived_uid("x")] {
            assert!(u.len() <= 64, "{u}");
            assert!(u.chars().all(|c| c.is_ascii_digit() || c == '.'));
            assert!(
                u.split('.')
                    .all(|c| !c.is_empty() && (c == "0" || !c.starts_with('0'))),
                "bad component in {u}"
            );
        }
        assert_eq!(derived_uid("plate"), derived_uid("plate"));
    }

    #[test]
    fn classes_follow_the_decoded_modalities() {
        assert_eq!(accepted_classes(&["IO".into()]).len(), 2);
        assert_eq!(accepted_classes(&[]).len(), 5);
        assert!(accepted_classes(&["PX".into()]).contains(&"1.2.840.10008.5.1.4.1.1.1.1"));
    }
}
