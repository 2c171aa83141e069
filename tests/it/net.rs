//! The DICOM network side against independent peers: DCMTK's echoscu/storescu/storescp,
//! pynetdicom, and dicom3tools' dciodvfy as the validator of every object plateqc writes.

use crate::support::{python, root};
use plateqc::net::notes::{self, Rejection};
use std::path::{Path, PathBuf};
use std::process::Command;

/// dciodvfy's complaints about a file: its error and warning lines (plateqc's own objects
/// are held to no warnings at all).
fn dciodvfy_errors(path: &Path) -> (Vec<String>, String) {
    let out = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools) is installed by `make setup`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = text
        .lines()
        .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
        .map(str::to_string)
        .collect();
    (errors, text)
}

fn dcmdump(path: &Path) -> String {
    let out = Command::new("dcmdump")
        .arg(path)
        .output()
        .expect("dcmdump (dcmtk)");
    assert!(out.status.success(), "dcmdump {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rejection_note_and_capture_are_valid_dicom_referencing_the_plate() {
    let tmp = tempfile::tempdir().unwrap();
    let plate = root().join("tests/fixtures/01_explicit_le_u16_rescale.dcm");
    let montage = tmp.path().join("montage.png");
    image::RgbImage::from_fn(97, 40, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(&montage)
        .unwrap();
    let r = Rejection {
        plate_path: plate.clone(),
        reason_code: Some("111214".into()),
        artifact_types: vec!["scratch".into(), "dust".into()],
        score: Some(0.91),
        threshold: Some(0.28),
        model: "plateqc-psp-cnn 1".into(),
        montage_path: Some(montage),
    };
    let written = notes::write_notes(&r, tmp.path(), true).unwrap();
    assert_eq!(written.len(), 2);
    let plate_dump = dcmdump(&plate);
    let plate_uid = plate_dump
        .lines()
        .find(|l| l.starts_with("(0008,0018)"))
        .and_then(|l| l.split('[').nth(1))
        .and_then(|s| s.split(']').next())
        .unwrap()
        .to_string();
    for n in &written {
        let (errors, text) = dciodvfy_errors(&n.path);
        assert!(errors.is_empty(), "{} ({}):\n{text}", n.kind, n.path.display());
        let dump = dcmdump(&n.path);
        assert!(dump.contains(&plate_uid), "{} does not reference the plate", n.kind);
    }
    let kos = dcmdump(&written[0].path);
    for needle in ["113001", "Rejected for Quality Reasons", "111214", "Detector artifact(s)", "(0008,0060) CS [KO]"] {
        assert!(kos.contains(needle), "KOS lacks {needle}:\n{kos}");
    }
    // Redoing the note after a crash gives the same object, not a second one.
    let again = notes::write_notes(&r, tmp.path(), true).unwrap();
    assert_eq!(again, written);
}
