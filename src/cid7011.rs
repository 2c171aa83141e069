//! DICOM CID 7011 "Rejected for Quality Reasons": the reason codes a model names and the
//! meanings reports and rejection notes print for them.

/// Code meanings of the CID 7011 "Rejected for Quality Reasons" codes, shared by the reports
/// and the rejection notes so both name a reason the same way. Spelled exactly as PS3.16 does
/// (checked against pydicom's copy of the DCM dictionary by `tests/it/net.rs`).
pub fn meaning(code: &str) -> Option<&'static str> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

/// The CID 7011 codes (DCM) and their meanings.
pub const CODES: [(&str, &str); 16] = [
    ("111207", "Image artifact(s)"),
    ("111208", "Grid artifact(s)"),
    ("111209", "Positioning"),
    ("111210", "Motion blur"),
    ("111211", "Under exposed"),
    ("111212", "Over exposed"),
    ("111213", "No image"),
    ("111214", "Detector artifact(s)"),
    ("111215", "Artifact(s) other than grid or detector artifact"),
    ("111216", "Mechanical failure"),
    ("111217", "Electrical failure"),
    ("111218", "Software failure"),
    ("111219", "Inappropriate image processing"),
    ("111220", "Other failure"),
    ("111221", "Unknown failure"),
    ("113026", "Double exposure"),
];
