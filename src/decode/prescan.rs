//! A bounded, iterative walk over the raw bytes of a DICOM file before any parser sees it.
//!
//! dicom-rs builds nested sequences recursively and trusts declared lengths, so a crafted file
//! with thousands of nested sequences overflows the stack and a 100-byte file declaring a
//! 4 GiB element makes it allocate that much. This walk keeps an explicit stack, so depth is
//! bounded by a number rather than by the thread's stack, and checks every declared length
//! against the bytes that are really there.
//!
//! A bound only protects what it sees, so the walk reads the bytes exactly as dicom-rs 0.10's
//! `DataSetReader` does (`dicom-parser/src/dataset/read.rs`, with the element header rules of
//! `dicom-encoding`): an explicit VR it does not know is UN, with two reserved bytes and a
//! 32-bit length; an undefined-length element that is not SQ opens a sequence read in the same
//! encoding (no switch to implicit VR inside UN); any tag of group FFFE has no VR; a sequence
//! delimiter inside an item is an ordinary element; numeric values consume whole numbers of
//! their size while the position advances by the declared length. The walk yields the same
//! tokens as dicom-rs, checked element by element against it (`tests` below, and the fuzz
//! target `prescan_vs_dicom_rs`).
//!
//! The file meta group is read the way pydicom reads it: every group 0002 element up to the
//! first tag of another group, whatever (0002,0000) says (vendors get it wrong). dicom-rs
//! follows the group length and refuses over-long meta values, so it is never shown the
//! file's own meta group: [`dicom_rs_input`] hands it a rebuilt one (Transfer Syntax and the
//! two SOP UIDs, with the exact group length) followed by the data set from the byte where
//! this walk started it. Both therefore read the same data set from the same byte.

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

/// What the walk learnt, used to reject early, to pick the pixel decoder and to hand dicom-rs
/// the data set.
#[derive(Debug, Clone)]
pub struct Prescan {
    /// The Transfer Syntax UID, without padding.
    pub transfer_syntax: String,
    /// Deepest sequence nesting seen.
    pub max_depth: usize,
    /// The file meta group as read (see [`MetaGroup`]).
    pub meta: MetaGroup,
}

/// The file meta group, read the way pydicom reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaGroup {
    /// Transfer Syntax UID, padding trimmed.
    pub transfer_syntax: String,
    /// Media Storage SOP Class and Instance UIDs, when present and made of UID characters.
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
    /// Offset of the data set (the first byte after the last group 0002 element).
    pub data_start: usize,
    /// (0002,0000) disagrees with where the group really ends (pydicom only logs this).
    pub group_length_mismatch: bool,
}

/// How a data set is encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Encoding {
    ImplicitLe,
    ExplicitLe,
    ExplicitBe,
}

impl Encoding {
    /// The encoding of a transfer syntax's data set, after inflation for the deflated ones;
    /// dicom-rs reads every syntax it does not list as explicit VR little endian too.
    pub fn of(ts: &str) -> Encoding {
        match ts {
            "1.2.840.10008.1.2" => Encoding::ImplicitLe,
            "1.2.840.10008.1.2.2" => Encoding::ExplicitBe,
            _ => Encoding::ExplicitLe,
        }
    }
}

const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

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
    let meta = read_meta_group(bytes)?;
    let body = &bytes[meta.data_start..];
    let encoding = Encoding::of(&meta.transfer_syntax);
    let max = if meta.transfer_syntax == DEFLATED {
        let inflated = inflate_bounded(body, max_inflated)?;
        walk(&inflated, encoding, max_depth)?
    } else {
        walk(body, encoding, max_depth)?
    };
    Ok(Prescan {
        transfer_syntax: meta.transfer_syntax.clone(),
        max_depth: max,
        meta,
    })
}

/// What dicom-rs is given to read (from the `DICM` prefix on, no preamble): a rebuilt file meta
/// group, then the data set exactly where the walk found it.
pub fn dicom_rs_input<'a>(bytes: &'a [u8], meta: &MetaGroup) -> impl Read + 'a {
    std::io::Cursor::new(rebuilt_meta(meta)).chain(&bytes[meta.data_start.min(bytes.len())..])
}

/// `DICM` and a file meta group with the exact group length: Transfer Syntax, and the SOP UIDs
/// when the file had usable ones.
fn rebuilt_meta(meta: &MetaGroup) -> Vec<u8> {
    fn ui(out: &mut Vec<u8>, element: u16, uid: &str) {
        let mut v = uid.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(b"UI");
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(&v);
    }
    let mut group = Vec::with_capacity(160);
    if let Some(c) = &meta.sop_class {
        ui(&mut group, 0x0002, c);
    }
    if let Some(i) = &meta.sop_instance {
        ui(&mut group, 0x0003, i);
    }
    ui(&mut group, 0x0010, &meta.transfer_syntax);
    let mut out = Vec::with_capacity(group.len() + 16);
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
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

/// The transfer syntax named in the file meta group (as stored, padding included) and the
/// offset where the data set starts.
pub fn read_meta(bytes: &[u8]) -> Result<(String, usize), PrescanError> {
    let m = read_meta_group(bytes)?;
    Ok((m.transfer_syntax, m.data_start))
}

fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_digit() || c == b'.')
}

/// The file meta group of a Part 10 file (`DICM` at 128): every explicit VR little endian
/// element of group 0002 until the first tag of another group, as pydicom reads it.
pub fn read_meta_group(bytes: &[u8]) -> Result<MetaGroup, PrescanError> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(PrescanError::NotDicom);
    }
    let mut pos = 132;
    let mut meta = MetaGroup::default();
    let mut ts = None;
    let mut declared_end: Option<usize> = None;
    while pos + 8 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        if group != 0x0002 {
            break;
        }
        let elem = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let vr = VR::from_binary([bytes[pos + 4], bytes[pos + 5]]).unwrap_or(VR::UN);
        let (len, header) = if short_length(vr) {
            (
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
                8,
            )
        } else {
            if pos + 12 > bytes.len() {
                return Err(PrescanError::BadMeta("truncated element header".into()));
            }
            let len = le32(&bytes[pos + 8..pos + 12]);
            if len == UNDEFINED {
                return Err(PrescanError::BadMeta(format!(
                    "element (0002,{elem:04X}) has an undefined length"
                )));
            }
            (len as usize, 12)
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
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .trim()
                .to_string()
        };
        match elem {
            0x0000 if len == 4 => declared_end = end.checked_add(le32(value) as usize),
            0x0002 => meta.sop_class = Some(text()).filter(|s| is_uid(s)),
            0x0003 => meta.sop_instance = Some(text()).filter(|s| is_uid(s)),
            0x0010 => ts = Some(text()),
            _ => {}
        }
        pos = end;
    }
    let ts =
        ts.ok_or_else(|| PrescanError::BadMeta("no Transfer Syntax UID (0002,0010)".into()))?;
    if !is_uid(&ts) {
        return Err(PrescanError::BadMeta(format!(
            "Transfer Syntax UID {ts:?} is not a UID"
        )));
    }
    meta.transfer_syntax = ts;
    meta.data_start = pos;
    meta.group_length_mismatch = declared_end.is_some_and(|e| e != pos);
    Ok(meta)
}

/// VRs whose explicit length is 16 bits (PS3.5 7.1.2), as dicom-encoding lists them; every
/// other VR, and every VR it does not know, has two reserved bytes and a 32-bit length.
fn short_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        AE | AS
            | AT
            | CS
            | DA
            | DS
            | DT
            | FL
            | FD
            | IS
            | LO
            | LT
            | PN
            | SH
            | SL
            | SS
            | ST
            | TM
            | UI
            | UL
            | US
    )
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const PIXEL_REPRESENTATION: Tag = Tag(0x0028, 0x0103);
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIM: Tag = Tag(0xFFFE, 0xE00D);
const SEQ_DELIM: Tag = Tag(0xFFFE, 0xE0DD);

/// One token of the data set, as dicom-rs's `DataToken` (values by their length only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    SequenceStart {
        tag: Tag,
        len: u32,
    },
    PixelSequenceStart,
    ItemStart {
        len: u32,
    },
    ItemEnd,
    SequenceEnd,
    ElementHeader {
        tag: Tag,
        vr: VR,
        len: u32,
    },
    /// The value of the element header before it.
    Value,
    /// A pixel data fragment of `len` bytes.
    ItemValue {
        len: u32,
    },
    /// The basic offset table: `entries` 32-bit offsets.
    OffsetTable {
        entries: u32,
    },
}

/// Where and why the token stream broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkError {
    pub offset: usize,
    pub what: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SeqKind {
    Sequence,
    Item,
}

/// An open sequence or item (dicom-rs's `SeqToken`).
#[derive(Clone, Copy, Debug)]
struct Open {
    kind: SeqKind,
    /// `UNDEFINED` when closed by a delimiter.
    len: u32,
    pixel_data: bool,
    base: u64,
}

#[derive(Clone, Copy, Debug)]
struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
}

/// How reading a header failed: the reader treats running out of bytes at some points as the
/// end of the data set.
enum HeaderError {
    /// Fewer than 4 bytes left for the tag of an element header.
    EofAtTag,
    /// Fewer than 8 bytes left for an item header, in an explicit VR syntax.
    EofAtItemHeader,
    Bad(&'static str),
}

/// dicom-rs's `DataSetReader` over `data`, without reading a value into memory: every value is
/// checked against the bytes present and skipped. Yields the same tokens in the same order.
pub struct Walker<'a> {
    data: &'a [u8],
    enc: Encoding,
    /// Bytes consumed from `data` (the stream's cursor).
    cursor: usize,
    /// dicom-rs's `position`: bytes it believes it has read, used for the ends of defined
    /// lengths. It runs ahead of `cursor` after a numeric value of an odd size.
    position: u64,
    in_sequence: bool,
    offset_table_next: bool,
    delimiter_check_pending: bool,
    open: Vec<Open>,
    hard_break: bool,
    last_header: Option<Header>,
    /// From Pixel Representation: dicom-rs then reads every `US or SS` element as SS.
    signed_pixel_data: Option<bool>,
}

impl<'a> Walker<'a> {
    pub fn new(data: &'a [u8], enc: Encoding) -> Walker<'a> {
        Walker {
            data,
            enc,
            cursor: 0,
            position: 0,
            in_sequence: false,
            offset_table_next: false,
            delimiter_check_pending: false,
            open: Vec::new(),
            hard_break: false,
            last_header: None,
            signed_pixel_data: None,
        }
    }

    /// Sequences and items open now.
    pub fn open_containers(&self) -> usize {
        self.open.len()
    }

    /// Whether a container closed by a delimiter is still open.
    pub fn inside_undefined_length(&self) -> bool {
        self.open.iter().any(|o| o.len == UNDEFINED)
    }

    fn fail(&mut self, what: &'static str) -> Option<Result<Token, WalkError>> {
        self.hard_break = true;
        Some(Err(WalkError {
            offset: self.cursor,
            what,
        }))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self
            .cursor
            .checked_add(n)
            .filter(|&e| e <= self.data.len())?;
        let s = &self.data[self.cursor..end];
        self.cursor = end;
        Some(s)
    }

    fn u16_of(&self, b: &[u8]) -> u16 {
        match self.enc {
            Encoding::ExplicitBe => u16::from_be_bytes([b[0], b[1]]),
            _ => u16::from_le_bytes([b[0], b[1]]),
        }
    }

    fn u32_of(&self, b: &[u8]) -> u32 {
        match self.enc {
            Encoding::ExplicitBe => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => le32(b),
        }
    }

    /// An element header as dicom-rs's stateful decoder gives it: the decoder's header, with an
    /// `US or SS` VR made SS once Pixel Representation said signed.
    fn element_header(&mut self) -> Result<Header, HeaderError> {
        let mut h = self.decoder_header()?;
        if self.signed_pixel_data == Some(true)
            && StandardDataDictionary
                .by_tag(h.tag)
                .is_some_and(|e| e.vr() == VirtualVr::Xs)
        {
            h.vr = VR::SS;
        }
        Ok(h)
    }

    /// An element header (dicom-encoding's `decode_header` of the three decoders).
    fn decoder_header(&mut self) -> Result<Header, HeaderError> {
        let t = self.take(4).ok_or(HeaderError::EofAtTag)?;
        let tag = Tag(self.u16_of(&t[0..2]), self.u16_of(&t[2..4]));
        let short = HeaderError::Bad("truncated element header");
        if self.enc == Encoding::ImplicitLe {
            let l = self.take(4).ok_or(short)?;
            let len = le32(l);
            let vr = if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
                VR::OW
            } else {
                StandardDataDictionary
                    .by_tag(tag)
                    .map(|e| e.vr().relaxed())
                    .unwrap_or(VR::UN)
            };
            self.position += 8;
            return Ok(Header { tag, vr, len });
        }
        if tag.0 == 0xFFFE {
            let l = self.take(4).ok_or(short)?;
            self.position += 8;
            return Ok(Header {
                tag,
                vr: VR::UN,
                len: self.u32_of(l),
            });
        }
        let v = self
            .take(2)
            .ok_or(HeaderError::Bad("truncated element header"))?;
        let vr = VR::from_binary([v[0], v[1]]).unwrap_or(VR::UN);
        let len = if short_length(vr) {
            let l = self
                .take(2)
                .ok_or(HeaderError::Bad("truncated element header"))?;
            self.position += 8;
            self.u16_of(l) as u32
        } else {
            self.take(2)
                .ok_or(HeaderError::Bad("truncated element header"))?;
            let l = self
                .take(4)
                .ok_or(HeaderError::Bad("truncated element header"))?;
            self.position += 12;
            self.u32_of(l)
        };
        Ok(Header { tag, vr, len })
    }

    /// An item or delimiter header (dicom-encoding's `decode_item_header`).
    fn item_header(&mut self) -> Result<(Tag, u32), HeaderError> {
        let explicit = self.enc != Encoding::ImplicitLe;
        let h = match self.take(8) {
            Some(h) => h,
            None if explicit => return Err(HeaderError::EofAtItemHeader),
            None => return Err(HeaderError::Bad("truncated item header")),
        };
        let tag = Tag(self.u16_of(&h[0..2]), self.u16_of(&h[2..4]));
        let len = self.u32_of(&h[4..8]);
        match tag {
            ITEM | SEQ_DELIM => {}
            ITEM_DELIM if len == 0 => {}
            ITEM_DELIM => return Err(HeaderError::Bad("item delimiter with a length")),
            _ => return Err(HeaderError::Bad("expected an item or a delimiter")),
        }
        self.position += 8;
        Ok((tag, len))
    }

    fn push(&mut self, kind: SeqKind, len: u32, pixel_data: bool) {
        self.open.push(Open {
            kind,
            len,
            pixel_data,
            base: self.position,
        });
    }

    /// dicom-rs's `update_seq_delimiters`: closes the innermost defined-length container when
    /// its end is reached.
    fn check_delimiters(&mut self) -> Result<Option<Token>, WalkError> {
        if let Some(o) = self.open.last().copied() {
            if o.len != UNDEFINED {
                let end = o.base + o.len as u64;
                if end == self.position {
                    self.open.pop();
                    return Ok(Some(match o.kind {
                        SeqKind::Sequence => {
                            self.in_sequence = false;
                            Token::SequenceEnd
                        }
                        SeqKind::Item => {
                            self.in_sequence = true;
                            Token::ItemEnd
                        }
                    }));
                }
                if end < self.position {
                    return Err(WalkError {
                        offset: self.cursor,
                        what: "element runs past the end of its item or sequence",
                    });
                }
            }
        }
        self.delimiter_check_pending = false;
        Ok(None)
    }

    /// Consumes a value the way `read_value_preserved` does: numeric values read whole
    /// numbers of their size, the position advances by the declared length.
    fn skip_value(&mut self, h: Header) -> Result<(), &'static str> {
        if h.len == 0 {
            return Ok(());
        }
        let len = h.len as usize;
        let consumed = match h.vr {
            VR::SQ => return Err("sequence where a value was expected"),
            VR::AT | VR::FL | VR::OF | VR::SL | VR::UL | VR::OL => len & !3,
            VR::SS | VR::US | VR::OW => len & !1,
            VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => len & !7,
            _ => len,
        };
        // dicom-rs allocates the declared length before reading; a value the file does not
        // hold is refused here, before that allocation.
        if len > self.data.len() - self.cursor {
            return Err("element length exceeds the file");
        }
        if h.tag == PIXEL_REPRESENTATION && matches!(h.vr, VR::US | VR::OW) && consumed >= 2 {
            let v = &self.data[self.cursor..self.cursor + 2];
            self.signed_pixel_data = Some(self.u16_of(v) != 0);
        }
        self.cursor += consumed;
        self.position += h.len as u64;
        Ok(())
    }
}

impl Iterator for Walker<'_> {
    type Item = Result<Token, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.hard_break {
                return None;
            }
            if self.delimiter_check_pending {
                match self.check_delimiters() {
                    Err(e) => {
                        self.hard_break = true;
                        return Some(Err(e));
                    }
                    Ok(Some(t)) => return Some(Ok(t)),
                    Ok(None) => {}
                }
            }
            if self.in_sequence {
                return match self.item_header() {
                    Ok((ITEM, len)) => {
                        self.in_sequence = false;
                        let Some(parent) = self.open.last().copied() else {
                            return self.fail("item outside a sequence");
                        };
                        self.push(SeqKind::Item, len, parent.pixel_data);
                        if len == 0 {
                            self.delimiter_check_pending = true;
                        }
                        Some(Ok(Token::ItemStart { len }))
                    }
                    Ok((ITEM_DELIM, _)) => {
                        self.open.pop();
                        self.in_sequence = true;
                        self.delimiter_check_pending = true;
                        Some(Ok(Token::ItemEnd))
                    }
                    Ok(_) => {
                        self.open.pop();
                        self.in_sequence = false;
                        self.delimiter_check_pending = true;
                        Some(Ok(Token::SequenceEnd))
                    }
                    Err(HeaderError::EofAtItemHeader)
                        if self.open.pop().is_some_and(|o| o.pixel_data) =>
                    {
                        self.hard_break = true;
                        None
                    }
                    Err(HeaderError::Bad(what)) => self.fail(what),
                    Err(_) => self.fail("truncated item header"),
                };
            }
            if let Some(o) = self.open.last().copied() {
                if o.kind == SeqKind::Item && o.pixel_data {
                    if o.len == UNDEFINED {
                        return self.fail("pixel data fragment with undefined length");
                    }
                    if o.len as usize > self.data.len() - self.cursor {
                        return self.fail("pixel data fragment runs past the end of the file");
                    }
                    self.delimiter_check_pending = true;
                    if self.offset_table_next {
                        self.offset_table_next = false;
                        let entries = o.len >> 2;
                        self.cursor += entries as usize * 4;
                        self.position += entries as u64 * 4;
                        return Some(Ok(Token::OffsetTable { entries }));
                    }
                    self.cursor += o.len as usize;
                    self.position += o.len as u64;
                    return Some(Ok(Token::ItemValue { len: o.len }));
                }
            }
            if let Some(h) = self.last_header {
                if h.tag == PIXEL_DATA && h.len == UNDEFINED {
                    self.push(SeqKind::Sequence, UNDEFINED, true);
                    self.last_header = None;
                    return match self.item_header() {
                        Ok((ITEM, len)) => {
                            self.in_sequence = false;
                            self.push(SeqKind::Item, len, true);
                            if len == 0 {
                                self.delimiter_check_pending = true;
                            } else {
                                self.offset_table_next = true;
                            }
                            Some(Ok(Token::ItemStart { len }))
                        }
                        Ok((SEQ_DELIM, _)) => {
                            self.open.pop();
                            self.in_sequence = false;
                            Some(Ok(Token::SequenceEnd))
                        }
                        Ok(_) => self.fail("item delimiter opening pixel data"),
                        Err(HeaderError::Bad(what)) => self.fail(what),
                        Err(_) => self.fail("truncated item header"),
                    };
                }
                self.last_header = None;
                if let Err(what) = self.skip_value(h) {
                    return self.fail(what);
                }
                self.delimiter_check_pending = true;
                return Some(Ok(Token::Value));
            }
            return match self.element_header() {
                Ok(h) if h.vr == VR::SQ => {
                    self.in_sequence = true;
                    self.push(SeqKind::Sequence, h.len, false);
                    if h.len == 0 {
                        self.delimiter_check_pending = true;
                    }
                    Some(Ok(Token::SequenceStart {
                        tag: h.tag,
                        len: h.len,
                    }))
                }
                // dicom-rs logs a stray item delimiter at the top level and goes on.
                Ok(h) if h.tag == ITEM_DELIM && self.open.is_empty() => continue,
                Ok(h) if h.tag == ITEM_DELIM => {
                    self.in_sequence = true;
                    self.open.pop();
                    self.delimiter_check_pending = true;
                    Some(Ok(Token::ItemEnd))
                }
                Ok(h) if h.tag == PIXEL_DATA && h.len == UNDEFINED => {
                    self.last_header = Some(h);
                    Some(Ok(Token::PixelSequenceStart))
                }
                Ok(h) if h.len == UNDEFINED => {
                    self.in_sequence = true;
                    self.push(SeqKind::Sequence, h.len, false);
                    Some(Ok(Token::SequenceStart {
                        tag: h.tag,
                        len: h.len,
                    }))
                }
                Ok(h) => {
                    self.last_header = Some(h);
                    Some(Ok(Token::ElementHeader {
                        tag: h.tag,
                        vr: h.vr,
                        len: h.len,
                    }))
                }
                Err(HeaderError::EofAtTag) => {
                    self.hard_break = true;
                    None
                }
                Err(HeaderError::Bad(what)) => self.fail(what),
                Err(HeaderError::EofAtItemHeader) => self.fail("truncated item header"),
            };
        }
    }
}

/// Walks a data set; returns the deepest sequence nesting. Depth counts open sequences and
/// items as dicom-rs's object builder recurses into them (two per level).
fn walk(data: &[u8], enc: Encoding, max_depth: usize) -> Result<usize, PrescanError> {
    let mut walker = Walker::new(data, enc);
    let mut open = 0usize;
    let mut deepest = 0usize;
    for token in walker.by_ref() {
        match token.map_err(|e| PrescanError::Malformed {
            offset: e.offset,
            what: e.what.to_string(),
        })? {
            Token::SequenceStart { .. } | Token::ItemStart { .. } | Token::PixelSequenceStart => {
                open += 1
            }
            Token::SequenceEnd | Token::ItemEnd => open = open.saturating_sub(1),
            _ => {}
        }
        let depth = open.div_ceil(2);
        deepest = deepest.max(depth);
        if depth > max_depth {
            return Err(PrescanError::TooDeep(max_depth));
        }
    }
    if walker.inside_undefined_length() {
        return Err(PrescanError::Malformed {
            offset: walker.cursor,
            what: "file ends inside an undefined-length sequence".into(),
        });
    }
    Ok(deepest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    use dicom_parser::dataset::{DataSetReader, DataToken};
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

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

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const BIG: &str = "1.2.840.10008.1.2.2";

    fn el(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = tag.0.to_le_bytes().to_vec();
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        if short_length(VR::from_binary(*vr).unwrap_or(VR::UN)) {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    fn raw(tag: (u16, u16), len: u32) -> Vec<u8> {
        let mut v = tag.0.to_le_bytes().to_vec();
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
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

    fn from_dicom_rs(t: DataToken) -> Token {
        match t {
            DataToken::SequenceStart { tag, len } => Token::SequenceStart { tag, len: len.0 },
            DataToken::PixelSequenceStart => Token::PixelSequenceStart,
            DataToken::ItemStart { len } => Token::ItemStart { len: len.0 },
            DataToken::ItemEnd => Token::ItemEnd,
            DataToken::SequenceEnd => Token::SequenceEnd,
            DataToken::ElementHeader(h) => Token::ElementHeader {
                tag: h.tag,
                vr: h.vr,
                len: h.len.0,
            },
            DataToken::PrimitiveValue(_) => Token::Value,
            DataToken::ItemValue(v) => Token::ItemValue {
                len: v.len() as u32,
            },
            DataToken::OffsetTable(v) => Token::OffsetTable {
                entries: v.len() as u32,
            },
        }
    }

    /// The walk and dicom-rs's reader side by side, token by token. dicom-rs is only asked for
    /// a token the walk produced (the walk refuses the lengths dicom-rs would allocate for).
    /// Returns the tokens, and whether the walk stopped on an error.
    fn side_by_side(data: &[u8], ts: &str) -> (Vec<Token>, bool) {
        let entry = TransferSyntaxRegistry.get(ts).expect("known syntax");
        let mut theirs = DataSetReader::new_with_ts(data, entry).unwrap();
        let mut ours = Walker::new(data, Encoding::of(ts));
        let mut seen = Vec::new();
        loop {
            match ours.next() {
                Some(Ok(t)) => {
                    let other = theirs.next();
                    match other {
                        Some(Ok(o)) => assert_eq!(
                            from_dicom_rs(o),
                            t,
                            "token {} differs after {seen:?}",
                            seen.len()
                        ),
                        other => {
                            panic!("walk gave {t:?} where dicom-rs gave {other:?}, after {seen:?}")
                        }
                    }
                    seen.push(t);
                }
                Some(Err(_)) => return (seen, true),
                None => {
                    let other = theirs.next();
                    assert!(
                        !matches!(other, Some(Ok(_))),
                        "walk ended where dicom-rs gave {other:?}, after {seen:?}"
                    );
                    return (seen, false);
                }
            }
            assert!(seen.len() < 1_000_000);
        }
    }

    fn depth_of(tokens: &[Token]) -> usize {
        let mut open = 0usize;
        let mut deepest = 0;
        for t in tokens {
            match t {
                Token::SequenceStart { .. }
                | Token::ItemStart { .. }
                | Token::PixelSequenceStart => open += 1,
                Token::SequenceEnd | Token::ItemEnd => open = open.saturating_sub(1),
                _ => {}
            }
            deepest = deepest.max(open);
        }
        deepest
    }

    /// The bytes the issue measured: an unknown VR read as UN with a 32-bit undefined
    /// length, repeated; the old walk read a 16-bit length of 12 and saw a flat list.
    fn unknown_vr_nesting(levels: usize) -> Vec<u8> {
        let mut body = el((0x0008, 0x0060), b"CS", b"IO");
        for _ in 0..levels {
            body.extend_from_slice(&[
                0x09, 0x00, 0x10, 0x10, b'X', b'X', 0x0C, 0x00, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            body.extend_from_slice(&raw((0xFFFE, 0xE000), UNDEFINED));
        }
        body
    }

    #[test]
    fn prescan_unknown_vr_nesting_is_seen_as_dicom_rs_sees_it() {
        let body = unknown_vr_nesting(5);
        let (tokens, failed) = side_by_side(&body, EXPLICIT);
        assert!(!failed);
        assert_eq!(depth_of(&tokens), 10, "{tokens:?}");
        assert_eq!(
            prescan(&part10(EXPLICIT, &unknown_vr_nesting(200_000)), 16, 1 << 20).unwrap_err(),
            PrescanError::TooDeep(16)
        );
    }

    #[test]
    fn undefined_length_un_holds_an_explicit_sequence_as_dicom_rs_reads_it() {
        // (0009,0010) UN, undefined length, an item, and inside it an explicit SQ (dicom-rs
        // does not switch to implicit VR inside UN).
        let mut body = el((0x0008, 0x0060), b"CS", b"IO");
        body.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'U', b'N', 0, 0]);
        body.extend_from_slice(&UNDEFINED.to_le_bytes());
        body.extend_from_slice(&raw((0xFFFE, 0xE000), UNDEFINED));
        body.extend_from_slice(&nested(3));
        body.extend_from_slice(&raw((0xFFFE, 0xE00D), 0));
        body.extend_from_slice(&raw((0xFFFE, 0xE0DD), 0));
        body.extend_from_slice(&el((0x0010, 0x0020), b"LO", b"ID"));
        let (tokens, failed) = side_by_side(&body, EXPLICIT);
        assert!(!failed);
        assert_eq!(depth_of(&tokens), 8);
        let f = part10(EXPLICIT, &body);
        assert_eq!(prescan(&f, 8, 1 << 20).unwrap().max_depth, 4);
        assert_eq!(
            prescan(&f, 3, 1 << 20).unwrap_err(),
            PrescanError::TooDeep(3)
        );
    }

    #[test]
    fn odd_corners_of_the_reader_match_element_by_element() {
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut failing: Vec<(&str, Vec<u8>)> = Vec::new();
        // An unknown VR with a defined 32-bit length, then a normal element.
        let mut b = el((0x0009, 0x1010), b"XX", b"abcd");
        b.extend(el((0x0010, 0x0020), b"LO", b"ID"));
        cases.push(("unknown VR", b));
        // A sequence delimiter inside an item is an element; a stray item delimiter at the
        // top level is skipped.
        let mut b = raw((0xFFFE, 0xE00D), 0);
        b.extend(el((0x0008, 0x1115), b"SQ", &[]));
        b.truncate(b.len() - 4);
        b.extend_from_slice(&UNDEFINED.to_le_bytes());
        b.extend(raw((0xFFFE, 0xE000), UNDEFINED));
        b.extend(raw((0xFFFE, 0xE0DD), 0));
        b.extend(raw((0xFFFE, 0x1234), 2));
        b.extend_from_slice(b"zz");
        b.extend(raw((0xFFFE, 0xE00D), 0));
        b.extend(raw((0xFFFE, 0xE0DD), 0));
        cases.push(("delimiters", b));
        // AT with two bytes: the position runs ahead of the bytes read, and the two bytes are
        // read again as the next tag (whose length is then refused).
        let mut b = el((0x0020, 0x5000), b"AT", b"ab");
        b.extend(el((0x0010, 0x0020), b"LO", b"ID"));
        failing.push(("AT remainder", b));
        // US with three bytes inside a defined-length item: the item ends by position.
        let inner = el((0x0028, 0x0010), b"US", b"abc");
        let mut b = el((0x0008, 0x1115), b"SQ", &[]);
        b.truncate(b.len() - 4);
        b.extend_from_slice(&(inner.len() as u32 + 8).to_le_bytes());
        b.extend(raw((0xFFFE, 0xE000), inner.len() as u32));
        b.extend(&inner);
        b.extend(el((0x0010, 0x0020), b"LO", b"ID"));
        failing.push(("US remainder", b));
        // Signed pixel data: US or SS elements become SS.
        let mut b = el((0x0028, 0x0103), b"US", &[1, 0]);
        b.extend(el((0x0028, 0x0106), b"US", &[1, 0]));
        cases.push(("signed", b));
        // A defined-length sequence with two defined-length items.
        let item = el((0x0008, 0x1150), b"UI", b"1.2");
        let mut items = raw((0xFFFE, 0xE000), item.len() as u32);
        items.extend(&item);
        items.extend(raw((0xFFFE, 0xE000), item.len() as u32));
        items.extend(&item);
        let mut b = el((0x0008, 0x1115), b"SQ", &items);
        b.extend(el((0x0010, 0x0020), b"LO", b"ID"));
        cases.push(("defined lengths", b));
        // Encapsulated pixel data with an offset table of 6 bytes and two fragments.
        let mut b = el((0x0028, 0x0010), b"US", &[1, 0]);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
        b.extend_from_slice(&UNDEFINED.to_le_bytes());
        b.extend(raw((0xFFFE, 0xE000), 8));
        b.extend_from_slice(&[0; 8]);
        b.extend(raw((0xFFFE, 0xE000), 4));
        b.extend_from_slice(&[1, 2, 3, 4]);
        b.extend(raw((0xFFFE, 0xE000), 2));
        b.extend_from_slice(&[5, 6]);
        b.extend(raw((0xFFFE, 0xE0DD), 0));
        cases.push(("fragments", b));
        // Trailing bytes shorter than a tag end the data set.
        let mut b = el((0x0010, 0x0020), b"LO", b"ID");
        b.extend_from_slice(&[1, 2]);
        cases.push(("trailing", b));
        for (name, body) in &cases {
            let (tokens, failed) = side_by_side(body, EXPLICIT);
            assert!(!failed, "{name}: {tokens:?}");
        }
        for (name, body) in &failing {
            let (tokens, failed) = side_by_side(body, EXPLICIT);
            assert!(failed, "{name}: {tokens:?}");
        }
        // Implicit VR: a private tag of undefined length is a sequence, a known SQ tag with a
        // defined length too; an unknown tag is UN.
        let mut b = raw((0x0009, 0x1010), UNDEFINED);
        b.extend(raw((0xFFFE, 0xE000), UNDEFINED));
        b.extend(raw((0x0009, 0x1011), 2));
        b.extend_from_slice(b"ab");
        b.extend(raw((0xFFFE, 0xE00D), 0));
        b.extend(raw((0xFFFE, 0xE0DD), 0));
        b.extend(raw((0x0008, 0x1115), 0));
        let (tokens, failed) = side_by_side(&b, IMPLICIT);
        assert!(!failed);
        assert_eq!(depth_of(&tokens), 2);
        // Big endian: the same sequence in BE.
        let mut be = Vec::new();
        be.extend_from_slice(&[
            0x00, 0x08, 0x11, 0x15, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        be.extend_from_slice(&[0xFF, 0xFE, 0xE0, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
        be.extend_from_slice(&[0x00, 0x10, 0x00, 0x20, b'L', b'O', 0, 2, b'I', b'D']);
        be.extend_from_slice(&[0xFF, 0xFE, 0xE0, 0x0D, 0, 0, 0, 0]);
        be.extend_from_slice(&[0xFF, 0xFE, 0xE0, 0xDD, 0, 0, 0, 0]);
        let (tokens, failed) = side_by_side(&be, BIG);
        assert!(!failed);
        assert_eq!(depth_of(&tokens), 2);
    }

    #[test]
    fn every_fixture_and_pydicom_file_reads_token_for_token_like_dicom_rs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(root.join("tests/fixtures"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if let Some(py) = std::fs::read_dir(root.join(".venv-test/lib"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        {
            let dir = py.path().join("site-packages/pydicom/data/test_files");
            files.extend(
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        let mut compared = 0;
        for f in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        {
            let bytes = std::fs::read(f).unwrap();
            let Ok(meta) = read_meta_group(&bytes) else {
                continue;
            };
            let ts = meta.transfer_syntax.as_str();
            if TransferSyntaxRegistry.get(ts).is_none() {
                continue;
            }
            let body = &bytes[meta.data_start..];
            let (data, ts) = if ts == DEFLATED {
                (inflate_bounded(body, 1 << 26).unwrap(), EXPLICIT)
            } else {
                (body.to_vec(), ts)
            };
            side_by_side(&data, ts);
            compared += 1;
        }
        assert!(compared >= 18, "compared {compared} files");
    }

    #[test]
    fn meta_group_is_read_like_pydicom_and_rebuilt_for_dicom_rs() {
        // A group length 10 bytes too short and an implementation version name of 18
        // characters (dicom-rs refuses both); the data set starts after the last 0002 element.
        let mut meta = Vec::new();
        meta.extend(el((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0"));
        meta.extend(el((0x0002, 0x0013), b"SH", b"VENDOR_VERSION_1_2"));
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend(el(
            (0x0002, 0x0000),
            b"UL",
            &((meta.len() - 10) as u32).to_le_bytes(),
        ));
        f.extend(&meta);
        let data_start = f.len();
        f.extend(el((0x0008, 0x0060), b"CS", b"IO"));
        let m = read_meta_group(&f).unwrap();
        assert_eq!(m.transfer_syntax, EXPLICIT);
        assert_eq!(m.data_start, data_start);
        assert!(m.group_length_mismatch);
        let mut given = Vec::new();
        dicom_rs_input(&f, &m).read_to_end(&mut given).unwrap();
        let obj = dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Never)
            .from_reader(given.as_slice())
            .unwrap();
        assert_eq!(obj.meta().transfer_syntax(), EXPLICIT);
        assert_eq!(
            obj.element(dicom_dictionary_std::tags::MODALITY)
                .unwrap()
                .to_str()
                .unwrap(),
            "IO"
        );
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
        let f = part10(EXPLICIT, &nested(3));
        let p = prescan(&f, 8, 1 << 20).unwrap();
        assert_eq!(p.max_depth, 3);
        assert_eq!(p.transfer_syntax, EXPLICIT);
    }

    #[test]
    fn nested_sequence_bomb_is_refused_without_recursion() {
        let f = part10(EXPLICIT, &nested(200_000));
        assert_eq!(
            prescan(&f, 32, 1 << 20).unwrap_err(),
            PrescanError::TooDeep(32)
        );
    }

    #[test]
    fn declared_length_beyond_file_is_refused() {
        let mut body = vec![0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0];
        body.extend_from_slice(&0x7FFF_0000u32.to_le_bytes());
        let f = part10(EXPLICIT, &body);
        assert!(matches!(
            prescan(&f, 8, 1 << 20),
            Err(PrescanError::Malformed { .. })
        ));
    }

    #[test]
    fn unterminated_sequence_is_refused() {
        let mut body = nested(2);
        body.truncate(body.len() - 16);
        let f = part10(EXPLICIT, &body);
        assert!(matches!(
            prescan(&f, 8, 1 << 20),
            Err(PrescanError::Malformed { .. })
        ));
    }
}
