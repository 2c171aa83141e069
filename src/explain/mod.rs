//! Explain, the fourth room: heat maps from the model's own activation and gradient outputs,
//! and the overlay images a dentist or physicist looks at ([`Painter::write_overlays`]).

pub mod colormap;
mod font;
pub mod overlay;
pub mod paint;

pub use paint::{overlay_dir, MontageJpeg, Overlays, Painter, PlateImage};

use crate::decode::preprocess::Letterbox;
use crate::infer::LayerMaps;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot encode overlay {path}: {reason}")]
    Encode { path: String, reason: String },
    #[error("cannot write overlay {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("layer {layer}: {reason}")]
    Layer { layer: String, reason: String },
}

impl ExplainError {
    /// A write that failed for a reason that may pass (out of file handles, disk full, EIO).
    pub fn is_transient(&self) -> bool {
        matches!(self, ExplainError::Write { source, .. } if crate::fsutil::is_transient(source))
    }
}

/// `[explain]`: how heat maps are made and drawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplainOptions {
    /// Weighting of the heat maps: `gradcam`, `gradcampp` or `layercam`.
    pub method: CamMethod,
    /// `turbo` (default), `inferno`, `viridis` or `jet`.
    pub colormap: colormap::Colormap,
    /// Peak opacity of the heat map on the plate.
    pub alpha: f32,
    /// Height in pixels of each montage panel.
    pub montage_height: u32,
    /// Write per-layer overlays and the montage; off for a verdict-only run.
    pub write_overlays: bool,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            method: CamMethod::GradCam,
            colormap: colormap::Colormap::Turbo,
            alpha: 0.55,
            montage_height: 384,
            write_overlays: true,
        }
    }
}

/// How channel weights are formed from the gradients.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CamMethod {
    /// Selvaraju et al.: weights are the spatial mean of the gradients.
    #[default]
    GradCam,
    /// Chattopadhyay et al.: pixel-wise weights from second and third gradient powers.
    #[serde(rename = "gradcampp", alias = "gradcam++")]
    GradCamPlusPlus,
    /// Jiang et al.: element-wise positive gradients times activations; sharper on early layers.
    LayerCam,
}

impl CamMethod {
    pub fn parse(s: &str) -> Option<CamMethod> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "gradcam" => Some(CamMethod::GradCam),
            "gradcampp" | "gradcamplusplus" | "gradcam++" => Some(CamMethod::GradCamPlusPlus),
            "layercam" => Some(CamMethod::LayerCam),
            _ => None,
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            CamMethod::GradCam => "Grad-CAM",
            CamMethod::GradCamPlusPlus => "Grad-CAM++",
            CamMethod::LayerCam => "LayerCAM",
        }
    }
}

/// A raw class-activation map at the layer's resolution (unnormalised, non-negative).
#[derive(Debug, Clone)]
pub struct Cam {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Cam {
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, f32::max)
    }
    /// True when the map carries no signal: all zero after ReLU, or not finite.
    pub fn is_empty(&self) -> bool {
        self.max().partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    }
    /// Position of the peak as fractions of the map (row, column) in 0..1, pixel centres.
    pub fn peak(&self) -> Option<(f32, f32)> {
        if self.is_empty() {
            return None;
        }
        let (i, _) = self
            .values
            .iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        Some((
            ((i / self.width) as f32 + 0.5) / self.height as f32,
            ((i % self.width) as f32 + 0.5) / self.width as f32,
        ))
    }
}

/// Computes a class-activation map from one layer's activations and gradients.
pub fn cam(maps: &LayerMaps, method: CamMethod) -> Cam {
    let (c, h, w) = (maps.channels, maps.height, maps.width);
    let hw = h * w;
    let a = &maps.activation;
    let g = &maps.gradient;
    let mut out = vec![0f64; hw];
    match method {
        CamMethod::GradCam => {
            for k in 0..c {
                let gk = &g[k * hw..(k + 1) * hw];
                let weight = gk.iter().map(|&x| x as f64).sum::<f64>() / hw as f64;
                if weight == 0.0 {
                    continue;
                }
                for (o, &x) in out.iter_mut().zip(&a[k * hw..(k + 1) * hw]) {
                    *o += weight * x as f64;
                }
            }
        }
        CamMethod::GradCamPlusPlus => {
            for k in 0..c {
                let gk = &g[k * hw..(k + 1) * hw];
                let ak = &a[k * hw..(k + 1) * hw];
                let sum_a: f64 = ak.iter().map(|&x| x as f64).sum();
                let mut weight = 0f64;
                for &gv in gk {
                    let g1 = gv as f64;
                    let g2 = g1 * g1;
                    let denom = 2.0 * g2 + sum_a * g2 * g1;
                    if denom != 0.0 && g1 > 0.0 {
                        weight += (g2 / denom) * g1;
                    }
                }
                if weight == 0.0 {
                    continue;
                }
                for (o, &x) in out.iter_mut().zip(ak) {
                    *o += weight * x as f64;
                }
            }
        }
        CamMethod::LayerCam => {
            for k in 0..c {
                let gk = &g[k * hw..(k + 1) * hw];
                let ak = &a[k * hw..(k + 1) * hw];
                for ((o, &gv), &x) in out.iter_mut().zip(gk).zip(ak) {
                    if gv > 0.0 {
                        *o += gv as f64 * x as f64;
                    }
                }
            }
        }
    }
    Cam {
        height: h,
        width: w,
        values: out
            .into_iter()
            .map(|v| {
                if v.is_finite() && v > 0.0 {
                    v as f32
                } else {
                    0.0
                }
            })
            .collect(),
    }
}

/// Maps a layer map onto the plate as the contract states: bilinear (half-pixel centres) up to
/// the S x S canvas, crop to the letterbox, bilinear to the native size; then min-max
/// normalised to 0..1. An empty or flat map stays all zero rather than becoming noise divided
/// by epsilon.
///
/// The native-size map is made one row at a time: an overlay is blended and encoded row by row, so no plate-sized float map
/// (4 bytes a pixel, three layers a plate) is ever allocated. Row values are bit-identical to
/// resampling the whole map with [`bilinear`] (the vertical blend is done once per source row
/// instead of once per pixel, with the same operations in the same order).
pub struct NativeHeat<'a> {
    map: &'a PlateMap,
    native_h: usize,
    cols: Vec<(usize, usize, f32)>,
    /// `(min, span)`, or `None` for an empty or flat map (drawn as all cold).
    range: Option<(f32, f32)>,
}

/// The first half of that mapping: a layer map resampled to the model input and cropped to
/// where the plate sits in it. Made once per layer and shared by every size the map is drawn
/// at (the native overlay and the montage panel).
pub struct PlateMap {
    /// `height x width` values; empty for an empty map.
    values: Vec<f32>,
    width: usize,
    height: usize,
}

impl PlateMap {
    pub fn new(cam: &Cam, lb: &Letterbox) -> PlateMap {
        let mut values = Vec::new();
        if !cam.is_empty() {
            let canvas = bilinear(&cam.values, cam.height, cam.width, lb.size, lb.size);
            values.reserve(lb.height * lb.width);
            for y in lb.top..lb.top + lb.height {
                values.extend_from_slice(
                    &canvas[y * lb.size + lb.left..y * lb.size + lb.left + lb.width],
                );
            }
        }
        PlateMap {
            values,
            width: lb.width,
            height: lb.height,
        }
    }
}

impl<'a> NativeHeat<'a> {
    pub fn new(map: &'a PlateMap, native_h: usize, native_w: usize) -> NativeHeat<'a> {
        let cols = (0..native_w)
            .map(|x| {
                axis(
                    (x as f64 + 0.5) * map.width as f64 / native_w as f64 - 0.5,
                    map.width,
                )
            })
            .collect();
        let mut heat = NativeHeat {
            map,
            native_h,
            cols,
            range: None,
        };
        if map.values.is_empty() || native_h == 0 || native_w == 0 {
            return heat;
        }
        // The normalisation needs the resampled map's extremes. Each output value is a linear
        // blend of two neighbours whose weight grows along a run of outputs between the same
        // pair, so a run's extremes lie at its two ends: evaluating only the ends of the row
        // and column runs finds them without resampling the whole map an extra time.
        let rows: Vec<(usize, usize, f32)> = (0..native_h).map(|y| heat.row_axis(y)).collect();
        let (row_ends, col_ends) = (run_ends(&rows), run_ends(&heat.cols));
        let (mut min, mut max) = (f32::MAX, f32::MIN);
        let mut tmp = vec![0f32; map.width];
        for &y in &row_ends {
            heat.vertical(rows[y], &mut tmp);
            for &x in &col_ends {
                let (x0, x1, fx) = heat.cols[x];
                let v = tmp[x0] * (1.0 - fx) + tmp[x1] * fx;
                (min, max) = (min.min(v), max.max(v));
            }
        }
        let span = max - min;
        let flat = span.is_nan() || span <= f32::EPSILON * max.abs().max(1e-30);
        if !flat {
            heat.range = Some((min, span));
        }
        heat
    }

    fn row_axis(&self, y: usize) -> (usize, usize, f32) {
        axis(
            (y as f64 + 0.5) * self.map.height as f64 / self.native_h as f64 - 0.5,
            self.map.height,
        )
    }

    /// The vertical blend for one output row, over the crop's width.
    fn vertical(&self, (y0, y1, fy): (usize, usize, f32), tmp: &mut [f32]) {
        let w = self.map.width;
        let r0 = &self.map.values[y0 * w..(y0 + 1) * w];
        let r1 = &self.map.values[y1 * w..(y1 + 1) * w];
        for ((t, &a), &b) in tmp.iter_mut().zip(r0).zip(r1) {
            *t = a * (1.0 - fy) + b * fy;
        }
    }

    /// Row `y` normalised to 0..1 (all 0 for an empty or flat map); `tmp` is scratch space
    /// the caller keeps between rows.
    pub fn row(&self, y: usize, tmp: &mut Vec<f32>, out: &mut [f32]) {
        let Some((min, span)) = self.range else {
            out.fill(0.0);
            return;
        };
        tmp.resize(self.map.width, 0.0);
        self.vertical(self.row_axis(y), tmp);
        for (o, &(x0, x1, fx)) in out.iter_mut().zip(&self.cols) {
            *o = (tmp[x0] * (1.0 - fx) + tmp[x1] * fx - min) / span;
        }
    }

    /// The whole map, row after row (for small panels and tests).
    pub fn collect(&self) -> Vec<f32> {
        let w = self.cols.len();
        let mut out = vec![0f32; self.native_h * w];
        let mut tmp = Vec::new();
        for (y, row) in out.chunks_exact_mut(w.max(1)).enumerate() {
            self.row(y, &mut tmp, row);
        }
        out
    }
}

/// Indices that start or end a run of equal neighbour pairs in a resampling axis.
fn run_ends(axis: &[(usize, usize, f32)]) -> Vec<usize> {
    let same = |a: &(usize, usize, f32), b: &(usize, usize, f32)| (a.0, a.1) == (b.0, b.1);
    (0..axis.len())
        .filter(|&i| {
            i == 0
                || i + 1 == axis.len()
                || !same(&axis[i - 1], &axis[i])
                || !same(&axis[i], &axis[i + 1])
        })
        .collect()
}

/// The whole map at native size in one go (see [`NativeHeat`]).
pub fn to_native(cam: &Cam, lb: &Letterbox, native_h: usize, native_w: usize) -> Vec<f32> {
    NativeHeat::new(&PlateMap::new(cam, lb), native_h, native_w).collect()
}

/// Bilinear resize with half-pixel centres and edge clamping (PyTorch's align_corners=False).
pub fn bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let cols: Vec<(usize, usize, f32)> = (0..ow)
        .map(|x| axis((x as f64 + 0.5) * w as f64 / ow as f64 - 0.5, w))
        .collect();
    let mut out = vec![0f32; oh * ow];
    for y in 0..oh {
        let (y0, y1, fy) = axis((y as f64 + 0.5) * h as f64 / oh as f64 - 0.5, h);
        let r0 = &src[y0 * w..(y0 + 1) * w];
        let r1 = &src[y1 * w..(y1 + 1) * w];
        for (o, &(x0, x1, fx)) in out[y * ow..(y + 1) * ow].iter_mut().zip(&cols) {
            let a = r0[x0] * (1.0 - fy) + r1[x0] * fy;
            let b = r0[x1] * (1.0 - fy) + r1[x1] * fy;
            *o = a * (1.0 - fx) + b * fx;
        }
    }
    out
}

fn axis(pos: f64, n: usize) -> (usize, usize, f32) {
    let p = pos.clamp(0.0, (n - 1) as f64);
    let i0 = p.floor() as usize;
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, (p - i0 as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(act: Vec<f32>, grad: Vec<f32>, c: usize, h: usize, w: usize) -> LayerMaps {
        LayerMaps {
            channels: c,
            height: h,
            width: w,
            activation: act,
            gradient: grad,
        }
    }

    #[test]
    fn gradcam_weights_are_mean_gradients_and_relu_applies() {
        // Channel 0 weight +1, channel 1 weight -1 (mean of its gradients).
        let m = maps(
            vec![1.0, 2.0, 3.0, 4.0, 4.0, 0.0, 0.0, 0.0],
            vec![1.0, 1.0, 1.0, 1.0, -2.0, 0.0, 0.0, -2.0],
            2,
            2,
            2,
        );
        let c = cam(&m, CamMethod::GradCam);
        assert_eq!(c.values, vec![0.0, 2.0, 3.0, 4.0]);
        assert_eq!(c.peak(), Some((0.75, 0.75)));
    }

    #[test]
    fn method_names_parse() {
        assert_eq!(CamMethod::parse("Grad-CAM"), Some(CamMethod::GradCam));
        assert_eq!(
            CamMethod::parse("grad-cam++"),
            Some(CamMethod::GradCamPlusPlus)
        );
        assert_eq!(
            CamMethod::parse("gradcampp"),
            Some(CamMethod::GradCamPlusPlus)
        );
        assert_eq!(CamMethod::parse("LayerCAM"), Some(CamMethod::LayerCam));
        assert_eq!(CamMethod::parse("scorecam"), None);
    }

    #[test]
    fn layercam_uses_only_positive_gradients() {
        let m = maps(vec![1.0, 1.0, 1.0, 1.0], vec![2.0, -1.0, 0.0, 0.5], 1, 2, 2);
        assert_eq!(
            cam(&m, CamMethod::LayerCam).values,
            vec![2.0, 0.0, 0.0, 0.5]
        );
    }

    /// The contract's definition written out whole: resample the canvas, crop, resample to the
    /// plate, min-max normalise.
    fn native_by_definition(cam: &Cam, lb: &Letterbox, h: usize, w: usize) -> Vec<f32> {
        let canvas = bilinear(&cam.values, cam.height, cam.width, lb.size, lb.size);
        let mut crop = Vec::new();
        for y in lb.top..lb.top + lb.height {
            crop.extend_from_slice(
                &canvas[y * lb.size + lb.left..y * lb.size + lb.left + lb.width],
            );
        }
        let out = bilinear(&crop, lb.height, lb.width, h, w);
        let (min, max) = out
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        out.iter().map(|&v| (v - min) / (max - min)).collect()
    }

    #[test]
    fn row_by_row_heat_equals_the_whole_map_definition() {
        // Up- and down-sampling, odd sizes, portrait and landscape plates.
        let mut seed = 12345u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f32 / (1u64 << 31) as f32
        };
        for &(ch, cw, h, w, s) in &[
            (8, 8, 517, 389, 64),
            (16, 16, 1201, 1603, 128),
            (4, 4, 41, 29, 64),
            (32, 32, 90, 300, 256),
        ] {
            let cam = Cam {
                height: ch,
                width: cw,
                values: (0..ch * cw).map(|_| next()).collect(),
            };
            let lb = Letterbox::for_plate(h, w, s);
            let want = native_by_definition(&cam, &lb, h, w);
            let got = to_native(&cam, &lb, h, w);
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "{h}x{w}: {worst}");
            let (lo, hi) = got
                .iter()
                .fold((1f32, 0f32), |(l, u), &v| (l.min(v), u.max(v)));
            assert!(lo.abs() <= 1e-5 && (hi - 1.0).abs() <= 1e-5, "{lo} {hi}");
        }
    }

    #[test]
    fn bilinear_matches_half_pixel_convention() {
        // 2 -> 4 samples: positions -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let out = bilinear(&[0.0, 1.0], 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn empty_and_nan_maps_stay_zero() {
        let m = maps(vec![f32::NAN, 1.0, 1.0, 1.0], vec![-1.0; 4], 1, 2, 2);
        let c = cam(&m, CamMethod::GradCam);
        assert!(c.is_empty());
        let lb = Letterbox::for_plate(10, 10, 8);
        assert!(to_native(&c, &lb, 10, 10).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn native_map_is_normalised_and_keeps_the_peak_location() {
        let mut values = vec![0.0f32; 16 * 16];
        values[4 * 16 + 12] = 5.0; // row 4, column 12 of a square canvas
        let c = Cam {
            height: 16,
            width: 16,
            values,
        };
        let lb = Letterbox::for_plate(200, 200, 64);
        let native = to_native(&c, &lb, 200, 200);
        let (idx, &max) = native
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
            .unwrap();
        assert!((max - 1.0).abs() < 1e-3);
        let (py, px) = (idx / 200, idx % 200);
        assert!(
            (py as i32 - 59).abs() <= 7 && (px as i32 - 159).abs() <= 7,
            "{py},{px}"
        );
    }
}
