//! Preprocessings `plateqc-psp-v1` and `plateqc-psp-v2`: stored values to the model's
//! 2 x S x S tensor, exactly as `models/README.md` specifies and
//! `models/plateqc_ref/preprocess.py` implements. The model's metadata names the one it was
//! trained on; the decode stage runs that one.

use super::Plate;
use serde::{Deserialize, Serialize};

/// The preprocessing ids this build implements; a model asking for another is refused.
pub const SUPPORTED: [&str; 2] = [Psp::V1.id(), Psp::V2.id()];

/// Which preprocessing turns a plate into the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Psp {
    /// Channel 0: modality values windowed at their 0.5 / 99.5 % percentiles; channel 1: the
    /// stored value over the Bits Stored range (absolute exposure level). Models 1.x.
    V1,
    /// Channel 0: each pixel's mid-rank among all pixels (the empirical CDF), which no monotone
    /// display curve changes; channel 1: local contrast of the resized channel 0.
    V2,
}

impl Psp {
    pub const fn id(self) -> &'static str {
        match self {
            Psp::V1 => "plateqc-psp-v1",
            Psp::V2 => "plateqc-psp-v2",
        }
    }

    /// The preprocessing a model's `plateqc.preprocessing` names (absent: v1, the only one
    /// before the key could say otherwise).
    pub fn from_id(id: &str) -> Option<Psp> {
        match id {
            "" | "plateqc-psp-v1" => Some(Psp::V1),
            "plateqc-psp-v2" => Some(Psp::V2),
            _ => None,
        }
    }
}

/// What the model takes: its input size and preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub size: usize,
    pub psp: Psp,
}

/// v2 channel 1: the box is (2 r + 1)^2 at the S x S resolution.
const LOCAL_RADIUS: usize = 8;
/// v2 channel 1: 0.5 + gain * (c0 - box mean).
const LOCAL_GAIN: f64 = 2.0;

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
/// Stored values are integers within Bits Stored (at most 16 bits here), so channel values are
/// lookup tables over that range built from a histogram (percentiles for v1, ranks for v2), and
/// the area resize reads the stored values directly: no full-resolution float copies.
pub fn preprocess(plate: &Plate, input: Input) -> (Vec<f32>, Letterbox) {
    let hd = &plate.header;
    let (vmin, vmax) = stored_limits(hd.bits_stored, hd.pixel_signed);
    let lb = Letterbox::for_plate(plate.height(), plate.width(), input.size);
    match input.psp {
        Psp::V1 => {
            let (lut0, lut1) = v1_tables(plate, vmin, vmax);
            let [c0, c1] = area_resize_tables(plate, vmin, vmax, &lb, [&lut0, &lut1]);
            (canvas(&lb, [&c0, &c1]), lb)
        }
        Psp::V2 => {
            let ranks = rank_table(plate, vmin, vmax);
            // One table resized twice would waste a pass: resize it alone.
            let [c0] = area_resize_tables(plate, vmin, vmax, &lb, [&ranks]);
            let c1 = local_contrast(&c0, lb.height, lb.width);
            (canvas(&lb, [&c0, &c1]), lb)
        }
    }
}

/// v1's per-stored-value tables: the percentile window (channel 0) and the Bits Stored range
/// (channel 1), both inverted for MONOCHROME1.
fn v1_tables(plate: &Plate, vmin: i32, vmax: i32) -> (Vec<f64>, Vec<f64>) {
    let hd = &plate.header;
    let (slope, icpt) = (hd.rescale_slope, hd.rescale_intercept);
    // Rescale is monotonic, so the order statistics of the stored values map onto those of
    // the modality values.
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
    (lut0, lut1)
}

/// v2's channel 0 per stored value: the mid-rank of the modality value among all n pixels
/// over n - 1, `(smaller + (equal - 1) / 2) / (n - 1)`, in the reference's float operations.
/// The modality LUT is linear, so ranking the stored values is ranking the modality values
/// (reversed for a negative slope; a zero slope makes them all equal).
fn rank_table(plate: &Plate, vmin: i32, vmax: i32) -> Vec<f64> {
    let hd = &plate.header;
    let n = plate.pixels.len();
    let entries = (vmax - vmin + 1) as usize;
    let slope = hd.rescale_slope;
    let mut table = vec![0.5f64; entries];
    if n >= 2 && slope != 0.0 {
        let hist = histogram(&plate.pixels, vmin, vmax);
        let denom = (n - 1) as f64;
        let mut smaller = 0u64;
        let mut visit = |i: usize| {
            let c = hist[i] as u64;
            table[i] = (smaller as f64 + (c as f64 - 1.0) / 2.0) / denom;
            smaller += c;
        };
        if slope > 0.0 {
            (0..entries).for_each(&mut visit);
        } else {
            (0..entries).rev().for_each(&mut visit);
        }
    }
    if hd.is_monochrome1() {
        for t in &mut table {
            *t = 1.0 - *t;
        }
    }
    table
}

/// Area-resizes the plate seen through each table to the letterbox's `height x width`
/// (row-major, f64): a vertical pass straight from the stored values, then a horizontal one.
fn area_resize_tables<const K: usize>(
    plate: &Plate,
    vmin: i32,
    vmax: i32,
    lb: &Letterbox,
    tables: [&[f64]; K],
) -> [Vec<f64>; K] {
    let (h, w) = (plate.height(), plate.width());
    let rows = area_weights(h, lb.height);
    let cols = area_weights(w, lb.width);
    let mut tmp: [Vec<f64>; K] = std::array::from_fn(|_| vec![0f64; lb.height * w]);
    for (i, (first, wts)) in rows.iter().enumerate() {
        for (k, &wt) in wts.iter().enumerate() {
            let src = &plate.pixels[(first + k) * w..(first + k + 1) * w];
            for (t, table) in tmp.iter_mut().zip(tables) {
                let dst = &mut t[i * w..(i + 1) * w];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += wt * table[(v.clamp(vmin, vmax) - vmin) as usize];
                }
            }
        }
    }
    std::array::from_fn(|c| {
        let mut out = vec![0f64; lb.height * lb.width];
        for y in 0..lb.height {
            let row = &tmp[c][y * w..(y + 1) * w];
            for (x, (first, wts)) in cols.iter().enumerate() {
                out[y * lb.width + x] = wts.iter().zip(&row[*first..]).map(|(wt, s)| wt * s).sum();
            }
        }
        out
    })
}

/// v2 channel 1: `0.5 + gain (c0 - box mean of c0)`, clipped to [0, 1]; the box is cut to
/// the plate (the mean of the pixels it holds there), so the letterbox border adds no edge.
fn local_contrast(c0: &[f64], h: usize, w: usize) -> Vec<f64> {
    // Summed-area table in the reference's order: down the columns, then along the rows.
    let mut ii = vec![0f64; (h + 1) * (w + 1)];
    for y in 0..h {
        for x in 0..w {
            ii[(y + 1) * (w + 1) + x + 1] = ii[y * (w + 1) + x + 1] + c0[y * w + x];
        }
    }
    for y in 1..=h {
        for x in 1..=w {
            ii[y * (w + 1) + x] += ii[y * (w + 1) + x - 1];
        }
    }
    let r = LOCAL_RADIUS;
    let mut out = vec![0f64; h * w];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let at = |yy: usize, xx: usize| ii[yy * (w + 1) + xx];
            let sum = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0);
            let mean = sum / ((y1 - y0) as f64 * (x1 - x0) as f64);
            out[y * w + x] = (0.5 + LOCAL_GAIN * (c0[y * w + x] - mean)).clamp(0.0, 1.0);
        }
    }
    out
}

/// The two channels placed in the zero S x S canvas (f32, channel-major).
fn canvas(lb: &Letterbox, channels: [&[f64]; 2]) -> Vec<f32> {
    let size = lb.size;
    let mut out = vec![0f32; 2 * size * size];
    for (ch, c) in channels.iter().enumerate() {
        for y in 0..lb.height {
            let dst = ch * size * size + (lb.top + y) * size + lb.left;
            for (d, &v) in out[dst..dst + lb.width]
                .iter_mut()
                .zip(&c[y * lb.width..(y + 1) * lb.width])
            {
                *d = v as f32;
            }
        }
    }
    out
}

fn histogram(pixels: &[i32], vmin: i32, vmax: i32) -> Vec<u32> {
    let mut hist = vec![0u32; (vmax - vmin + 1) as usize];
    for &v in pixels {
        hist[(v.clamp(vmin, vmax) - vmin) as usize] += 1;
    }
    hist
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
    let hist = histogram(pixels, vmin, vmax);
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

    fn plate(pixels: Vec<i32>, w: u32, h: u32, photometric: &str, slope: f64) -> Plate {
        Plate {
            header: crate::decode::PlateHeader {
                rows: h,
                columns: w,
                bits_stored: 12,
                bits_allocated: 16,
                photometric: photometric.into(),
                rescale_slope: slope,
                ..Default::default()
            },
            pixels,
        }
    }

    /// Values within 0..=1000 of a 12-bit plate, with structure at several scales and a block
    /// of tied (clipped) values.
    fn textured(w: u32, h: u32) -> Vec<i32> {
        (0..h as i32)
            .flat_map(|y| {
                (0..w as i32).map(move |x| {
                    let v = 300 + 3 * x - y + ((x * 37 + y * 101) % 97) * 2;
                    if x < 5 {
                        1000
                    } else {
                        v.clamp(0, 1000)
                    }
                })
            })
            .collect()
    }

    const V2: Input = Input {
        size: 64,
        psp: Psp::V2,
    };

    #[test]
    fn v2_is_unchanged_by_any_strictly_increasing_display_curve() {
        let px = textured(90, 70);
        let (a, lb) = preprocess(&plate(px.clone(), 90, 70, "MONOCHROME2", 1.0), V2);
        // A convex display curve that keeps every stored value apart (checked below): a
        // rounded gamma would merge neighbours, which changes ranks legitimately.
        let curved: Vec<i32> = px.iter().map(|&v| 2 * v + v * v / 1000).collect();
        let mut order = px.clone();
        order.sort();
        order.dedup();
        let mut mapped: Vec<i32> = order.iter().map(|&v| 2 * v + v * v / 1000).collect();
        mapped.dedup();
        assert_eq!(
            order.len(),
            mapped.len(),
            "the test curve must keep every value apart"
        );
        let (b, _) = preprocess(&plate(curved, 90, 70, "MONOCHROME2", 1.0), V2);
        assert_eq!(a, b);
        // ... while v1 sees the curve.
        let v1 = Input {
            size: 64,
            psp: Psp::V1,
        };
        let (c, _) = preprocess(&plate(px.clone(), 90, 70, "MONOCHROME2", 1.0), v1);
        let curved: Vec<i32> = px.iter().map(|&v| 2 * v + v * v / 1000).collect();
        let (d, _) = preprocess(&plate(curved, 90, 70, "MONOCHROME2", 1.0), v1);
        assert!(c.iter().zip(&d).any(|(x, y)| (x - y).abs() > 0.01));
        // Outside the letterbox both channels stay zero.
        assert_eq!(lb.top, 7);
        assert!(a[..64 * lb.top].iter().all(|&v| v == 0.0));
        assert!(a[64 * 64..64 * 64 + 64 * lb.top].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn v2_ranks_are_mid_ranks_and_monochrome1_or_a_negative_slope_reverse_them() {
        // 4 pixels: 10, 20, 20, 30 -> mid-ranks 0, 1.5, 1.5, 3 over n - 1 = 3.
        let p = plate(vec![10, 20, 20, 30], 4, 1, "MONOCHROME2", 1.0);
        let t = rank_table(&p, 0, 4095);
        assert_eq!((t[10], t[20], t[30]), (0.0, 0.5, 1.0));
        let m1 = rank_table(
            &plate(vec![10, 20, 20, 30], 4, 1, "MONOCHROME1", 1.0),
            0,
            4095,
        );
        assert_eq!((m1[10], m1[20], m1[30]), (1.0, 0.5, 0.0));
        let neg = rank_table(
            &plate(vec![10, 20, 20, 30], 4, 1, "MONOCHROME2", -2.0),
            0,
            4095,
        );
        assert_eq!((neg[10], neg[20], neg[30]), (1.0, 0.5, 0.0));
        // A flat plate, or a zero slope, has every pixel at the middle rank.
        let flat = rank_table(&plate(vec![7; 6], 3, 2, "MONOCHROME2", 1.0), 0, 4095);
        assert_eq!(flat[7], 0.5);
        let zero = rank_table(
            &plate(vec![10, 20, 20, 30], 4, 1, "MONOCHROME2", 0.0),
            0,
            4095,
        );
        assert_eq!(zero[30], 0.5);
    }

    #[test]
    fn v2_local_contrast_is_half_on_flat_ground_and_follows_edges() {
        let (h, w) = (20, 30);
        let flat = vec![0.3; h * w];
        assert!(local_contrast(&flat, h, w)
            .iter()
            .all(|&v| (v - 0.5).abs() < 1e-12));
        // A step: brighter than its surroundings on the bright side of the edge, darker on
        // the dark side, back to 0.5 far from it (the box is 17 wide).
        let step: Vec<f64> = (0..h * w)
            .map(|i| if i % w < 15 { 0.2 } else { 0.8 })
            .collect();
        let c = local_contrast(&step, h, w);
        let row = &c[10 * w..11 * w];
        assert!(row[14] < 0.5 && row[15] > 0.5, "{row:?}");
        assert!((row[0] - 0.5).abs() < 1e-12 && (row[29] - 0.5).abs() < 1e-12);
        assert!(c.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn psp_ids_round_trip_and_unknown_ones_are_refused() {
        for p in [Psp::V1, Psp::V2] {
            assert_eq!(Psp::from_id(p.id()), Some(p));
        }
        assert_eq!(Psp::from_id(""), Some(Psp::V1));
        assert_eq!(Psp::from_id("plateqc-psp-v9"), None);
    }

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        let lb = Letterbox::for_plate(1000, 750, 256);
        assert_eq!((lb.height, lb.width, lb.top, lb.left), (256, 192, 0, 32));
        let lb = Letterbox::for_plate(300, 400, 256);
        assert_eq!((lb.height, lb.width, lb.top, lb.left), (192, 256, 32, 0));
    }
}
