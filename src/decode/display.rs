//! The plate as a person sees it: stored values through the VOI window to 8-bit grayscale,
//! made at decode time so that only one byte per pixel is kept until the overlays are drawn.

use super::{preprocess, Plate};

/// Display grayscale (0..255) of a plate: its VOI window when present, otherwise the 0.5/99.5
/// percentiles of the modality values; MONOCHROME1 inverted so bright means attenuating.
pub fn display_gray(plate: &Plate) -> Vec<u8> {
    let h = &plate.header;
    let modality = |v: i32| v as f64 * h.rescale_slope + h.rescale_intercept;
    let (lo, hi) = match h.window {
        Some((c, w)) => (c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0),
        None => {
            let (vmin, vmax) = preprocess::stored_limits(h.bits_stored, h.pixel_signed);
            let (a, b) = preprocess::stored_percentiles(&plate.pixels, vmin, vmax);
            let (a, b) = (modality(a), modality(b));
            (a.min(b), a.max(b))
        }
    };
    let span = (hi - lo).max(1e-9);
    let invert = h.is_monochrome1();
    let (vmin, vmax) = preprocess::stored_limits(h.bits_stored, h.pixel_signed);
    let lut: Vec<u8> = (vmin..=vmax)
        .map(|v| {
            let t = ((modality(v) - lo) / span).clamp(0.0, 1.0);
            let t = if invert { 1.0 - t } else { t };
            (t * 255.0 + 0.5) as u8
        })
        .collect();
    plate
        .pixels
        .iter()
        .map(|&v| lut[(v.clamp(vmin, vmax) - vmin) as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::PlateHeader;

    fn plate(
        pixels: Vec<i32>,
        w: u32,
        h: u32,
        photometric: &str,
        window: Option<(f64, f64)>,
    ) -> Plate {
        Plate {
            header: PlateHeader {
                rows: h,
                columns: w,
                bits_stored: 12,
                bits_allocated: 16,
                photometric: photometric.into(),
                rescale_slope: 1.0,
                window,
                ..Default::default()
            },
            pixels,
        }
    }

    #[test]
    fn window_maps_and_monochrome1_inverts() {
        let p = plate(
            vec![0, 1000, 2000, 4095],
            4,
            1,
            "MONOCHROME2",
            Some((1000.5, 1001.0)),
        );
        let g = display_gray(&p);
        assert_eq!(g[0], 0);
        assert_eq!(g[2], 255);
        assert!(g[1] > 100 && g[1] < 160, "{g:?}");
        let p1 = plate(
            vec![0, 1000, 2000, 4095],
            4,
            1,
            "MONOCHROME1",
            Some((1000.5, 1001.0)),
        );
        assert_eq!(display_gray(&p1)[0], 255);
    }
}
