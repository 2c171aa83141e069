//! DIMSE command sets: the small, fixed group-0000 messages that frame every C-STORE and
//! C-ECHO. They are always Implicit VR Little Endian and only a dozen elements long, so they
//! are written and read here directly rather than through a general data set parser, which
//! keeps a hostile peer's command bounded to the bytes it sent.

/// Command Field values (PS3.7 E.1).
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

/// Status codes used by this implementation (PS3.4 B.2.3, PS3.7 C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;

    /// Success and the C-STORE warnings (coercion, elements discarded, data set mismatch
    /// accepted) all mean the peer kept the instance.
    pub fn is_stored(code: u16) -> bool {
        matches!(code, 0x0000 | 0xB000 | 0xB006 | 0xB007)
    }
}

const GROUP_LENGTH: u16 = 0x0000;
const AFFECTED_SOP_CLASS: u16 = 0x0002;
const COMMAND_FIELD: u16 = 0x0100;
const MESSAGE_ID: u16 = 0x0110;
const RESPONDED_TO: u16 = 0x0120;
const PRIORITY: u16 = 0x0700;
const DATA_SET_TYPE: u16 = 0x0800;
const STATUS: u16 = 0x0900;
const ERROR_COMMENT: u16 = 0x0902;
const AFFECTED_SOP_INSTANCE: u16 = 0x1000;

/// The fields of a command this implementation reads or writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub responded_to: u16,
    pub sop_class: String,
    pub sop_instance: String,
    pub has_data_set: bool,
    pub status: u16,
    pub error_comment: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command set has no Command Field")]
    NoCommandField,
}

fn push_element(out: &mut Vec<u8>, element: u16, value: &[u8], pad: u8) {
    let padded = value.len() + value.len() % 2;
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(padded as u32).to_le_bytes());
    out.extend_from_slice(value);
    if value.len() % 2 == 1 {
        out.push(pad);
    }
}

impl Command {
    pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Command {
        Command {
            field: C_STORE_RQ,
            message_id,
            sop_class: sop_class.into(),
            sop_instance: sop_instance.into(),
            has_data_set: true,
            ..Default::default()
        }
    }

    /// A C-ECHO request (Verification SOP Class): "are you there and will you talk to me".
    pub fn echo_rq(message_id: u16) -> Command {
        Command {
            field: C_ECHO_RQ,
            message_id,
            sop_class: super::VERIFICATION.into(),
            ..Default::default()
        }
    }

    /// The response to `rq` (a C-STORE or C-ECHO request) with `status`.
    pub fn response_to(rq: &Command, status: u16, comment: &str) -> Command {
        Command {
            field: rq.field | 0x8000,
            responded_to: rq.message_id,
            sop_class: rq.sop_class.clone(),
            sop_instance: rq.sop_instance.clone(),
            has_data_set: false,
            status,
            error_comment: comment.chars().take(64).collect(),
            ..Default::default()
        }
    }

    fn is_response(&self) -> bool {
        self.field & 0x8000 != 0
    }

    /// Implicit VR Little Endian bytes with the group length first, elements in tag order.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(160);
        if !self.sop_class.is_empty() {
            push_element(&mut body, AFFECTED_SOP_CLASS, self.sop_class.as_bytes(), 0);
        }
        push_element(&mut body, COMMAND_FIELD, &self.field.to_le_bytes(), 0);
        if self.is_response() {
            push_element(&mut body, RESPONDED_TO, &self.responded_to.to_le_bytes(), 0);
        } else {
            push_element(&mut body, MESSAGE_ID, &self.message_id.to_le_bytes(), 0);
            if self.field == C_STORE_RQ {
                push_element(&mut body, PRIORITY, &0u16.to_le_bytes(), 0);
            }
        }
        let set_type = if self.has_data_set {
            0x0000
        } else {
            NO_DATA_SET
        };
        push_element(&mut body, DATA_SET_TYPE, &set_type.to_le_bytes(), 0);
        if self.is_response() {
            push_element(&mut body, STATUS, &self.status.to_le_bytes(), 0);
            if !self.error_comment.is_empty() {
                push_element(
                    &mut body,
                    ERROR_COMMENT,
                    self.error_comment.as_bytes(),
                    b' ',
                );
            }
        }
        if !self.sop_instance.is_empty() {
            push_element(
                &mut body,
                AFFECTED_SOP_INSTANCE,
                self.sop_instance.as_bytes(),
                0,
            );
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        push_element(
            &mut out,
            GROUP_LENGTH,
            &(body.len() as u32).to_le_bytes(),
            0,
        );
        out.extend_from_slice(&body);
        out
    }

    /// The whole command as one P-DATA-TF PDU on presentation context `pc` (a command is a
    /// few hundred bytes, far below any negotiated PDU size).
    pub fn pdu(&self, pc: u8) -> dicom_ul::Pdu {
        dicom_ul::Pdu::PData {
            data: vec![dicom_ul::pdu::PDataValue {
                presentation_context_id: pc,
                value_type: dicom_ul::pdu::PDataValueType::Command,
                is_last: true,
                data: self.encode(),
            }],
        }
    }

    /// Reads a command set; unknown elements are skipped, every length is checked.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut c = Command::default();
        let mut field = None;
        let mut pos = 0usize;
        let u16_of = |v: &[u8]| v.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let text = |v: &[u8]| {
            String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        while pos < bytes.len() {
            let head = bytes
                .get(pos..pos + 8)
                .ok_or(CommandError::Truncated(pos))?;
            let element = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let start = pos + 8;
            let value = bytes
                .get(start..start.checked_add(len).ok_or(CommandError::Truncated(pos))?)
                .ok_or(CommandError::Truncated(pos))?;
            match element {
                AFFECTED_SOP_CLASS => c.sop_class = text(value),
                AFFECTED_SOP_INSTANCE => c.sop_instance = text(value),
                COMMAND_FIELD => field = u16_of(value),
                MESSAGE_ID => c.message_id = u16_of(value).unwrap_or(0),
                RESPONDED_TO => c.responded_to = u16_of(value).unwrap_or(0),
                DATA_SET_TYPE => c.has_data_set = u16_of(value) != Some(NO_DATA_SET),
                STATUS => c.status = u16_of(value).unwrap_or(0xFFFF),
                ERROR_COMMENT => c.error_comment = text(value),
                _ => {}
            }
            pos = start + len;
        }
        c.field = field.ok_or(CommandError::NoCommandField)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips_with_even_lengths_and_group_length() {
        let rq = Command::store_rq(7, "1.2.840.10008.5.1.4.1.1.1.3", "1.2.3.45");
        let bytes = rq.encode();
        assert_eq!(bytes.len() % 2, 0);
        let group_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(group_len, bytes.len() - 12);
        let back = Command::decode(&bytes).unwrap();
        assert_eq!(back, rq);
    }

    #[test]
    fn response_carries_status_and_the_request_id() {
        let rq = Command::store_rq(9, "1.2", "1.2.3");
        let rsp = Command::response_to(&rq, status::OUT_OF_RESOURCES, "disk full");
        let back = Command::decode(&rsp.encode()).unwrap();
        assert_eq!(back.field, C_STORE_RSP);
        assert_eq!(back.responded_to, 9);
        assert_eq!(back.status, 0xA700);
        assert_eq!(back.error_comment, "disk full");
        assert!(!back.has_data_set);
    }

    #[test]
    fn truncated_or_lying_lengths_are_errors_not_panics() {
        let bytes = Command::store_rq(1, "1.2", "1.2.3").encode();
        for cut in [3, 9, 20, bytes.len() - 1] {
            assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = bytes.clone();
        lying[12 + 4..12 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Command::decode(&lying).is_err());
    }
}
