//! A bounded, iterative walk over the raw bytes of a DICOM file before any parser sees it.
//!
//! dicom-rs parses sequences recursively and trusts declared lengths, so a crafted file with
//! thousands of nested sequences overflows the stack (aborting the whole daemon) and a 100-byte
//! file declaring a 4 GiB element can make it allocate that much. This walk keeps an explicit
//! stack, so depth is bounded by a number rather than by the thread's stack, and checks every
//! declared length against the bytes that are really there.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use std::io::Read;

/// Why a file failed the walk. Each maps onto a decode error kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrescanError {
    #[error("no DICM signature at offset 128: not a DICOM Part 10 file")]
    NotDicom,
    #[error("file meta information is malformed: {0}")]
    BadMeta(String),
    #[error("data set is malformed at byte {offset}: {what}")]
    Malformed { offset: usize, what: String },
    #[error("sequences nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("deflated data set inflates to more than {0} bytes")]
    InflateTooLarge(usize),
}

/// What the walk learnt, used to reject early and to pick the pixel decoder.
#[derive(Debug, Clone)]
pub struct Prescan {
    pub transfer_syntax: String,
    pub max_depth: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIM: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_DELIM: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Walks `bytes` (a whole Part 10 file). `max_depth` bounds sequence nesting; `max_inflated`
/// bounds what a deflated data set may expand to (a deflate bomb is just another bad file).
pub fn prescan(
    bytes: &[u8],
    max_depth: usize,
    max_inflated: usize,
) -> Result<Prescan, PrescanError> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(PrescanError::NotDicom);
    }
    let (ts, meta_end) = read_meta(bytes)?;
    let ts_trim = ts.trim_end_matches(['\0', ' ']).to_string();
    let body = &bytes[meta_end..];
    let max = match ts_trim.as_str() {
        "1.2.840.10008.1.2" => walk(body, Encoding::ImplicitLe, max_depth)?,
        "1.2.840.10008.1.2.2" => walk(body, Encoding::ExplicitBe, max_depth)?,
        "1.2.840.10008.1.2.1.99" => {
            let inflated = inflate_bounded(body, max_inflated)?;
            walk(&inflated, Encoding::ExplicitLe, max_depth)?
        }
        _ => walk(body, Encoding::ExplicitLe, max_depth)?,
    };
    Ok(Prescan {
        transfer_syntax: ts_trim,
        max_depth: max,
    })
}

fn inflate_bounded(body: &[u8], limit: usize) -> Result<Vec<u8>, PrescanError> {
    let mut out = Vec::new();
    let decoder = flate2::read::DeflateDecoder::new(body);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| PrescanError::Malformed {
            offset: 0,
            what: format!("deflate stream: {e}"),
        })?;
    if out.len() > limit {
        return Err(PrescanError::InflateTooLarge(limit));
    }
    Ok(out)
}

/// The transfer syntax named in the file meta group and the offset where the data set starts.
pub fn read_meta(bytes: &[u8]) -> Result<(String, usize), PrescanError> {
    let mut pos = 132;
    let mut ts = None;
    let mut group_end: Option<usize> = None;
    loop {
        if let Some(end) = group_end {
            if pos >= end {
                break;
            }
        }
        if pos + 8 > bytes.len() {
            break;
        }
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        if group != 0x0002 {
            break;
        }
        let elem = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let vr = &bytes[pos + 4..pos + 6];
        let (len, header) = if long_vr(vr) {
            if pos + 12 > bytes.len() {
                return Err(PrescanError::BadMeta("truncated element header".into()));
            }
            (le32(&bytes[pos + 8..pos + 12]) as usize, 12)
        } else {
            (
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
                8,
            )
        };
        let start = pos + header;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                PrescanError::BadMeta(format!(
                    "element (0002,{elem:04X}) runs past the end of the file"
                ))
            })?;
        let value = &bytes[start..end];
        if elem == 0x0000 && len == 4 {
            group_end = Some(end + le32(value) as usize);
        }
        if elem == 0x0010 {
            ts = Some(String::from_utf8_lossy(value).into_owned());
        }
        pos = end;
    }
    let ts =
        ts.ok_or_else(|| PrescanError::BadMeta("no Transfer Syntax UID (0002,0010)".into()))?;
    Ok((ts, pos))
}

fn long_vr(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OW"
            | b"OF"
            | b"SQ"
            | b"UT"
            | b"UN"
            | b"UC"
            | b"UR"
            | b"OD"
            | b"OL"
            | b"OV"
            | b"SV"
            | b"UV"
    )
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// One open container: a sequence or an item, with its end when the length was defined.
struct Frame {
    end: Option<usize>,
    /// Encapsulated pixel data: its items are opaque fragments, not data sets.
    fragments: bool,
    /// Encoding inside this container: an undefined-length UN element holds an implicit VR
    /// little endian sequence (CP-246) even in an explicit VR data set.
    enc: Encoding,
}

fn walk(data: &[u8], base: Encoding, max_depth: usize) -> Result<usize, PrescanError> {
    let dict = StandardDataDictionary;
    let mut stack: Vec<Frame> = Vec::new();
    let mut deepest = 0usize;
    let mut pos = 0usize;
    let bad = |offset: usize, what: &str| PrescanError::Malformed {
        offset,
        what: what.to_string(),
    };
    let u16_at = |p: usize, enc: Encoding| match enc {
        Encoding::ExplicitBe => u16::from_be_bytes([data[p], data[p + 1]]),
        _ => u16::from_le_bytes([data[p], data[p + 1]]),
    };
    let u32_at = |p: usize, enc: Encoding| match enc {
        Encoding::ExplicitBe => {
            u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]])
        }
        _ => le32(&data[p..p + 4]),
    };
    loop {
        // Close every defined-length container that ends here.
        while let Some(top) = stack.last() {
            match top.end {
                Some(end) if pos == end => {
                    stack.pop();
                }
                Some(end) if pos > end => {
                    return Err(bad(
                        pos,
                        "element runs past the end of its item or sequence",
                    ))
                }
                _ => break,
            }
        }
        if pos == data.len() {
            return if stack.iter().any(|f| f.end.is_none()) {
                Err(bad(pos, "file ends inside an undefined-length sequence"))
            } else {
                Ok(deepest)
            };
        }
        if pos + 8 > data.len() {
            return Err(bad(pos, "truncated element header"));
        }
        let enc = stack.last().map_or(base, |f| f.enc);
        let tag = (u16_at(pos, enc), u16_at(pos + 2, enc));
        // Item and delimiter tags are never followed by a VR, whatever the encoding.
        if tag == ITEM || tag == ITEM_DELIM || tag == SEQ_DELIM {
            let len = u32_at(pos + 4, enc);
            pos += 8;
            match tag {
                ITEM => {
                    let in_fragments = stack.last().is_some_and(|f| f.fragments);
                    if len == UNDEFINED {
                        if in_fragments {
                            return Err(bad(pos, "pixel data fragment with undefined length"));
                        }
                        stack.push(Frame {
                            end: None,
                            fragments: false,
                            enc,
                        });
                    } else {
                        let end = checked_end(pos, len, data.len())
                            .ok_or_else(|| bad(pos, "item length exceeds the file"))?;
                        if in_fragments {
                            pos = end;
                            continue;
                        }
                        stack.push(Frame {
                            end: Some(end),
                            fragments: false,
                            enc,
                        });
                    }
                }
                _ => {
                    // Delimiters close the innermost undefined-length container.
                    match stack.last() {
                        Some(f) if f.end.is_none() => {
                            stack.pop();
                        }
                        _ => {
                            return Err(bad(
                                pos,
                                "delimiter without an open undefined-length container",
                            ))
                        }
                    }
                    continue;
                }
            }
        } else {
            let mut inner = enc;
            let (vr_is_sq, len, header) = match enc {
                Encoding::ImplicitLe => {
                    let len = u32_at(pos + 4, enc);
                    let is_sq = len == UNDEFINED
                        || dict
                            .by_tag(Tag(tag.0, tag.1))
                            .is_some_and(|e| e.vr() == VirtualVr::Exact(VR::SQ));
                    (is_sq, len, 8)
                }
                _ => {
                    let vr = &data[pos + 4..pos + 6];
                    if long_vr(vr) {
                        if pos + 12 > data.len() {
                            return Err(bad(pos, "truncated element header"));
                        }
                        let len = u32_at(pos + 8, enc);
                        if vr == b"UN" && len == UNDEFINED {
                            inner = Encoding::ImplicitLe;
                        }
                        (vr == b"SQ", len, 12)
                    } else if vr.iter().all(|c| c.is_ascii_uppercase()) {
                        (false, u16_at(pos + 6, enc) as u32, 8)
                    } else {
                        return Err(bad(pos, "invalid value representation"));
                    }
                }
            };
            pos += header;
            let pixel_data = tag == (0x7FE0, 0x0010);
            if len == UNDEFINED {
                // Undefined length: a sequence, or encapsulated pixel data, or (for UN) a sequence
                // in implicit encoding; all open a container closed by a delimiter.
                stack.push(Frame {
                    end: None,
                    fragments: pixel_data,
                    enc: inner,
                });
            } else {
                let end = checked_end(pos, len, data.len())
                    .ok_or_else(|| bad(pos, "element length exceeds the file"))?;
                if vr_is_sq && !pixel_data {
                    stack.push(Frame {
                        end: Some(end),
                        fragments: false,
                        enc,
                    });
                } else {
                    pos = end;
                }
            }
        }
        // Depth counts sequences, each of which holds items: two frames per level.
        let depth = stack.len().div_ceil(2);
        deepest = deepest.max(depth);
        if depth > max_depth {
            return Err(PrescanError::TooDeep(max_depth));
        }
    }
}

fn checked_end(pos: usize, len: u32, total: usize) -> Option<usize> {
    pos.checked_add(len as usize).filter(|&e| e <= total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part10(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 128];
        v.extend_from_slice(b"DICM");
        let mut ts_bytes = ts.as_bytes().to_vec();
        if ts_bytes.len() % 2 == 1 {
            ts_bytes.push(0);
        }
        v.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        v.extend_from_slice(&(ts_bytes.len() as u16).to_le_bytes());
        v.extend_from_slice(&ts_bytes);
        v.extend_from_slice(body);
        v
    }

    /// An explicit-LE undefined-length sequence nested `depth` times.
    fn nested(depth: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..depth {
            body.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        for _ in 0..depth {
            body.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            body.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
        body
    }

    #[test]
    fn undefined_length_un_holds_an_implicit_sequence() {
        // (0009,0010) UN, undefined length, then an implicit VR item with one element.
        let mut body = vec![
            0x09, 0x00, 0x10, 0x00, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        body.extend_from_slice(&[0x09, 0x00, 0x11, 0x10, 2, 0, 0, 0, b'A', b'B']);
        body.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        body.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let f = part10("1.2.840.10008.1.2.1", &body);
        assert_eq!(prescan(&f, 8, 1 << 20).unwrap().max_depth, 1);
    }

    #[test]
    fn rejects_non_dicom() {
        assert_eq!(
            prescan(b"hello", 8, 1 << 20).unwrap_err(),
            PrescanError::NotDicom
        );
    }

    #[test]
    fn accepts_shallow_nesting_and_reports_depth() {
        let f = part10("1.2.840.10008.1.2.1", &nested(3));
        let p = prescan(&f, 8, 1 << 20).unwrap();
        assert_eq!(p.max_depth, 3);
        assert_eq!(p.transfer_syntax, "1.2.840.10008.1.2.1");
    }

    #[test]
    fn nested_sequence_bomb_is_refused_without_recursion() {
        let f = part10("1.2.840.10008.1.2.1", &nested(200_000));
        assert_eq!(
            prescan(&f, 32, 1 << 20).unwrap_err(),
            PrescanError::TooDeep(32)
        );
    }

    #[test]
    fn declared_length_beyond_file_is_refused() {
        let mut body = vec![0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0];
        body.extend_from_slice(&0x7FFF_0000u32.to_le_bytes());
        let f = part10("1.2.840.10008.1.2.1", &body);
        assert!(matches!(
            prescan(&f, 8, 1 << 20),
            Err(PrescanError::Malformed { .. })
        ));
    }

    #[test]
    fn unterminated_sequence_is_refused() {
        let mut body = nested(2);
        body.truncate(body.len() - 16);
        let f = part10("1.2.840.10008.1.2.1", &body);
        assert!(matches!(
            prescan(&f, 8, 1 << 20),
            Err(PrescanError::Malformed { .. })
        ));
    }
}
