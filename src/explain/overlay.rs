//! Overlay PNGs: each layer's heat map blended on the windowed grayscale plate at native
//! resolution, and one montage per plate with the verdict and reasons written on it.

use super::colormap::Colormap;
use super::font::{draw_text, text_width};
use super::ExplainError;
use crate::decode::Plate;
use crate::fsutil::write_private;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use std::path::Path;

/// Display grayscale (0..255) of a plate: its VOI window when present, otherwise the 0.5/99.5
/// percentiles of the modality values; MONOCHROME1 inverted so bright means attenuating.
pub fn display_gray(plate: &Plate) -> Vec<u8> {
    let h = &plate.header;
    let modality = |v: i32| v as f64 * h.rescale_slope + h.rescale_intercept;
    let (lo, hi) = match h.window {
        Some((c, w)) => (c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0),
        None => {
            let n = plate.pixels.len();
            let mut s = plate.pixels.clone();
            let a = modality(*s.select_nth_unstable((0.005 * (n - 1) as f64) as usize).1);
            let b = modality(
                *s.select_nth_unstable((0.995 * (n - 1) as f64).ceil() as usize)
                    .1,
            );
            (a.min(b), a.max(b))
        }
    };
    let span = (hi - lo).max(1e-9);
    let invert = h.is_monochrome1();
    plate
        .pixels
        .iter()
        .map(|&v| {
            let t = ((modality(v) - lo) / span).clamp(0.0, 1.0);
            let t = if invert { 1.0 - t } else { t };
            (t * 255.0 + 0.5) as u8
        })
        .collect()
}

/// Blends a normalised heat map (0..1 per pixel) onto the gray image. Opacity follows the heat,
/// so cold regions show the plate untouched and the reader can still judge the anatomy.
pub fn blend(
    gray: &[u8],
    heat: &[f32],
    width: usize,
    height: usize,
    lut: &[[u8; 3]; 256],
    alpha: f32,
) -> RgbImage {
    let mut buf = Vec::with_capacity(width * height * 3);
    for (&g, &t) in gray.iter().zip(heat) {
        let c = lut[(t.clamp(0.0, 1.0) * 255.0 + 0.5) as usize];
        let a = alpha * t.clamp(0.0, 1.0);
        for ch in c {
            buf.push((g as f32 * (1.0 - a) + ch as f32 * a + 0.5) as u8);
        }
    }
    RgbImage::from_raw(width as u32, height as u32, buf).expect("buffer sized from dimensions")
}

pub fn gray_rgb(gray: &[u8], width: usize, height: usize) -> RgbImage {
    let buf = gray.iter().flat_map(|&g| [g, g, g]).collect();
    RgbImage::from_raw(width as u32, height as u32, buf).expect("buffer sized from dimensions")
}

/// Encodes with fast deflate: overlays are many and large, and size matters less than time.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), ExplainError> {
    let mut bytes = Vec::with_capacity(img.as_raw().len() / 2);
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| ExplainError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    write_private(path, &bytes).map_err(|e| ExplainError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// One montage panel: an image and the label above it.
pub struct Panel {
    pub label: String,
    pub image: RgbImage,
}

const BG: [u8; 3] = [24, 24, 28];
const FG: [u8; 3] = [235, 235, 235];
const RED: [u8; 3] = [255, 96, 80];
const GREEN: [u8; 3] = [120, 220, 120];

/// Lays panels side by side at a common height under a header with the verdict and reasons,
/// with a colour bar so the reader knows what hot means.
pub fn montage(
    panels: &[Panel],
    header: &[String],
    unusable: bool,
    lut: &[[u8; 3]; 256],
    panel_height: u32,
) -> RgbImage {
    let scale = 2;
    let line = 7 * scale + 6;
    let pad = 8u32;
    let thumbs: Vec<(String, RgbImage)> = panels
        .iter()
        .map(|p| {
            let h = panel_height.min(p.image.height()).max(1);
            let w = ((p.image.width() as u64 * h as u64) / p.image.height().max(1) as u64).max(1)
                as u32;
            let img = if h == p.image.height() {
                p.image.clone()
            } else {
                image::imageops::resize(&p.image, w, h, image::imageops::FilterType::Triangle)
            };
            (p.label.clone(), img)
        })
        .collect();
    let th = thumbs.iter().map(|t| t.1.height()).max().unwrap_or(1);
    let bar_w = 16u32;
    let bar_block = bar_w + pad + text_width("1.0", scale) + pad;
    let panels_w: u32 = thumbs
        .iter()
        .map(|(label, img)| img.width().max(text_width(label, scale)) + pad)
        .sum::<u32>()
        + pad;
    let header_w = header
        .iter()
        .map(|l| text_width(l, scale))
        .max()
        .unwrap_or(0)
        + 2 * pad;
    let width = (panels_w + bar_block).max(header_w);
    let header_h = pad + header.len() as u32 * line;
    let height = header_h + pad + line + th + pad;
    let mut out = RgbImage::from_pixel(width, height, image::Rgb(BG));
    for (i, text) in header.iter().enumerate() {
        let color = if i == 0 {
            if unusable {
                RED
            } else {
                GREEN
            }
        } else {
            FG
        };
        draw_text(&mut out, pad, pad + i as u32 * line, text, scale, color);
    }
    let mut x = pad;
    let y_label = header_h + pad;
    let y_img = y_label + line;
    for (label, img) in &thumbs {
        draw_text(&mut out, x, y_label, label, scale, FG);
        image::imageops::overlay(&mut out, img, x as i64, y_img as i64);
        x += img.width().max(text_width(label, scale)) + pad;
    }
    // Colour bar: hot at the top, as the labels say.
    let bx = x;
    for yy in 0..th {
        let t = 1.0 - yy as f32 / (th.max(2) - 1) as f32;
        let c = lut[(t * 255.0 + 0.5) as usize];
        for xx in 0..bar_w {
            if bx + xx < width {
                out.put_pixel(bx + xx, y_img + yy, image::Rgb(c));
            }
        }
    }
    draw_text(&mut out, bx + bar_w + 4, y_img, "1.0", scale, FG);
    draw_text(
        &mut out,
        bx + bar_w + 4,
        y_img + th.saturating_sub(7 * scale),
        "0",
        scale,
        FG,
    );
    out
}

/// The colour map's lookup table, built once per run rather than per plate.
pub fn lut_for(map: Colormap) -> [[u8; 3]; 256] {
    map.lut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Plate, PlateHeader};

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

    #[test]
    fn blend_leaves_cold_pixels_gray() {
        let lut = Colormap::Turbo.lut();
        let img = blend(&[100, 100], &[0.0, 1.0], 2, 1, &lut, 0.6);
        assert_eq!(img.get_pixel(0, 0).0, [100, 100, 100]);
        assert_ne!(img.get_pixel(1, 0).0, [100, 100, 100]);
    }

    #[test]
    fn montage_fits_every_panel_and_header() {
        let lut = Colormap::Turbo.lut();
        let panels = vec![
            Panel {
                label: "ORIGINAL".into(),
                image: RgbImage::new(300, 400),
            },
            Panel {
                label: "LAST GRAD-CAM".into(),
                image: RgbImage::new(300, 400),
            },
        ];
        let m = montage(
            &panels,
            &["UNUSABLE 0.97".into(), "SCRATCH".into()],
            true,
            &lut,
            200,
        );
        assert!(m.width() >= 2 * 150 + 16);
        assert!(m.height() >= 200);
    }
}
