//! Target c (fast, no socket): bytes split into PDUs as the SCP's reader does it (dicom-ul's
//! `read_pdu`, strict, with the default `[dicom] max_pdu`), and the command fragments of every
//! P-DATA-TF gathered, bounded as the SCP bounds them, and read by `net::dimse::Command`.

use dicom_ul::pdu::{PDataValueType, Pdu};
use plateqc::ingest::scp::DicomOptions;
use plateqc::net::dimse::Command;

/// `MAX_COMMAND_BYTES` of `ingest::scp`.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

fn main() {
    let max_pdu = DicomOptions::default().max_pdu;
    afl::fuzz!(|data: &[u8]| {
        let mut rest = data;
        let mut command: Vec<u8> = Vec::new();
        while !rest.is_empty() {
            let before = rest.len();
            let pdu = match dicom_ul::pdu::read_pdu(&mut rest, max_pdu, true) {
                Ok(Some(pdu)) => pdu,
                Ok(None) | Err(_) => break,
            };
            assert!(rest.len() < before, "a PDU read from no bytes");
            let Pdu::PData { data: values } = pdu else {
                continue;
            };
            for v in values {
                if v.value_type != PDataValueType::Command {
                    continue;
                }
                if command.len() + v.data.len() > MAX_COMMAND_BYTES {
                    command.clear();
                    continue;
                }
                command.extend_from_slice(&v.data);
                if !v.is_last {
                    continue;
                }
                if let Ok(c) = Command::decode(&command) {
                    // What we answer with must read back as the same command.
                    let again = Command::decode(&c.encode()).expect("our encoding reads back");
                    assert_eq!(again.field, c.field);
                    assert_eq!(again.sop_class, c.sop_class);
                    assert_eq!(again.sop_instance, c.sop_instance);
                }
                command.clear();
            }
        }
    });
}
