//! JPEG family (baseline 8-bit, extended 12-bit, lossless process 14 up to 16-bit) through
//! libjpeg-turbo 3's TurboJPEG API, built from the source bundled in `turbojpeg-sys`.
//!
//! dicom-rs's pure-Rust decoder refuses 12-bit DCT JPEG, which dental sensors commonly write;
//! libjpeg-turbo 3 decodes 8, 12 and (lossless) 16-bit precision in one library.

use std::ffi::CStr;
use turbojpeg_sys as tj;

pub struct Gray {
    pub samples: Vec<i32>,
}

struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed exactly once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

impl Handle {
    fn error(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
    fn get(&self, param: tj::TJPARAM) -> i32 {
        // SAFETY: valid handle; unknown parameters return -1.
        unsafe { tj::tj3Get(self.0, param as i32) }
    }
}

/// Encodes packed 8-bit RGB as baseline JPEG with 4:2:2 chroma subsampling (DICOM's
/// YBR_FULL_422, transfer syntax 1.2.840.10008.1.2.4.50) at `quality` (1-100). Used for the
/// montage Secondary Captures: a heat-map montage needs no lossless copy, and uncompressed it
/// was about nine times the size of the plate it explains.
pub fn encode_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    quality: i32,
) -> Result<Vec<u8>, String> {
    let (w, h) = (
        i32::try_from(width).map_err(|_| "image too wide")?,
        i32::try_from(height).map_err(|_| "image too tall")?,
    );
    if w == 0 || h == 0 || rgb.len() != width * height * 3 {
        return Err(format!(
            "{} bytes are not a {width} x {height} RGB image",
            rgb.len()
        ));
    }
    // SAFETY: plain constructor; a null return is checked.
    let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as i32) };
    if raw.is_null() {
        return Err("cannot initialise the JPEG encoder".into());
    }
    let handle = Handle(raw);
    // SAFETY: valid handle; both parameters exist in libjpeg-turbo 3.
    unsafe {
        tj::tj3Set(
            handle.0,
            tj::TJPARAM_TJPARAM_QUALITY as i32,
            quality.clamp(1, 100),
        );
        tj::tj3Set(
            handle.0,
            tj::TJPARAM_TJPARAM_SUBSAMP as i32,
            tj::TJSAMP_TJSAMP_422,
        );
    }
    let mut out: *mut u8 = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: `rgb` holds width * height * 3 bytes (checked above) with pitch width * 3; the
    // library allocates `out`, which is freed below with tj3Free whatever the result.
    let rc = unsafe {
        tj::tj3Compress8(
            handle.0,
            rgb.as_ptr(),
            w,
            w * 3,
            h,
            tj::TJPF_TJPF_RGB,
            &mut out,
            &mut size,
        )
    };
    let result = if rc == 0 && !out.is_null() {
        // SAFETY: on success `out` points to `size` bytes written by the library.
        Ok(unsafe { std::slice::from_raw_parts(out, size as usize) }.to_vec())
    } else {
        Err(handle.error())
    };
    if !out.is_null() {
        // SAFETY: allocated by tj3Compress8, freed once.
        unsafe { tj::tj3Free(out.cast()) };
    }
    result
}

/// Progressive scans read at most; real grayscale plates have one to a dozen, a crafted stream
/// thousands (each a pass over the image).
const MAX_SCANS: i32 = 100;

/// A decompressor whose header has been read: a stream whose header says another size than
/// `want_w` x `want_h` is refused before anything is allocated for it, and libjpeg-turbo
/// itself refuses a larger image and stops after MAX_SCANS.
fn open_stream(stream: &[u8], want_w: usize, want_h: usize) -> Result<(Handle, i32), String> {
    if stream.len() < 4 {
        return Err("JPEG stream is empty".into());
    }
    // SAFETY: plain constructor; a null return is checked.
    let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
    if raw.is_null() {
        return Err("cannot initialise the JPEG decoder".into());
    }
    let h = Handle(raw);
    let pixels = i32::try_from(want_w.saturating_mul(want_h)).unwrap_or(i32::MAX);
    // SAFETY: valid handle; both parameters exist in libjpeg-turbo 3.
    unsafe {
        tj::tj3Set(h.0, tj::TJPARAM_TJPARAM_MAXPIXELS as i32, pixels);
        tj::tj3Set(h.0, tj::TJPARAM_TJPARAM_SCANLIMIT as i32, MAX_SCANS);
    }
    // SAFETY: the buffer and its length are valid for the call.
    if unsafe { tj::tj3DecompressHeader(h.0, stream.as_ptr(), stream.len() as _) } != 0 {
        return Err(format!("JPEG header: {}", h.error()));
    }
    let width = h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
    let height = h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
    if width <= 0 || height <= 0 {
        return Err(format!("JPEG has invalid size {width}x{height}"));
    }
    if (width as usize, height as usize) != (want_w, want_h) {
        return Err(format!(
            "JPEG is {width}x{height} but the header says {want_w}x{want_h}"
        ));
    }
    Ok((h, width))
}

/// Decodes an 8-bit colour JPEG stream of `width` x `height` to packed RGB. Used to
/// decompress plateqc's own montage captures for a destination that refuses JPEG.
pub fn decode_rgb8(stream: &[u8], want_w: usize, want_h: usize) -> Result<Vec<u8>, String> {
    let (h, width) = open_stream(stream, want_w, want_h)?;
    let precision = h.get(tj::TJPARAM_TJPARAM_PRECISION);
    if precision != 8 {
        return Err(format!("colour JPEG of {precision}-bit precision"));
    }
    let n = want_w
        .checked_mul(want_h)
        .and_then(|n| n.checked_mul(3))
        .ok_or("JPEG size overflows")?;
    let mut buf = vec![0u8; n];
    // SAFETY: the destination holds width*height*3 bytes with pitch width*3, as TurboJPEG
    // requires for TJPF_RGB.
    let rc = unsafe {
        tj::tj3Decompress8(
            h.0,
            stream.as_ptr(),
            stream.len() as _,
            buf.as_mut_ptr(),
            width * 3,
            tj::TJPF_TJPF_RGB,
        )
    };
    if rc != 0 {
        return Err(format!("JPEG data: {}", h.error()));
    }
    Ok(buf)
}

/// Decodes one grayscale JPEG stream of `width` x `height` to samples; a stream whose header
/// says another size is refused before anything is allocated for it.
pub fn decode(stream: &[u8], want_w: usize, want_h: usize) -> Result<Gray, String> {
    let (h, width) = open_stream(stream, want_w, want_h)?;
    let precision = h.get(tj::TJPARAM_TJPARAM_PRECISION);
    let (w, hgt) = (want_w, want_h);
    let n = w.checked_mul(hgt).ok_or("JPEG size overflows")?;
    let gray = tj::TJPF_TJPF_GRAY;
    // SAFETY (all three arms): the destination holds width*height samples of the requested
    // precision with pitch = width, as TurboJPEG requires for a one-component pixel format.
    let (rc, samples) = match precision {
        2..=8 => {
            let mut buf = vec![0u8; n];
            let rc = unsafe {
                tj::tj3Decompress8(
                    h.0,
                    stream.as_ptr(),
                    stream.len() as _,
                    buf.as_mut_ptr(),
                    width,
                    gray,
                )
            };
            (rc, buf.into_iter().map(i32::from).collect())
        }
        9..=12 => {
            let mut buf = vec![0i16; n];
            let rc = unsafe {
                tj::tj3Decompress12(
                    h.0,
                    stream.as_ptr(),
                    stream.len() as _,
                    buf.as_mut_ptr(),
                    width,
                    gray,
                )
            };
            (rc, buf.into_iter().map(i32::from).collect())
        }
        13..=16 => {
            let mut buf = vec![0u16; n];
            let rc = unsafe {
                tj::tj3Decompress16(
                    h.0,
                    stream.as_ptr(),
                    stream.len() as _,
                    buf.as_mut_ptr(),
                    width,
                    gray,
                )
            };
            (rc, buf.into_iter().map(i32::from).collect())
        }
        p => return Err(format!("JPEG sample precision {p} is not supported")),
    };
    if rc != 0 {
        return Err(format!("JPEG data: {}", h.error()));
    }
    Ok(Gray { samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        assert!(decode(&[], 8, 8).is_err());
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5], 8, 8).is_err());
        let mut junk = vec![0xFF, 0xD8];
        junk.extend((0..5000).map(|i| (i * 31 % 251) as u8));
        assert!(decode(&junk, 8, 8).is_err());
        assert!(decode_rgb8(&junk, 8, 8).is_err());
    }

    #[test]
    fn an_rgb_montage_comes_back_close_to_what_was_encoded() {
        let (w, h) = (48, 32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 5) as u8, (y * 7) as u8, 128]
            })
            .collect();
        let jpeg = encode_rgb(&rgb, w, h, 95).unwrap();
        let back = decode_rgb8(&jpeg, w, h).unwrap();
        assert_eq!(back.len(), rgb.len());
        let worst = rgb
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 24, "largest difference {worst}");
        assert!(
            decode_rgb8(&jpeg, w + 1, h).is_err(),
            "size mismatch refused"
        );
    }

    /// A capture read back from disk may have been cut short or damaged since it was written:
    /// every prefix and a run of single-byte corruptions of a real stream give an error or
    /// pixels of the promised size, never a crash or a buffer of another size; a stream cut in
    /// its scan data is an error.
    #[test]
    fn a_cut_or_damaged_capture_is_an_error_or_the_right_size() {
        let (w, h) = (40, 24);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 13 % 256) as u8).collect();
        let jpeg = encode_rgb(&rgb, w, h, 90).unwrap();
        let check = |bytes: &[u8]| {
            if let Ok(px) = decode_rgb8(bytes, w, h) {
                assert_eq!(px.len(), w * h * 3);
            }
        };
        for cut in (0..jpeg.len()).step_by(7) {
            check(&jpeg[..cut]);
        }
        // A stream cut in its scan data is refused, not padded out with grey.
        assert!(decode_rgb8(&jpeg[..jpeg.len() / 3 * 2], w, h).is_err());
        for i in (2..jpeg.len()).step_by(5) {
            let mut bad = jpeg.clone();
            bad[i] ^= 0x5A;
            check(&bad);
        }
    }
}
