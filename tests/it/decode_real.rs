//! The decoder against real, non-dental DICOM files from the pydicom wheel, checked against
//! pydicom itself as the independent reader, and against malformed inputs.

use crate::support::*;
use plateqc::decode::{decode, DecodeError, DecodePolicy};

fn any_modality() -> DecodePolicy {
    DecodePolicy {
        modalities: Vec::new(),
        ..DecodePolicy::default()
    }
}

/// Each of these decodes to exactly pydicom's pixels (lossless syntaxes).
const LOSSLESS: [&str; 9] = [
    "CT_small.dcm",                  // explicit VR little endian, signed 16-bit
    "MR_small.dcm",                  // explicit VR little endian
    "MR_small_implicit.dcm",         // implicit VR little endian
    "MR_small_bigendian.dcm",        // explicit VR big endian
    "MR_small_RLE.dcm",              // RLE lossless
    "MR_small_jp2klossless.dcm",     // JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm", // JPEG-LS lossless
    "MR_small_padded.dcm",
    "image_dfl.dcm", // deflated explicit VR little endian
];

#[test]
fn lossless_syntaxes_match_pydicom_exactly() {
    let dir = pydicom_test_files();
    let files: Vec<_> = LOSSLESS.iter().map(|f| dir.join(f)).collect();
    let reference = pydicom_describe(&files);
    let policy = any_modality();
    for (file, want) in files.iter().zip(&reference) {
        assert!(
            want.get("error").is_none(),
            "pydicom could not read {}: {want}",
            file.display()
        );
        let plate =
            decode(&read(file), &policy).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            plate.header.rows as i64,
            want["rows"].as_i64().unwrap(),
            "{}",
            file.display()
        );
        assert_eq!(
            plate.header.columns as i64,
            want["columns"].as_i64().unwrap()
        );
        let s = stats(&plate.pixels);
        assert_eq!(
            s.min,
            want["min"].as_i64().unwrap(),
            "min of {}",
            file.display()
        );
        assert_eq!(
            s.max,
            want["max"].as_i64().unwrap(),
            "max of {}",
            file.display()
        );
        assert_eq!(
            s.sum,
            want["sum"].as_i64().unwrap() as i128,
            "sum of {}",
            file.display()
        );
        assert_eq!(
            s.sumsq,
            want["sumsq"].as_i64().unwrap() as i128,
            "sumsq of {}",
            file.display()
        );
        let head: Vec<i64> = want["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let ours: Vec<i64> = plate
            .pixels
            .iter()
            .take(head.len())
            .map(|&v| v as i64)
            .collect();
        assert_eq!(ours, head, "first pixels of {}", file.display());
    }
}

/// JPEG lossless process 14 with a predictor other than 1 (the generator writes only SV1).
#[test]
fn jpeg_lossless_process_14_predictor_5_matches_pydicom() {
    let file = support_file("jpeg_lossless_p14_predictor5.dcm");
    let want = &pydicom_describe(std::slice::from_ref(&file))[0];
    assert!(want.get("error").is_none(), "{want}");
    let plate = decode(&read(&file), &DecodePolicy::default()).unwrap();
    assert_eq!(plate.header.transfer_syntax, "1.2.840.10008.1.2.4.57");
    let s = stats(&plate.pixels);
    assert_eq!(s.sum, want["sum"].as_i64().unwrap() as i128);
    assert_eq!(s.sumsq, want["sumsq"].as_i64().unwrap() as i128);
}

#[test]
fn mr_small_is_identical_in_every_transfer_syntax() {
    let dir = pydicom_test_files();
    let policy = any_modality();
    let base = decode(&read(&dir.join("MR_small.dcm")), &policy).unwrap();
    for variant in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ] {
        let p = decode(&read(&dir.join(variant)), &policy).unwrap();
        assert_eq!(p.pixels, base.pixels, "{variant}");
    }
}

/// Lossy JPEG: decoders may differ by the IDCT's rounding, so compare within a tolerance
/// stated relative to the sample range. JPGExtended is 12-bit process 4, which dicom-rs's own
/// decoder refuses.
#[test]
fn lossy_jpeg_including_12_bit_extended_matches_pydicom_within_tolerance() {
    let dir = pydicom_test_files();
    let files = vec![dir.join("JPGExtended.dcm")];
    let reference = pydicom_describe(&files);
    let policy = any_modality();
    for (file, want) in files.iter().zip(&reference) {
        let plate =
            decode(&read(file), &policy).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            want.get("error").is_none(),
            "pydicom could not read {}: {want}",
            file.display()
        );
        let n = plate.pixels.len() as f64;
        let s = stats(&plate.pixels);
        let range = (want["max"].as_i64().unwrap() - want["min"].as_i64().unwrap()).max(1) as f64;
        let mean_ours = s.sum as f64 / n;
        let mean_ref = want["sum"].as_i64().unwrap() as f64 / n;
        assert!(
            (mean_ours - mean_ref).abs() < 0.01 * range,
            "{}: mean {mean_ours} vs {mean_ref}",
            file.display()
        );
        let head: Vec<i64> = want["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        for (i, (&a, &b)) in plate.pixels.iter().zip(&head).enumerate() {
            assert!(
                ((a as i64) - b).abs() as f64 <= 0.02 * range + 2.0,
                "{} pixel {i}: {a} vs {b}",
                file.display()
            );
        }
    }
}

fn expect_err(bytes: &[u8], what: &str) -> DecodeError {
    match decode(bytes, &any_modality()) {
        Ok(_) => panic!("{what} decoded without error"),
        Err(e) => e,
    }
}

#[test]
fn malformed_inputs_are_errors_not_crashes() {
    let dir = pydicom_test_files();
    assert!(matches!(expect_err(b"", "empty"), DecodeError::NotDicom(_)));
    assert!(matches!(
        expect_err(b"just some text, not an image\n", "text"),
        DecodeError::NotDicom(_)
    ));
    expect_err(&read(&dir.join("MR_truncated.dcm")), "truncated MR");
    expect_err(&read(&dir.join("rtplan_truncated.dcm")), "truncated plan");
    // A real 12-bit JPEG whose scan header no conformant decoder accepts (pydicom's plugins
    // refuse it too): a clear pixel error.
    let e = expect_err(&read(&dir.join("JPEG-lossy.dcm")), "JPEG-lossy");
    assert!(matches!(e, DecodeError::Pixels(_)), "{e}");
    // 1-bit segmentation-style data is not a plate.
    let e = expect_err(&read(&dir.join("liver_1frame.dcm")), "1-bit image");
    assert!(matches!(e, DecodeError::Unsupported(_)), "{e}");
    let e = expect_err(&read(&dir.join("rtdose_1frame.dcm")), "32-bit dose grid");
    assert!(matches!(e, DecodeError::Unsupported(_)), "{e}");
    // Real-world oddities: no file meta, no transfer syntax in the meta, a data set encoded
    // otherwise than its meta says, a 32-bit image, a colour image, and a CP-246 UN sequence
    // (dicom-rs cannot parse it; it must be a clean error).
    for (f, what) in [
        ("no_meta.dcm", "no meta"),
        ("meta_missing_tsyntax.dcm", "no transfer syntax"),
        ("SC_rgb_jpeg.dcm", "explicit meta, implicit data set"),
        ("badVR.dcm", "bad VR"),
        ("GDCMJ2K_TextGBR.dcm", "colour"),
        ("UN_sequence.dcm", "UN sequence"),
    ] {
        expect_err(&read(&dir.join(f)), what);
    }
    // Not images at all.
    expect_err(&read(&dir.join("rtplan.dcm")), "RT plan");
    expect_err(&read(&dir.join("reportsi.dcm")), "SR document");
    // A real file cut at every tenth of its length.
    let full = read(&dir.join("MR_small.dcm"));
    for k in 1..10 {
        let cut = &full[..full.len() * k / 10];
        expect_err(cut, &format!("MR_small cut to {k}/10"));
    }
}

#[test]
fn header_bombs_are_refused_before_allocation() {
    let dir = pydicom_test_files();
    let mut bytes = read(&dir.join("MR_small.dcm"));
    // Rows (0028,0010) US, explicit VR LE: tag, "US", length 2, value.
    let pat = [0x28, 0x00, 0x10, 0x00, b'U', b'S', 0x02, 0x00];
    let at = bytes
        .windows(8)
        .position(|w| w == pat)
        .expect("Rows element")
        + 8;
    bytes[at..at + 2].copy_from_slice(&60000u16.to_le_bytes());
    let e = expect_err(&bytes, "60000 rows");
    assert!(matches!(e, DecodeError::Policy(_)), "{e}");
}

/// Where the first fragment of a file's encapsulated pixel data lies.
fn first_fragment(bytes: &[u8]) -> std::ops::Range<usize> {
    // (7FE0,0010), OB or OW, undefined length.
    let mut at = bytes
        .windows(12)
        .position(|w| {
            w[..4] == [0xE0, 0x7F, 0x10, 0x00]
                && (w[4..6] == *b"OB" || w[4..6] == *b"OW")
                && w[8..] == [0xFF; 4]
        })
        .expect("encapsulated pixel data")
        + 12;
    let item_length = |at: usize| {
        assert_eq!(
            bytes[at..at + 4],
            [0xFE, 0xFF, 0x00, 0xE0],
            "an item at {at}"
        );
        u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize
    };
    at += 8 + item_length(at); // the basic offset table
    let len = item_length(at);
    at + 8..at + 8 + len
}

fn garble(bytes: &mut [u8]) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i * 97 % 253) as u8;
    }
}

#[test]
fn corrupt_compressed_streams_are_pixel_errors() {
    let dir = pydicom_test_files();
    for f in [
        "JPGExtended.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
    ] {
        let clean = read(&dir.join(f));
        let stream = first_fragment(&clean);
        // A garbled stream header (JPEG SOI and tables, J2K SOC and SIZ, the RLE segment
        // table): every codec must notice and say so as a decode error.
        let mut bytes = clean.clone();
        garble(&mut bytes[stream.start..stream.start + 64.min(stream.len())]);
        let e = expect_err(&bytes, &format!("{f} with a garbled stream header"));
        assert!(
            matches!(e, DecodeError::Pixels(_) | DecodeError::Malformed(_)),
            "{f}: unexpected kind {e}"
        );
        // Garbage in the middle of the stream: some codecs conceal it (JPEG 2000 does), so a
        // decode may succeed, but then with the header's dimensions; an error is a decode
        // error; and the process is still here.
        let mut bytes = clean.clone();
        let n = stream.len();
        garble(&mut bytes[stream.start + n / 2..stream.start + n / 2 + n / 8]);
        match decode(&bytes, &any_modality()) {
            Ok(p) => assert_eq!(p.pixels.len(), p.width() * p.height(), "{f}"),
            Err(e) => assert!(
                matches!(e, DecodeError::Pixels(_) | DecodeError::Malformed(_)),
                "{f}: unexpected kind {e}"
            ),
        }
    }
}

#[test]
fn modality_policy_refuses_non_dental_by_default() {
    let dir = pydicom_test_files();
    let e = decode(&read(&dir.join("CT_small.dcm")), &DecodePolicy::default()).unwrap_err();
    assert!(matches!(e, DecodeError::Policy(_)), "{e}");
    assert!(e.to_string().contains("CT"), "{e}");
}

#[test]
fn nested_sequence_bomb_does_not_take_the_process_down() {
    // A real header followed by 100k nested undefined-length sequences.
    let dir = pydicom_test_files();
    let base = read(&dir.join("MR_small.dcm"));
    let meta_end = {
        // End of group 0002 = first element whose group is not 2 after offset 132.
        let mut pos = 132;
        loop {
            let group = u16::from_le_bytes([base[pos], base[pos + 1]]);
            if group != 2 {
                break pos;
            }
            let vr = &base[pos + 4..pos + 6];
            let long = matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT");
            let (len, hdr) = if long {
                (
                    u32::from_le_bytes([
                        base[pos + 8],
                        base[pos + 9],
                        base[pos + 10],
                        base[pos + 11],
                    ]) as usize,
                    12,
                )
            } else {
                (
                    u16::from_le_bytes([base[pos + 6], base[pos + 7]]) as usize,
                    8,
                )
            };
            pos += hdr + len;
        }
    };
    let mut bomb = base[..meta_end].to_vec();
    let depth = 100_000;
    for _ in 0..depth {
        bomb.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        bomb.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        bomb.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        bomb.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    let e = expect_err(&bomb, "sequence bomb");
    assert!(e.to_string().contains("nested deeper"), "{e}");
}

/// The WG04 sample `MR1_JLSL` carries zero bytes between its last entropy-coded byte and EOI,
/// which CharLS 2.3 and later refuse. The same quirk put into a JPEG-LS plate of the fixtures:
/// plateqc decodes it through the whole file path (pre-scan, dicom-rs, codec check, CharLS
/// with the retry) to exactly the pixels of the unpadded file.
#[test]
fn jpeg_ls_with_zero_padding_before_eoi_decodes_like_the_clean_stream() {
    let clean = read(&root().join("tests/fixtures/08_jpegls_u16.dcm"));
    let frag = first_fragment(&clean);
    let stream = &clean[frag.clone()];
    let eoi = frag.start
        + stream
            .windows(2)
            .rposition(|w| w == [0xFF, 0xD9])
            .expect("EOI");
    assert_ne!(
        clean[eoi - 1],
        0,
        "the fixture must not end in zeros already"
    );
    // Two zero bytes keep the fragment's length even.
    let mut padded = clean[..eoi].to_vec();
    padded.extend_from_slice(&[0, 0]);
    padded.extend_from_slice(&clean[eoi..]);
    let len_at = frag.start - 4;
    let len = u32::from_le_bytes(clean[len_at..frag.start].try_into().unwrap()) + 2;
    padded[len_at..frag.start].copy_from_slice(&len.to_le_bytes());
    let policy = DecodePolicy::default();
    let want = decode(&clean, &policy).unwrap();
    let got = decode(&padded, &policy).unwrap_or_else(|e| panic!("padded stream: {e}"));
    assert_eq!(got.pixels, want.pixels);
    // Without the retry CharLS refuses the padded stream: the test exercises the quirk.
    let padded_stream = &padded[frag.start..frag.end + 2];
    assert!(charls::CharLS::default().decode(padded_stream).is_err());
}
