//! Preprocessing `plateqc-psp-v1`: stored values to the model's 2 x S x S tensor, exactly as
//! `models/README.md` specifies and `models/plateqc_preprocess.py` implements.

use super::Plate;

/// The preprocessing ids this build implements; a model asking for another is refused.
pub const SUPPORTED: [&str; 1] = ["plateqc-psp-v1"];

/// Where the plate sits inside the S x S canvas, needed to map heat maps back to the plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
pub fn preprocess(plate: &Plate, size: usize) -> (Vec<f32>, Letterbox) {
    let h = plate.height();
    let w = plate.width();
    let hd = &plate.header;
    let n = plate.pixels.len();
    let slope = hd.rescale_slope;
    let icpt = hd.rescale_intercept;

    // Channel 0: percentiles of the modality values. Rescale is monotonic, so ranking stored
    // values gives the same order statistics; the two ranks are found in O(n).
    let (k_lo, k_hi) = percentile_ranks(n);
    let mut scratch = plate.pixels.clone();
    let v_lo = *scratch.select_nth_unstable(k_lo).1;
    let v_hi = *scratch.select_nth_unstable(k_hi).1;
    drop(scratch);
    let (mut lo, mut hi) = (v_lo as f64 * slope + icpt, v_hi as f64 * slope + icpt);
    if slope < 0.0 {
        std::mem::swap(&mut lo, &mut hi);
    }
    let span = hi - lo;

    let bits = hd.bits_stored as i32;
    let (vmin, vmax) = if hd.pixel_signed {
        (
            -(1i64 << (bits - 1)) as f64,
            ((1i64 << (bits - 1)) - 1) as f64,
        )
    } else {
        (0.0, ((1i64 << bits) - 1) as f64)
    };
    let invert = hd.is_monochrome1();

    let mut c0 = vec![0f64; n];
    let mut c1 = vec![0f64; n];
    for (i, &v) in plate.pixels.iter().enumerate() {
        let m = v as f64 * slope + icpt;
        let mut a = if span > 0.0 {
            ((m - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut b = (v as f64 - vmin) / (vmax - vmin);
        if invert {
            a = 1.0 - a;
            b = 1.0 - b;
        }
        c0[i] = a;
        c1[i] = b;
    }

    let lb = Letterbox::for_plate(h, w, size);
    let rows = area_weights(h, lb.height);
    let cols = area_weights(w, lb.width);
    let mut out = vec![0f32; 2 * size * size];
    for (ch, src) in [c0, c1].iter().enumerate() {
        let resized = resample(src, h, w, &rows, &cols);
        let base = ch * size * size;
        for y in 0..lb.height {
            let dst = base + (lb.top + y) * size + lb.left;
            for x in 0..lb.width {
                out[dst + x] = resized[y * lb.width + x] as f32;
            }
        }
    }
    (out, lb)
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

/// Separable resampling: vertical pass first here, horizontal first in the reference;
/// the operator is linear and separable, so the order changes only rounding (~1e-16).
fn resample(
    src: &[f64],
    h: usize,
    w: usize,
    rows: &[(usize, Vec<f64>)],
    cols: &[(usize, Vec<f64>)],
) -> Vec<f64> {
    let oh = rows.len();
    let ow = cols.len();
    let mut tmp = vec![0f64; oh * w];
    for (i, (first, wts)) in rows.iter().enumerate() {
        let dst = &mut tmp[i * w..(i + 1) * w];
        for (k, &wt) in wts.iter().enumerate() {
            let row = &src[(first + k) * w..(first + k + 1) * w];
            for (d, &s) in dst.iter_mut().zip(row) {
                *d += wt * s;
            }
        }
    }
    let _ = h;
    let mut out = vec![0f64; oh * ow];
    for y in 0..oh {
        let row = &tmp[y * w..(y + 1) * w];
        for (x, (first, wts)) in cols.iter().enumerate() {
            out[y * ow + x] = wts
                .iter()
                .enumerate()
                .map(|(k, &wt)| wt * row[first + k])
                .sum();
        }
    }
    out
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
