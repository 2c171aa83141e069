//! Overlay PNGs: each layer's heat map blended on the windowed grayscale plate at native
//! resolution, and one montage per plate with the verdict and reasons written on it.

use super::colormap::Colormap;
use super::font::{draw_text, text_width};
use super::ExplainError;
use crate::fsutil::write_private_streamed;
use image::RgbImage;
use std::path::Path;

/// Precomputed blend of every (heat level, gray level) pair: opacity follows the heat, so cold
/// regions show the plate untouched and the reader can still judge the anatomy. Built once per
/// run; blending a plate is then one lookup per pixel.
pub struct BlendTable {
    table: Vec<[u8; 3]>,
}

impl BlendTable {
    pub fn new(lut: &[[u8; 3]; 256], alpha: f32) -> BlendTable {
        let mut table = Vec::with_capacity(256 * 256);
        for (heat, color) in lut.iter().enumerate() {
            let a = alpha * heat as f32 / 255.0;
            for g in 0..256 {
                let mix = |c: u8| (g as f32 * (1.0 - a) + c as f32 * a + 0.5) as u8;
                table.push([mix(color[0]), mix(color[1]), mix(color[2])]);
            }
        }
        BlendTable { table }
    }

    /// Blends a normalised heat map (0..1 per pixel) onto the gray plate.
    pub fn blend(&self, gray: &[u8], heat: &[f32], width: usize, height: usize) -> RgbImage {
        let mut buf = vec![0u8; width * height * 3];
        self.blend_row(gray, heat, &mut buf);
        RgbImage::from_raw(width as u32, height as u32, buf).expect("buffer sized from dimensions")
    }

    /// As [`BlendTable::blend`] for any run of pixels (a row), into `out` (3 bytes a pixel).
    pub fn blend_row(&self, gray: &[u8], heat: &[f32], out: &mut [u8]) {
        for ((px, &g), &t) in out.chunks_exact_mut(3).zip(gray).zip(heat) {
            let level = (t.clamp(0.0, 1.0) * 255.0 + 0.5) as usize;
            px.copy_from_slice(&self.table[(level << 8) | g as usize]);
        }
    }
}

pub fn gray_rgb(gray: &[u8], width: usize, height: usize) -> RgbImage {
    let buf = gray.iter().flat_map(|&g| [g, g, g]).collect();
    RgbImage::from_raw(width as u32, height as u32, buf).expect("buffer sized from dimensions")
}

/// Encodes `height` rows of `width` RGB pixels, row `y` drawn by `draw(y, row)`, as a PNG at
/// `path` (fast deflate, Sub filter), streamed into the file: neither the picture nor its
/// encoding is ever held whole, which keeps a plate-sized buffer per layer out of the
/// allocator's churn.
pub fn save_png_rows(
    path: &Path,
    width: usize,
    height: usize,
    mut draw: impl FnMut(usize, &mut [u8]),
) -> Result<(), ExplainError> {
    let mut encode_error = None;
    let mut encode = |out: &mut dyn std::io::Write| -> Result<(), png::EncodingError> {
        let mut enc = png::Encoder::new(out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        enc.set_filter(png::Filter::Sub);
        let mut header = enc.write_header()?;
        let mut stream = header.stream_writer()?;
        let mut row = vec![0u8; width * 3];
        for y in 0..height {
            draw(y, &mut row);
            std::io::Write::write_all(&mut stream, &row)?;
        }
        stream.finish()
    };
    let written = write_private_streamed(path, false, |out| {
        encode(out).map_err(|e| match e {
            png::EncodingError::IoError(io) => io,
            other => {
                let msg = other.to_string();
                encode_error = Some(msg.clone());
                std::io::Error::other(msg)
            }
        })
    });
    match (written, encode_error) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(reason)) => Err(ExplainError::Encode {
            path: path.display().to_string(),
            reason,
        }),
        (Err(source), None) => Err(ExplainError::Write {
            path: path.display().to_string(),
            source,
        }),
    }
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
    // Panels are normally made at panel size already; only a larger one is shrunk (a copy).
    let thumbs: Vec<(&str, std::borrow::Cow<'_, RgbImage>)> = panels
        .iter()
        .map(|p| {
            let h = panel_height.min(p.image.height()).max(1);
            let w = ((p.image.width() as u64 * h as u64) / p.image.height().max(1) as u64).max(1)
                as u32;
            let img = if h == p.image.height() {
                std::borrow::Cow::Borrowed(&p.image)
            } else {
                std::borrow::Cow::Owned(shrink(&p.image, w, h))
            };
            (p.label.as_str(), img)
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
        paste(&mut out, img, x, y_img);
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

/// Area-average downscale of interleaved 8-bit samples (`C` per pixel): each output pixel is
/// the mean of the source box it covers. Several times faster than a filtered resize and as
/// good when only shrinking; `C` is a constant so the per-pixel loop has a fixed width.
pub fn shrink_raw<const C: usize>(raw: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    let x_of: Vec<(usize, usize)> = (0..ow)
        .map(|x| (x * w / ow, ((x + 1) * w / ow).max(x * w / ow + 1).min(w)))
        .collect();
    let mut out = Vec::with_capacity(ow * oh * C);
    for y in 0..oh {
        let (y0, y1) = (y * h / oh, ((y + 1) * h / oh).max(y * h / oh + 1).min(h));
        for &(x0, x1) in &x_of {
            let mut acc = [0u32; C];
            for yy in y0..y1 {
                for px in raw[(yy * w + x0) * C..(yy * w + x1) * C].chunks_exact(C) {
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += v as u32;
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(acc.iter().map(|&a| ((a + n / 2) / n) as u8));
        }
    }
    out
}

/// Copies `src` into `dst` with its top left corner at (`x`, `y`), clipped to `dst`.
fn paste(dst: &mut RgbImage, src: &RgbImage, x: u32, y: u32) {
    let (dw, sw) = (dst.width() as usize, src.width() as usize);
    let w = sw.min(dw.saturating_sub(x as usize)) * 3;
    let rows = src.height().min(dst.height().saturating_sub(y)) as usize;
    let (d, s): (&mut [u8], &[u8]) = (dst, src.as_raw());
    for r in 0..rows {
        let at = ((y as usize + r) * dw + x as usize) * 3;
        d[at..at + w].copy_from_slice(&s[r * sw * 3..r * sw * 3 + w]);
    }
}

fn shrink(src: &RgbImage, ow: u32, oh: u32) -> RgbImage {
    let raw = shrink_raw::<3>(
        src.as_raw(),
        src.width() as usize,
        src.height() as usize,
        ow as usize,
        oh as usize,
    );
    RgbImage::from_raw(ow, oh, raw).expect("sized")
}

/// Montage panel size for a plate: `panel_height` tall (never enlarged), aspect kept.
pub fn panel_size(w: usize, h: usize, panel_height: u32) -> (usize, usize) {
    let ph = (panel_height as usize).min(h).max(1);
    ((w * ph / h.max(1)).max(1), ph)
}

/// The colour map's lookup table, built once per run rather than per plate.
pub fn lut_for(map: Colormap) -> [[u8; 3]; 256] {
    map.lut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_averages_boxes() {
        let mut img = RgbImage::new(4, 2);
        img.put_pixel(0, 0, image::Rgb([200, 0, 0]));
        img.put_pixel(1, 1, image::Rgb([200, 0, 0]));
        let s = shrink(&img, 2, 1);
        assert_eq!(s.get_pixel(0, 0).0, [100, 0, 0]);
        assert_eq!(s.get_pixel(1, 0).0, [0, 0, 0]);
    }

    #[test]
    fn paste_places_rows_and_clips_at_the_edges() {
        let mut dst = RgbImage::from_pixel(5, 4, image::Rgb([1, 1, 1]));
        let src = RgbImage::from_fn(3, 3, |x, y| image::Rgb([10 * x as u8, 10 * y as u8, 7]));
        paste(&mut dst, &src, 3, 2);
        assert_eq!(dst.get_pixel(3, 2).0, [0, 0, 7]);
        assert_eq!(dst.get_pixel(4, 3).0, [10, 10, 7]);
        assert_eq!(dst.get_pixel(2, 2).0, [1, 1, 1]);
        assert_eq!(dst.get_pixel(3, 1).0, [1, 1, 1]);
    }

    #[test]
    fn blend_leaves_cold_pixels_gray() {
        let lut = Colormap::Turbo.lut();
        let img = BlendTable::new(&lut, 0.6).blend(&[100, 100], &[0.0, 1.0], 2, 1);
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
