//! The explain stage for one plate: a heat map per explained layer blended on the plate and
//! written as a PNG at native size, and one montage (the plate, each layer's map, the verdict
//! and the findings written on it) as a JPEG.

use super::overlay::{self, BlendTable, Panel};
use super::{cam, ExplainError, ExplainOptions, NativeHeat, PlateMap};
use crate::decode::preprocess::Letterbox;
use crate::fsutil::sanitize_component;
use crate::infer::{Inference, Judgement, ModelContract};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plate as it is drawn under the heat maps.
pub struct PlateImage<'a> {
    /// Display grayscale, `width x height`.
    pub gray: &'a [u8],
    pub width: usize,
    pub height: usize,
    /// Where the plate sits in the model input, to map heat maps back onto it.
    pub letterbox: &'a Letterbox,
}

/// What was written for a plate.
#[derive(Debug, Clone, Default)]
pub struct Overlays {
    /// Layer name to its overlay PNG.
    pub layers: BTreeMap<String, String>,
    /// The montage JPEG.
    pub montage: String,
    /// The montage's bytes as written, when asked for: what a rejection note's secondary
    /// capture embeds.
    pub montage_jpeg: Option<MontageJpeg>,
}

/// JPEG quality of the montage (the file, and the secondary capture a rejection note carries):
/// high enough that the heat-map colours, the plate under them and the text show no visible
/// blocking (about a tenth of the uncompressed size on the demo plates). The montage is a
/// summary picture at panel size; the per-layer overlays stay lossless PNGs at native size.
const MONTAGE_JPEG_QUALITY: i32 = 90;

/// The montage encoded as JPEG Baseline, with its size.
#[derive(Debug, Clone, PartialEq)]
pub struct MontageJpeg {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl MontageJpeg {
    pub fn encode(montage: &image::RgbImage) -> Result<MontageJpeg, String> {
        let bytes = crate::decode::jpeg::encode_rgb(
            montage.as_raw(),
            montage.width() as usize,
            montage.height() as usize,
            MONTAGE_JPEG_QUALITY,
        )?;
        Ok(MontageJpeg {
            bytes,
            width: montage.width(),
            height: montage.height(),
        })
    }
}

/// Draws overlays with one run's settings; the colour tables are built once per run.
pub struct Painter {
    opts: ExplainOptions,
    lut: [[u8; 3]; 256],
    blend: BlendTable,
}

/// Where a plate's overlays go: `<out>/overlays/<day>/<SOP UID>_<sha256 prefix>/`, or
/// `sha256-<longer prefix>` for a plate without a SOP Instance UID.
pub fn overlay_dir(out: &Path, sop_instance_uid: &str, sha256: &str) -> PathBuf {
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let name = if sop_instance_uid.trim().is_empty() {
        format!(
            "sha256-{}",
            sanitize_component(&sha256[..sha256.len().min(16)])
        )
    } else {
        let uid = sanitize_component(sop_instance_uid);
        format!("{uid}_{}", &sha256[..sha256.len().min(8)])
    };
    out.join("overlays").join(day).join(name)
}

impl Painter {
    pub fn new(opts: &ExplainOptions) -> Painter {
        let lut = overlay::lut_for(opts.colormap);
        let blend = BlendTable::new(&lut, opts.alpha);
        Painter {
            opts: opts.clone(),
            lut,
            blend,
        }
    }

    pub fn options(&self) -> &ExplainOptions {
        &self.opts
    }

    /// Writes each explained layer's overlay and the montage into `dir`; with `montage_jpeg`
    /// also returns the montage's JPEG bytes (the daemon's rejection note embeds them, which
    /// spares reading the file back).
    pub fn write_overlays(
        &self,
        dir: &Path,
        plate: &PlateImage<'_>,
        contract: &ModelContract,
        inference: &Inference,
        judgement: &Judgement,
        montage_jpeg: bool,
    ) -> Result<Overlays, ExplainError> {
        let cfg = &self.opts;
        let (w, h, gray, letterbox) = (plate.width, plate.height, plate.gray, plate.letterbox);
        // Montage panels are made at panel size from the start (heat maps sampled straight to
        // that size) rather than by shrinking native-size overlays.
        let (pw, ph) = overlay::panel_size(w, h, cfg.montage_height);
        let small_gray = overlay::shrink_raw::<1>(gray, w, h, pw, ph);
        let mut panels = vec![Panel {
            label: "ORIGINAL".into(),
            image: overlay::gray_rgb(&small_gray, pw, ph),
        }];
        let mut layers = BTreeMap::new();
        for (name, maps) in contract.layers.iter().zip(&inference.layers) {
            let map = cam(maps, cfg.method);
            // Drawn and encoded row by row: one row of heat and colour is all that is held.
            let plate_map = PlateMap::new(&map, letterbox);
            let heat = NativeHeat::new(&plate_map, h, w);
            let (mut tmp, mut heat_row) = (Vec::new(), vec![0f32; w]);
            let path = dir.join(format!("{}.png", sanitize_component(name)));
            overlay::save_png_rows(&path, w, h, |y, rgb| {
                heat.row(y, &mut tmp, &mut heat_row);
                self.blend
                    .blend_row(&gray[y * w..(y + 1) * w], &heat_row, rgb);
            })?;
            layers.insert(name.clone(), path.display().to_string());
            let empty = if map.is_empty() { " (EMPTY)" } else { "" };
            let small_heat = NativeHeat::new(&plate_map, ph, pw).collect();
            panels.push(Panel {
                label: format!("{} {}{}", name, cfg.method.label(), empty),
                image: self.blend.blend(&small_gray, &small_heat, pw, ph),
            });
        }
        let lines = montage_lines(contract, judgement);
        let unusable = judgement.verdict == crate::outcome::Verdict::Unusable;
        let m = overlay::montage(&panels, &lines, unusable, &self.lut, cfg.montage_height);
        // JPEG rather than PNG: the montage's deflate was a seventh of a scan's CPU, the JPEG
        // of the same picture under half of that, and the daemon's rejection note embeds these
        // very bytes instead of encoding the picture again.
        let montage = dir.join("montage.jpg");
        let jpeg = MontageJpeg::encode(&m).map_err(|reason| ExplainError::Encode {
            path: montage.display().to_string(),
            reason,
        })?;
        crate::fsutil::write_private_with(&montage, &jpeg.bytes, false).map_err(|source| {
            ExplainError::Write {
                path: montage.display().to_string(),
                source,
            }
        })?;
        let montage_jpeg = montage_jpeg.then_some(jpeg);
        Ok(Overlays {
            layers,
            montage: montage.display().to_string(),
            montage_jpeg,
        })
    }
}

/// The text written on the montage: the verdict, then the findings or the weak hint.
fn montage_lines(contract: &ModelContract, j: &Judgement) -> Vec<String> {
    let mut lines = vec![format!(
        "{} {:.2} (THRESHOLD {:.2})  {}",
        j.verdict.as_str().to_uppercase(),
        j.unusable_score,
        contract.threshold,
        contract.model_version
    )];
    if j.findings.is_empty() {
        // Say what the model leans to even below the reporting threshold: a reader of a
        // rejected plate wants a hint, clearly marked as weak.
        lines.push(match &j.likeliest {
            Some((name, score)) => format!(
                "NO TYPE ABOVE {:.2}; LIKELIEST {} {:.2}",
                contract.artifact_threshold, name, score
            ),
            None => "NO ARTIFACT TYPES IN THIS MODEL".into(),
        });
    } else {
        lines.push(
            j.findings
                .iter()
                .take(4)
                .map(|f| format!("{} {:.2}", f.artifact_type, f.score))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    lines
}
