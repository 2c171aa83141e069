//! Writes the seeds the fuzz targets start from that `tests/` has no file for:
//! `<out>/net/`: what a storage SCU sends to plateqc's SCP, one association a file (PDUs
//! written by dicom-ul, command sets by `net::dimse`), for `scp_association` and `pdu_stream`;
//! `<out>/decode/`: two tiny plates (8 x 8, 12 bits) in Part 10 files, for `decode_file`,
//! whose other seeds are `tests/fixtures` and `tests/hostile`.
//!
//! Usage: make_seeds <out>

use dicom_ul::pdu::{
    write_pdu, AbortRQSource, AssociationRQ, PDataValue, PDataValueType,
    PresentationContextProposed, RequestorRoles, UserIdentity, UserIdentityType, UserVariableItem,
};
use dicom_ul::Pdu;
use plateqc::ingest::received::file_meta;
use plateqc::net::dimse::Command;
use std::path::Path;

const IO_CLASS: &str = "1.2.840.10008.5.1.4.1.1.1.3";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const VERIFICATION: &str = "1.2.840.10008.1.1";
const INSTANCE: &str = "1.2.826.0.1.3680043.2.1125.13.1";

/// One element of a data set, implicit VR (`vr` None) or explicit VR little endian.
fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: Option<&[u8; 2]>, value: &[u8]) {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == Some(b"UI") { 0 } else { b' ' });
    }
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    match vr {
        None => out.extend_from_slice(&(v.len() as u32).to_le_bytes()),
        Some(vr) if vr == b"OW" || vr == b"OB" => {
            out.extend_from_slice(vr);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        Some(vr) => {
            out.extend_from_slice(vr);
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
    }
    out.extend_from_slice(&v);
}

/// An 8 x 8 intraoral plate, 12 bits stored in 16, a gradient with one bright corner.
fn tiny_plate(explicit: bool) -> Vec<u8> {
    let vr = |v: &'static [u8; 2]| if explicit { Some(v) } else { None };
    let us = |x: u16| x.to_le_bytes();
    let mut d = Vec::new();
    element(&mut d, 0x0008, 0x0016, vr(b"UI"), IO_CLASS.as_bytes());
    element(&mut d, 0x0008, 0x0018, vr(b"UI"), INSTANCE.as_bytes());
    element(&mut d, 0x0008, 0x0060, vr(b"CS"), b"IO");
    element(&mut d, 0x0028, 0x0002, vr(b"US"), &us(1));
    element(&mut d, 0x0028, 0x0004, vr(b"CS"), b"MONOCHROME2");
    element(&mut d, 0x0028, 0x0010, vr(b"US"), &us(8));
    element(&mut d, 0x0028, 0x0011, vr(b"US"), &us(8));
    element(&mut d, 0x0028, 0x0100, vr(b"US"), &us(16));
    element(&mut d, 0x0028, 0x0101, vr(b"US"), &us(12));
    element(&mut d, 0x0028, 0x0102, vr(b"US"), &us(11));
    element(&mut d, 0x0028, 0x0103, vr(b"US"), &us(0));
    let pixels: Vec<u8> = (0..64u16)
        .flat_map(|i| (if i == 63 { 4095 } else { i * 40 }).to_le_bytes())
        .collect();
    element(&mut d, 0x7FE0, 0x0010, vr(b"OW"), &pixels);
    d
}

fn association_rq(contexts: &[(u8, &str, &[&str])], extra: Vec<UserVariableItem>) -> Pdu {
    let mut user_variables = vec![
        UserVariableItem::MaxLength(16_384),
        UserVariableItem::ImplementationClassUID("1.2.826.0.1.3680043.2.1125.13".into()),
        UserVariableItem::ImplementationVersionName("FUZZSEED".into()),
    ];
    user_variables.extend(extra);
    Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "SENSOR1".into(),
        called_ae_title: "PLATEQC".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: contexts
            .iter()
            .map(|(id, abs, ts)| PresentationContextProposed {
                id: *id,
                abstract_syntax: abs.to_string(),
                transfer_syntaxes: ts.iter().map(|t| t.to_string()).collect(),
            })
            .collect(),
        user_variables,
    })
}

fn pdata(pc: u8, value_type: PDataValueType, is_last: bool, data: &[u8]) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type,
            is_last,
            data: data.to_vec(),
        }],
    }
}

fn write(dir: &Path, name: &str, pdus: &[Pdu]) {
    let mut bytes = Vec::new();
    for p in pdus {
        write_pdu(&mut bytes, p).expect("seed PDU encodes");
    }
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: make_seeds <out>");
    let net = Path::new(&out).join("net");
    let decode = Path::new(&out).join("decode");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::create_dir_all(&decode).unwrap();

    for (name, explicit, ts) in [
        ("tiny_implicit_le.dcm", false, IMPLICIT_LE),
        ("tiny_explicit_le.dcm", true, EXPLICIT_LE),
    ] {
        let mut f = file_meta(IO_CLASS, INSTANCE, ts, "SENSOR1");
        f.extend_from_slice(&tiny_plate(explicit));
        std::fs::write(decode.join(name), f).unwrap();
    }

    let storage: &[(u8, &str, &[&str])] = &[
        (1, VERIFICATION, &[IMPLICIT_LE]),
        (3, IO_CLASS, &[EXPLICIT_LE, IMPLICIT_LE]),
    ];
    let rq = association_rq(storage, vec![]);
    let store = Command::store_rq(1, IO_CLASS, INSTANCE).encode();
    let echo = Command {
        field: plateqc::net::dimse::C_ECHO_RQ,
        message_id: 2,
        sop_class: VERIFICATION.into(),
        has_data_set: false,
        ..Default::default()
    }
    .encode();
    let data = tiny_plate(true);
    use PDataValueType::{Command as Cmd, Data};

    write(&net, "associate_release.pdu", &[rq.clone(), Pdu::ReleaseRQ]);
    write(
        &net,
        "echo.pdu",
        &[rq.clone(), pdata(1, Cmd, true, &echo), Pdu::ReleaseRQ],
    );
    write(
        &net,
        "store.pdu",
        &[
            rq.clone(),
            pdata(3, Cmd, true, &store),
            pdata(3, Data, true, &data),
            Pdu::ReleaseRQ,
        ],
    );
    // The command and the data set each in two fragments, the data set across two PDUs.
    let (c1, c2) = store.split_at(20);
    let (d1, d2) = data.split_at(data.len() / 2);
    write(
        &net,
        "store_fragmented.pdu",
        &[
            rq.clone(),
            pdata(3, Cmd, false, c1),
            pdata(3, Cmd, true, c2),
            pdata(3, Data, false, d1),
            pdata(3, Data, true, d2),
            pdata(1, Cmd, true, &echo),
            Pdu::ReleaseRQ,
        ],
    );
    // A C-STORE on the verification context: refused, the data still read and dropped.
    write(
        &net,
        "store_wrong_context.pdu",
        &[
            rq.clone(),
            pdata(1, Cmd, true, &store),
            pdata(1, Data, true, &data),
            Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            },
        ],
    );
    // Every user item dicom-ul reads, and a context with a syntax plateqc does not offer.
    let rich = association_rq(
        &[
            (1, VERIFICATION, &[IMPLICIT_LE]),
            (3, IO_CLASS, &["1.2.840.10008.1.2.4.50", EXPLICIT_LE]),
            (5, "1.2.840.10008.5.1.4.1.1.2", &[IMPLICIT_LE]),
        ],
        vec![
            UserVariableItem::ScuScpRoleSelectionSubItem(
                IO_CLASS.into(),
                RequestorRoles {
                    scu: true,
                    scp: false,
                },
            ),
            UserVariableItem::SopClassExtendedNegotiationSubItem(IO_CLASS.into(), vec![1, 0]),
            UserVariableItem::UserIdentityItem(UserIdentity::new(
                false,
                UserIdentityType::UsernamePassword,
                b"sensor".to_vec(),
                b"secret".to_vec(),
            )),
        ],
    );
    write(
        &net,
        "associate_rich.pdu",
        &[rich, pdata(1, Cmd, true, &echo), Pdu::ReleaseRQ],
    );
}
