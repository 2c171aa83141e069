//! Preprocessing `plateqc-psp-v1`: stored values to the model's 2 x S x S tensor, exactly as
//! `models/README.md` specifies and `models/plateqc_ref/preprocess.py` implements.

use super::Plate;

/// The preprocessing ids this build implements; a model asking for another is refused.
pub const SUPPORTED: [&str; 1] = ["plateqc-psp-v1"];

/// Where the plate sits inside the S x S canvas, needed to map heat maps back to the plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Letterbox {
    pub size: usize,
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Letterbox {
    pub fn for_plate(h: usize, w: usize, size: usize) -> Letterbox {
        let scale = size as f64 / h.max(w) as f64;
        let oh = ((h as f64 * scale + 0.5).floor() as usize).clamp(1, size);
        let ow = ((w as f64 * scale + 0.5).floor() as usize).clamp(1, size);
        Letterbox {
            size,
            top: (size - oh) / 2,
            left: (size - ow) / 2,
            height: oh,
            width: ow,
        }
    }
}

/// Produces the `[2, S, S]` tensor (channel-major) and its letterbox.
///
/// Stored values are integers within Bits Stored (at most 16 bits here), so both channels are
/// a lookup table over that range, the percentiles come from a histogram, and the area resize
/// reads the stored values directly: no full-resolution float copies of the plate.
pub fn preprocess(plate: &Plate, size: usize) -> (Vec<f32>, Letterbox) {
    let h = plate.height();
    let w = plate.width();
    let hd = &plate.header;
    let slope = hd.rescale_slope;
    let icpt = hd.rescale_intercept;
    let (vmin, vmax) = stored_limits(hd.bits_stored, hd.pixel_signed);

    // Channel 0 window: percentiles of the modality values. Rescale is monotonic, so the order
    // statistics of the stored values map onto those of the modality values.
    let (v_lo, v_hi) = stored_percentiles(&plate.pixels, vmin, vmax);
    let (mut lo, mut hi) = (v_lo as f64 * slope + icpt, v_hi as f64 * slope + icpt);
    if slope < 0.0 {
        std::mem::swap(&mut lo, &mut hi);
    }
    let span = hi - lo;
    let invert = hd.is_monochrome1();
    let range = (vmax - vmin) as f64;
    let entries = (vmax - vmin + 1) as usize;
    let mut lut0 = Vec::with_capacity(entries);
    let mut lut1 = Vec::with_capacity(entries);
    for v in vmin..=vmax {
        let m = v as f64 * slope + icpt;
        let a = if span > 0.0 {
            ((m - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let b = (v - vmin) as f64 / range;
        lut0.push(if invert { 1.0 - a } else { a });
        lut1.push(if invert { 1.0 - b } else { b });
    }

    let lb = Letterbox::for_plate(h, w, size);
    let rows = area_weights(h, lb.height);
    let cols = area_weights(w, lb.width);
    // Vertical pass straight from stored values through the tables.
    let mut tmp0 = vec![0f64; lb.height * w];
    let mut tmp1 = vec![0f64; lb.height * w];
    for (i, (first, wts)) in rows.iter().enumerate() {
        let d0 = &mut tmp0[i * w..(i + 1) * w];
        let d1 = &mut tmp1[i * w..(i + 1) * w];
        for (k, &wt) in wts.iter().enumerate() {
            let src = &plate.pixels[(first + k) * w..(first + k + 1) * w];
            for ((a, b), &v) in d0.iter_mut().zip(d1.iter_mut()).zip(src) {
                let idx = (v.clamp(vmin, vmax) - vmin) as usize;
                *a += wt * lut0[idx];
                *b += wt * lut1[idx];
            }
        }
    }
    // Horizontal pass into the letterboxed canvas.
    let mut out = vec![0f32; 2 * size * size];
    for (ch, tmp) in [tmp0, tmp1].iter().enumerate() {
        let base = ch * size * size;
        for y in 0..lb.height {
            let row = &tmp[y * w..(y + 1) * w];
            let dst = base + (lb.top + y) * size + lb.left;
            for (x, (first, wts)) in cols.iter().enumerate() {
                let v: f64 = wts.iter().zip(&row[*first..]).map(|(wt, s)| wt * s).sum();
                out[dst + x] = v as f32;
            }
        }
    }
    (out, lb)
}

/// The range of values Bits Stored can hold.
pub fn stored_limits(bits_stored: u16, signed: bool) -> (i32, i32) {
    let b = bits_stored.clamp(1, 16) as i32;
    if signed {
        (-(1 << (b - 1)), (1 << (b - 1)) - 1)
    } else {
        (0, (1 << b) - 1)
    }
}

/// The stored values at the 0.5th and 99.5th percentile ranks, by counting (values are
/// bounded by Bits Stored, so a histogram beats sorting and needs no copy of the plate).
pub fn stored_percentiles(pixels: &[i32], vmin: i32, vmax: i32) -> (i32, i32) {
    let mut hist = vec![0u32; (vmax - vmin + 1) as usize];
    for &v in pixels {
        hist[(v.clamp(vmin, vmax) - vmin) as usize] += 1;
    }
    let (k_lo, k_hi) = percentile_ranks(pixels.len());
    let (mut lo, mut hi) = (vmin, vmax);
    let mut seen = 0usize;
    let mut found_lo = false;
    for (i, &c) in hist.iter().enumerate() {
        seen += c as usize;
        if !found_lo && seen > k_lo {
            lo = vmin + i as i32;
            found_lo = true;
        }
        if seen > k_hi {
            hi = vmin + i as i32;
            break;
        }
    }
    (lo, hi)
}

/// 0-based ranks of the 0.5th and 99.5th percentiles among `n` values, in integer arithmetic
/// so that no floating-point rounding can move a rank away from the reference's.
pub fn percentile_ranks(n: usize) -> (usize, usize) {
    let k = n.saturating_sub(1);
    (5 * k / 1000, (995 * k).div_ceil(1000))
}

/// Sparse area-resampling weights: for each output index, (first source index, weights).
pub(crate) fn area_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let r = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let a = i as f64 * r;
            let b = (i + 1) as f64 * r;
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(n_in);
            let weights = (first..last)
                .map(|j| {
                    let overlap = b.min(j as f64 + 1.0) - a.max(j as f64);
                    overlap.max(0.0) / r
                })
                .collect();
            (first, weights)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_weights_sum_to_one_and_cover_the_source() {
        for (n_in, n_out) in [(1000, 256), (7, 3), (256, 256), (3, 7), (801, 256)] {
            let w = area_weights(n_in, n_out);
            let mut coverage = vec![0f64; n_in];
            for (first, wts) in &w {
                let s: f64 = wts.iter().sum();
                assert!((s - 1.0).abs() < 1e-9, "{n_in}->{n_out}: {s}");
                for (k, wt) in wts.iter().enumerate() {
                    coverage[first + k] += wt;
                }
            }
            let total: f64 = coverage.iter().sum();
            assert!((total - n_out as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn histogram_percentiles_match_sorting() {
        let px: Vec<i32> = (0..5000).map(|i| (i * 7919) % 4096).collect();
        let mut sorted = px.clone();
        sorted.sort();
        let (a, b) = percentile_ranks(px.len());
        assert_eq!(stored_percentiles(&px, 0, 4095), (sorted[a], sorted[b]));
        let signed: Vec<i32> = px.iter().map(|v| v - 2048).collect();
        assert_eq!(
            stored_percentiles(&signed, -2048, 2047),
            (sorted[a] - 2048, sorted[b] - 2048)
        );
    }

    #[test]
    fn percentile_ranks_are_exact() {
        assert_eq!(percentile_ranks(1), (0, 0));
        assert_eq!(percentile_ranks(201), (1, 199));
        assert_eq!(percentile_ranks(1001), (5, 995));
        assert_eq!(percentile_ranks(1002), (5, 996));
    }

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        let lb = Letterbox::for_plate(1000, 750, 256);
        assert_eq!((lb.height, lb.width, lb.top, lb.left), (256, 192, 0, 32));
        let lb = Letterbox::for_plate(300, 400, 256);
        assert_eq!((lb.height, lb.width, lb.top, lb.left), (192, 256, 32, 0));
    }
}
