//! The headers of compressed pixel data, read before any codec sees the stream: each codec
//! sizes its buffers from its own header (JPEG's SOF, JPEG-LS's SOF55, JPEG 2000's SIZ, the RLE
//! segment table), so a 15 kB file whose SOF declares 65500 x 65500 made the old decoder
//! allocate 17 GB. Every header is compared with the DICOM header (Rows, Columns, one sample,
//! a precision that fits Bits Allocated), which the policy has already bounded, and all
//! arithmetic on its fields is checked.

/// What the DICOM header says the frame is; the codec's header must agree.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub rows: u32,
    pub columns: u32,
    pub bits_allocated: u16,
}

/// A codec header that disagrees with the DICOM header or is malformed.
pub type HeaderResult<T> = Result<T, String>;

fn be16(b: &[u8], at: usize) -> HeaderResult<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("header truncated at byte {at}"))
}

fn be32(b: &[u8], at: usize) -> HeaderResult<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("header truncated at byte {at}"))
}

/// A frame header's facts, from whichever codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub width: u64,
    pub height: u64,
    pub components: u32,
    pub precision: u32,
}

impl Frame {
    fn check(&self, codec: &str, e: &Expect) -> HeaderResult<()> {
        if self.width != e.columns as u64 || self.height != e.rows as u64 {
            return Err(format!(
                "{codec} header says {}x{} but the DICOM header says {}x{}",
                self.width, self.height, e.columns, e.rows
            ));
        }
        if self.components != 1 {
            return Err(format!(
                "{codec} header has {} components; plates are grayscale",
                self.components
            ));
        }
        if self.precision < 2 || self.precision > e.bits_allocated as u32 {
            return Err(format!(
                "{codec} sample precision {} does not fit {} bits allocated",
                self.precision, e.bits_allocated
            ));
        }
        Ok(())
    }
}

/// Walks the marker segments of a JPEG or JPEG-LS stream up to the first scan, handing each
/// segment (marker, payload) to `seen`.
fn markers(stream: &[u8], mut seen: impl FnMut(u8, &[u8]) -> HeaderResult<()>) -> HeaderResult<()> {
    if stream.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err("no SOI marker at the start of the stream".into());
    }
    let mut pos = 2usize;
    loop {
        if stream.get(pos) != Some(&0xFF) {
            return Err(format!("no marker at byte {pos}"));
        }
        while stream.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *stream.get(pos).ok_or("stream ends before the first scan")?;
        pos += 1;
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue;
        }
        if marker == 0xD9 {
            return Err("EOI before the first scan".into());
        }
        let len = be16(stream, pos)? as usize;
        let payload = stream
            .get(pos + 2..pos + len)
            .filter(|_| len >= 2)
            .ok_or_else(|| format!("marker segment FF{marker:02X} runs past the stream"))?;
        seen(marker, payload)?;
        if marker == 0xDA {
            return Ok(());
        }
        pos += len;
    }
}

/// JPEG (ITU T.81): the SOF before the first scan.
pub fn jpeg_frame(stream: &[u8]) -> HeaderResult<Frame> {
    let mut frame = None;
    markers(stream, |m, p| {
        if matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            frame = Some(Frame {
                precision: *p.first().ok_or("empty SOF")? as u32,
                height: be16(p, 1)? as u64,
                width: be16(p, 3)? as u64,
                components: *p.get(5).ok_or("SOF truncated")? as u32,
            });
        }
        if m == 0xDA && frame.is_none() {
            return Err("scan before any SOF".into());
        }
        Ok(())
    })?;
    frame.ok_or_else(|| "no SOF".into())
}

/// JPEG-LS (ITU T.87): SOF55 before the first scan; an LSE segment that resizes the image
/// (ID 4, for dimensions beyond 16 bits) is refused, as no plate needs it.
pub fn jpegls_frame(stream: &[u8]) -> HeaderResult<Frame> {
    let mut frame = None;
    markers(stream, |m, p| {
        match m {
            0xF7 => {
                frame = Some(Frame {
                    precision: *p.first().ok_or("empty SOF55")? as u32,
                    height: be16(p, 1)? as u64,
                    width: be16(p, 3)? as u64,
                    components: *p.get(5).ok_or("SOF55 truncated")? as u32,
                })
            }
            0xF8 if p.first() == Some(&4) => {
                return Err("LSE segment with oversize image dimensions".into())
            }
            0xDA if frame.is_none() => return Err("scan before SOF55".into()),
            _ => {}
        }
        Ok(())
    })?;
    frame.ok_or_else(|| "no SOF55".into())
}

/// Tiles a JPEG 2000 code stream may have (Isot is 16 bits).
const MAX_TILES: u64 = 65_535;

/// JPEG 2000 (ITU T.800): the SIZ segment right after SOC, in a bare code stream or in the
/// JP2 file format's contiguous code stream box.
pub fn j2k_frame(stream: &[u8]) -> HeaderResult<Frame> {
    let s = &stream[j2k_start(stream)? + 4..];
    let lsiz = be16(s, 0)? as usize;
    let p = s
        .get(2..lsiz)
        .filter(|_| lsiz >= 38)
        .ok_or("SIZ segment truncated")?;
    let (xsiz, ysiz) = (be32(p, 2)? as u64, be32(p, 6)? as u64);
    let (xo, yo) = (be32(p, 10)? as u64, be32(p, 14)? as u64);
    let (xt, yt) = (be32(p, 18)? as u64, be32(p, 22)? as u64);
    let (xto, yto) = (be32(p, 26)? as u64, be32(p, 30)? as u64);
    let csiz = be16(p, 34)? as u32;
    let width = xsiz
        .checked_sub(xo)
        .ok_or("SIZ image offset beyond its width")?;
    let height = ysiz
        .checked_sub(yo)
        .ok_or("SIZ image offset beyond its height")?;
    if xt == 0 || yt == 0 || xto > xo || yto > yo {
        return Err("SIZ tile grid is malformed".into());
    }
    let tiles = (xsiz - xto)
        .div_ceil(xt)
        .checked_mul((ysiz - yto).div_ceil(yt))
        .filter(|&t| t <= MAX_TILES)
        .ok_or("SIZ declares more than 65535 tiles")?;
    let _ = tiles;
    let (ssiz, xr, yr) = (
        *p.get(36).ok_or("SIZ truncated")?,
        *p.get(37).ok_or("SIZ truncated")?,
        *p.get(38).ok_or("SIZ truncated")?,
    );
    if csiz >= 1 && (xr != 1 || yr != 1) {
        return Err("SIZ component is subsampled".into());
    }
    Ok(Frame {
        width,
        height,
        components: csiz,
        precision: (ssiz & 0x7F) as u32 + 1,
    })
}

/// Where the code stream starts: SOC and SIZ, at the start or (behind a JP2 box) soon after.
fn j2k_start(stream: &[u8]) -> HeaderResult<usize> {
    const SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
    if stream.starts_with(&SOC_SIZ) {
        return Ok(0);
    }
    stream
        .windows(4)
        .take(1 << 16)
        .position(|w| w == SOC_SIZ)
        .ok_or_else(|| "no SOC and SIZ at the start of the code stream".into())
}

/// Checks the quantization of a JPEG 2000 code stream (QCD and QCC, in the main header and in
/// every tile-part header) before openjp2 reads it: a reserved quantization style, or no guard
/// bits, with which a zero exponent gives openjp2 a subband of -1 bit-planes and an integer
/// overflow (a panic where overflow is checked, wrapped garbage where not). Found by
/// `make fuzz`, pinned by `tests/hostile/j2k_qcd_no_guard_bits.dcm`. Only quantization is
/// judged here: a stream too broken to walk is left to openjp2, which refuses it.
pub fn j2k_quantization(stream: &[u8]) -> HeaderResult<()> {
    const SOT: u16 = 0xFF90;
    const SOD: u16 = 0xFF93;
    const EOC: u16 = 0xFFD9;
    // One marker segment at `at`: its marker and the end of its segment.
    let segment = |at: usize| -> Option<(u16, usize)> {
        let marker = be16(stream, at).ok()?;
        let len = be16(stream, at + 2).ok()? as usize;
        (len >= 2 && at + 2 + len <= stream.len()).then_some((marker, at + 2 + len))
    };
    let quantization = |marker: u16, at: usize| -> HeaderResult<()> {
        // Sqcd follows QCD's length; Sqcc follows QCC's length and its component (one byte:
        // plates have one component).
        let style_at = match marker {
            0xFF5C => at + 4,
            0xFF5D => at + 5,
            _ => return Ok(()),
        };
        let Some(&sq) = stream.get(style_at) else {
            return Ok(());
        };
        let (style, guard_bits) = (sq & 0x1F, sq >> 5);
        if style > 2 {
            return Err(format!("JPEG 2000 quantization style {style} is reserved"));
        }
        if guard_bits == 0 {
            return Err("JPEG 2000 quantization without guard bits".into());
        }
        Ok(())
    };
    let mut at = j2k_start(stream)? + 2;
    // The main header, up to the first tile-part.
    loop {
        match be16(stream, at) {
            Ok(SOT) => break,
            Ok(EOC) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let Some((marker, end)) = segment(at) else {
            return Ok(());
        };
        quantization(marker, at)?;
        at = end;
    }
    // Each tile-part: its header up to SOD, then the next by its length (Psot).
    while be16(stream, at) == Ok(SOT) {
        let Some((_, mut header)) = segment(at) else {
            return Ok(());
        };
        let psot = be32(stream, at + 6).unwrap_or(0) as usize;
        while be16(stream, header).is_ok_and(|m| m != SOD) {
            let Some((marker, end)) = segment(header) else {
                return Ok(());
            };
            quantization(marker, header)?;
            header = end;
        }
        if psot < 14 {
            // The last tile-part (0: up to EOC) or a length openjp2 refuses itself.
            return Ok(());
        }
        at += psot;
    }
    Ok(())
}

/// Checks `stream`'s codec header for the transfer syntax `ts` against `e`. Uncompressed and
/// RLE syntaxes have no codec header here (RLE's segment table is [`rle_table`]).
pub fn check(ts: &str, stream: &[u8], e: &Expect) -> HeaderResult<()> {
    let frame = match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => ("JPEG", jpeg_frame(stream)?),
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => ("JPEG-LS", jpegls_frame(stream)?),
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => {
            j2k_quantization(stream)?;
            ("JPEG 2000", j2k_frame(stream)?)
        }
        _ => return Ok(()),
    };
    frame.1.check(frame.0, e)
}

/// Checks an RLE fragment's segment table (PS3.5 G.5) before dicom-rs reads it: dicom-rs
/// allocates as many offsets as the table claims and slices the fragment by them unchecked, so
/// a garbled table cost gigabytes and a panic instead of a decode error. One segment per byte
/// of a sample is needed, and each of those must unpack to a whole plane of Rows x Columns
/// bytes: dicom-rs indexes its unpacked segment by pixel unchecked, so a short one panicked
/// (found by `make fuzz`, pinned by `tests/hostile/rle_segment_shorter_than_plane.dcm`).
pub fn rle_table(fragment: &[u8], e: &Expect) -> HeaderResult<()> {
    let bad = |why: String| Err(format!("RLE segment table: {why}"));
    if fragment.len() < 64 {
        return bad(format!("fragment of {} bytes", fragment.len()));
    }
    let word = |i: usize| {
        u32::from_le_bytes(fragment[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize
    };
    let segments = word(0);
    if !(1..=15).contains(&segments) {
        return bad(format!("{segments} segments (1 to 15 allowed)"));
    }
    let needed = (e.bits_allocated as usize).div_ceil(8);
    if segments < needed {
        return bad(format!(
            "{segments} segments for {} bits allocated",
            e.bits_allocated
        ));
    }
    let mut start = 63;
    for i in 1..=segments {
        let offset = word(i);
        if offset <= start || offset >= fragment.len() {
            return bad(format!(
                "segment {i} at offset {offset} in a {}-byte fragment",
                fragment.len()
            ));
        }
        start = offset;
    }
    // dicom-rs reads segment i from its offset to the next one, the last to the fragment's end.
    let plane = e.rows as usize * e.columns as usize;
    for i in 1..=needed {
        let end = if i < segments {
            word(i + 1)
        } else {
            fragment.len()
        };
        match packbits_len(&fragment[word(i)..end]) {
            Some(n) if n >= plane => {}
            Some(n) => return bad(format!("segment {i} unpacks to {n} bytes, {plane} needed")),
            None => return bad(format!("segment {i} ends inside a run")),
        }
    }
    Ok(())
}

/// How many bytes a PackBits segment unpacks to, read as dicom-rs reads it: a header byte `h`
/// is followed by `h + 1` literal bytes (fewer when the segment ends first) or, for -127..=-1,
/// by one byte repeated `1 - h` times; -128 is nothing. `None` where dicom-rs fails to read a
/// header or a repeated byte. Counts only, allocates nothing.
fn packbits_len(segment: &[u8]) -> Option<usize> {
    let (mut pos, mut out) = (0usize, 0usize);
    while pos < segment.len() {
        let h = segment[pos] as i8;
        pos += 1;
        match h {
            -128 => {}
            -127..=-1 => {
                segment.get(pos)?;
                pos += 1;
                out += (1 - h as isize) as usize;
            }
            _ => {
                let n = h as usize + 1;
                out += n.min(segment.len() - pos);
                pos += n;
            }
        }
    }
    Some(out)
}

/// JPEG-LS streams whose encoder left zero bytes between the last entropy-coded byte and EOI
/// (the WG04 sample `MR1_JLSL` ends `2B 00 FF D9`): CharLS 2.2 read them, CharLS 2.3 and later
/// stop with "the leading start byte (0xFF) for a JPEG marker was not found". The stream
/// without that padding, when there is any (bytes after EOI, DICOM's even-length pad, stay).
pub fn without_padding_before_eoi(stream: &[u8]) -> Option<Vec<u8>> {
    let eoi = stream.windows(2).rposition(|w| w == [0xFF, 0xD9])?;
    let zeros = stream[..eoi].iter().rev().take_while(|&&b| b == 0).count();
    if zeros == 0 || eoi == zeros || stream[eoi - zeros - 1] == 0xFF {
        // Nothing to strip, or the zero completes a bit-stuffed byte after 0xFF.
        return None;
    }
    let mut out = Vec::with_capacity(stream.len() - zeros);
    out.extend_from_slice(&stream[..eoi - zeros]);
    out.extend_from_slice(&stream[eoi..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(rows: u32, columns: u32, bits: u16) -> Expect {
        Expect {
            rows,
            columns,
            bits_allocated: bits,
        }
    }

    fn sof(marker: u8, p: u8, y: u16, x: u16, nf: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, marker, 0, 11, p];
        v.extend_from_slice(&y.to_be_bytes());
        v.extend_from_slice(&x.to_be_bytes());
        v.extend_from_slice(&[nf, 1, 0x11, 0]);
        v.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3F, 0]);
        v
    }

    #[test]
    fn jpeg_sof_must_match_the_dicom_header() {
        let e = expect(169, 269, 8);
        assert!(check("1.2.840.10008.1.2.4.50", &sof(0xC0, 8, 169, 269, 1), &e).is_ok());
        let huge = check("1.2.840.10008.1.2.4.50", &sof(0xC0, 8, 65500, 65500, 1), &e);
        assert!(huge.unwrap_err().contains("65500x65500"));
        assert!(check("1.2.840.10008.1.2.4.50", &sof(0xC0, 8, 169, 269, 3), &e).is_err());
        assert!(check("1.2.840.10008.1.2.4.70", &sof(0xC3, 16, 169, 269, 1), &e).is_err());
        assert!(check(
            "1.2.840.10008.1.2.4.50",
            &[0xFF, 0xD8, 0xFF, 0xDA, 0, 2],
            &e
        )
        .is_err());
        assert!(check(
            "1.2.840.10008.1.2.4.50",
            &[0xFF, 0xD8, 0xFF, 0xC0, 0xFF],
            &e
        )
        .is_err());
    }

    #[test]
    fn jpegls_sof55_must_match_and_oversize_lse_is_refused() {
        let e = expect(210, 350, 16);
        assert!(check("1.2.840.10008.1.2.4.80", &sof(0xF7, 16, 210, 350, 1), &e).is_ok());
        assert!(check(
            "1.2.840.10008.1.2.4.80",
            &sof(0xF7, 16, 65500, 65500, 1),
            &e
        )
        .is_err());
        let mut lse = vec![0xFF, 0xD8, 0xFF, 0xF8, 0, 7, 4, 2, 0, 0, 0];
        lse.extend_from_slice(&sof(0xF7, 16, 210, 350, 1)[2..]);
        assert!(check("1.2.840.10008.1.2.4.80", &lse, &e)
            .unwrap_err()
            .contains("oversize"));
    }

    fn siz(x: u32, y: u32, tile: u32, c: u16, sub: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0x4F, 0xFF, 0x51];
        v.extend_from_slice(&(38 + 3 * c).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        for w in [x, y, 0, 0, tile, tile, 0, 0] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(&c.to_be_bytes());
        for _ in 0..c {
            v.extend_from_slice(&[7, sub, sub]);
        }
        v
    }

    #[test]
    fn j2k_siz_must_match_and_tiles_are_bounded() {
        let e = expect(239, 399, 8);
        let ts = "1.2.840.10008.1.2.4.90";
        assert!(check(ts, &siz(399, 239, 399, 1, 1), &e).is_ok());
        assert!(check(ts, &siz(65500, 65500, 65500, 1, 1), &e).is_err());
        assert!(check(ts, &siz(399, 239, 1, 1, 1), &e)
            .unwrap_err()
            .contains("tiles"));
        assert!(check(ts, &siz(399, 239, 399, 3, 1), &e).is_err());
        assert!(check(ts, &siz(399, 239, 399, 1, 2), &e).is_err());
        assert!(check(ts, &siz(399, 239, 0, 1, 1), &e).is_err());
        assert!(check(ts, &siz(399, 239, 399, 1, 1)[..30], &e).is_err());
    }

    #[test]
    fn j2k_quantization_needs_guard_bits_and_a_defined_style() {
        let e = expect(239, 399, 8);
        let ts = "1.2.840.10008.1.2.4.90";
        // SIZ, QCD (reversible, `sq`, three exponents), then one tile-part whose header holds
        // a QCC for component 0 with `sqcc`, and EOC.
        let stream = |sq: u8, sqcc: u8| {
            let mut v = siz(399, 239, 399, 1, 1);
            v.extend_from_slice(&[0xFF, 0x5C, 0, 6, sq, 0x48, 0x50, 0x50]);
            v.extend_from_slice(&[0xFF, 0x90, 0, 10, 0, 0, 0, 0, 0, 21, 0, 1]);
            v.extend_from_slice(&[0xFF, 0x5D, 0, 5, 0, sqcc, 0x48]);
            v.extend_from_slice(&[0xFF, 0x93, 0xFF, 0xD9]);
            v
        };
        assert!(check(ts, &stream(0x40, 0x20), &e).is_ok());
        assert!(check(ts, &stream(0x00, 0x20), &e)
            .unwrap_err()
            .contains("without guard bits"));
        assert!(check(ts, &stream(0x53, 0x20), &e)
            .unwrap_err()
            .contains("style 19 is reserved"));
        assert!(check(ts, &stream(0x40, 0x02), &e)
            .unwrap_err()
            .contains("without guard bits"));
        // A stream too broken to walk is left to openjp2.
        assert!(j2k_quantization(&stream(0x40, 0x20)[..60]).is_ok());
    }

    #[test]
    fn rle_segment_tables_are_checked_before_decoding() {
        let table = |words: &[u32], len: usize| {
            let mut f = vec![0u8; len];
            for (i, w) in words.iter().enumerate() {
                f[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
            }
            f
        };
        let e16 = expect(10, 10, 16);
        // Each segment a run of 100 bytes (header -99, then the byte), zeros after it.
        let mut good = table(&[2, 64, 100], 200);
        good[64] = 0x9D;
        good[100] = 0x9D;
        assert!(rle_table(&good, &e16).is_ok());
        assert!(rle_table(&table(&[1, 64], 200), &e16).is_err());
        // A segment that unpacks to less than a plane (its zeros are 1-byte literals: 50 bytes).
        let mut short = good.clone();
        short[100] = 0;
        assert!(rle_table(&short, &e16)
            .unwrap_err()
            .contains("segment 2 unpacks to"));
        // A repeat whose byte is missing at the fragment's end.
        let mut cut = good.clone();
        cut[196] = 1; // a literal of two bytes, so that the header at 199 is read as one
        cut[199] = 0x9D;
        assert!(rle_table(&cut, &e16)
            .unwrap_err()
            .contains("segment 2 ends inside a run"));
        for (words, len) in [
            (&[0u32][..], 200),
            (&[16, 64][..], 200),
            (&[0x26c2_6100, 64][..], 200),
            (&[2, 64, 64][..], 200),
            (&[1, 40][..], 200),
            (&[1, 200][..], 200),
            (&[1, 64][..], 63),
        ] {
            assert!(
                rle_table(&table(words, len.max(64))[..len], &expect(10, 10, 8)).is_err(),
                "{words:?} in {len} bytes"
            );
        }
    }

    #[test]
    fn packbits_lengths_are_counted_as_dicom_rs_reads_them() {
        assert_eq!(packbits_len(&[]), Some(0));
        assert_eq!(packbits_len(&[2, 7, 8, 9]), Some(3));
        assert_eq!(packbits_len(&[0xFE, 7]), Some(3));
        assert_eq!(packbits_len(&[0x80, 0, 7]), Some(1));
        // A literal run cut short counts the bytes there are; a repeat without its byte fails.
        assert_eq!(packbits_len(&[5, 7, 8]), Some(2));
        assert_eq!(packbits_len(&[0, 7, 0xFE]), None);
    }

    #[test]
    fn zero_padding_before_eoi_is_found_and_bit_stuffing_left_alone() {
        assert_eq!(
            without_padding_before_eoi(&[1, 0x2B, 0, 0xFF, 0xD9, 0]),
            Some(vec![1, 0x2B, 0xFF, 0xD9, 0])
        );
        assert_eq!(without_padding_before_eoi(&[1, 0x2B, 0xFF, 0xD9]), None);
        assert_eq!(without_padding_before_eoi(&[1, 0xFF, 0, 0xFF, 0xD9]), None);
    }
}
