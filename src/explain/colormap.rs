//! Colour maps for heat maps. Turbo is the default: perceptually ordered without jet's false
//! bands; inferno and viridis suit colour-blind readers; jet is there because people ask for it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    #[default]
    Turbo,
    Inferno,
    Viridis,
    Jet,
}

impl Colormap {
    pub fn parse(s: &str) -> Option<Colormap> {
        match s.to_ascii_lowercase().as_str() {
            "turbo" => Some(Colormap::Turbo),
            "inferno" => Some(Colormap::Inferno),
            "viridis" => Some(Colormap::Viridis),
            "jet" => Some(Colormap::Jet),
            _ => None,
        }
    }

    /// A 256-entry lookup table, so per-pixel colouring is one index.
    pub fn lut(&self) -> [[u8; 3]; 256] {
        let mut lut = [[0u8; 3]; 256];
        for (i, entry) in lut.iter_mut().enumerate() {
            let t = i as f64 / 255.0;
            let (r, g, b) = match self {
                Colormap::Turbo => turbo(t),
                Colormap::Inferno => stops(t, &INFERNO),
                Colormap::Viridis => stops(t, &VIRIDIS),
                Colormap::Jet => jet(t),
            };
            *entry = [to_u8(r), to_u8(g), to_u8(b)];
        }
        lut
    }
}

fn to_u8(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}

/// Turbo through its published quintic fit (Mikhailov, 2019), evaluated with Horner's rule.
fn turbo(t: f64) -> (f64, f64, f64) {
    let horner = |c: [f64; 6]| c.iter().rev().fold(0.0, |acc, &k| acc * t + k);
    (
        horner([
            0.13572138,
            4.61539260,
            -42.66032258,
            132.13108234,
            -152.94239396,
            59.28637943,
        ]),
        horner([
            0.09140261,
            2.19418839,
            4.84296658,
            -14.18503333,
            4.27729857,
            2.82956604,
        ]),
        horner([
            0.10667330,
            12.64194608,
            -60.58204836,
            110.36276771,
            -89.90310912,
            27.34824973,
        ]),
    )
}

fn jet(t: f64) -> (f64, f64, f64) {
    let f = |c: f64| (1.5 - (4.0 * t - c).abs()).clamp(0.0, 1.0);
    (f(3.0), f(2.0), f(1.0))
}

/// Ten evenly spaced samples of each matplotlib map, linearly interpolated.
const INFERNO: [u32; 10] = [
    0x000004, 0x1B0C41, 0x4A0C6B, 0x781C6D, 0xA52C60, 0xCF4446, 0xED6925, 0xFB9B06, 0xF7D13D,
    0xFCFFA4,
];
const VIRIDIS: [u32; 10] = [
    0x440154, 0x482878, 0x3E4A89, 0x31688E, 0x26828E, 0x1F9E89, 0x35B779, 0x6DCD59, 0xB4DE2C,
    0xFDE725,
];

fn stops(t: f64, s: &[u32]) -> (f64, f64, f64) {
    let pos = t.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let i = (pos.floor() as usize).min(s.len() - 2);
    let f = pos - i as f64;
    let ch = |c: u32, shift: u32| ((c >> shift) & 0xFF) as f64 / 255.0;
    let mix = |shift| ch(s[i], shift) * (1.0 - f) + ch(s[i + 1], shift) * f;
    (mix(16), mix(8), mix(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luminance(c: [u8; 3]) -> f64 {
        0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64
    }

    #[test]
    fn perceptual_maps_rise_in_lightness() {
        for map in [Colormap::Inferno, Colormap::Viridis] {
            let lut = map.lut();
            assert!(
                luminance(lut[255]) > luminance(lut[128])
                    && luminance(lut[128]) > luminance(lut[0])
            );
        }
    }

    #[test]
    fn turbo_runs_dark_to_bright_green_to_red() {
        let lut = Colormap::Turbo.lut();
        assert!(luminance(lut[0]) < 40.0, "starts dark: {:?}", lut[0]);
        assert!(
            lut[64][2] > lut[64][0],
            "blue in the lower quarter: {:?}",
            lut[64]
        );
        assert!(lut[128][1] > 200, "middle is bright green: {:?}", lut[128]);
        assert!(
            lut[255][0] > lut[255][1] && lut[255][0] > lut[255][2],
            "ends red: {:?}",
            lut[255]
        );
    }

    #[test]
    fn jet_endpoints() {
        let lut = Colormap::Jet.lut();
        assert_eq!(lut[0], [0, 0, 128]);
        assert_eq!(lut[255], [128, 0, 0]);
    }
}
