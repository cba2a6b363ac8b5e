//! QR codes for pickup: renders a [`QrPayload`](pickline_engine::pickup_code::QrPayload)'s
//! text as an SVG image for the ready-for-pickup email and the customer's order page.
//!
//! Rendering lives in the sidecar, not the engine: the engine only produces the payload
//! text (`PICKLINE1:<store>:<order>:<code>`), and images are a presentation concern.
//!
//! The SVG is the `qrcode` crate's renderer output: one `<rect>` for the light background
//! and one `<path>` for all dark modules, with a `viewBox`, so it scales cleanly with CSS.
//! Each module is [`QR_MODULE_PX`] pixels and the quiet zone is the standard 4 modules on
//! every side, so the image is `(modules + 8) * QR_MODULE_PX` pixels square.

use pickline_engine::pickup_code::QR_PAYLOAD_LEN_MAX;
use qrcode::render::svg;
use qrcode::types::QrError;
use qrcode::{EcLevel, QrCode};
use thiserror::Error;

/// Size of one QR module in SVG user units (pixels at 100% zoom). 4 keeps the smallest
/// payloads at about 150 px, large enough to scan from a phone held up to a tablet.
pub const QR_MODULE_PX: u32 = 4;

/// Quiet zone around the symbol, in modules, as the QR standard requires (the `qrcode`
/// crate's value for normal QR codes).
pub const QR_QUIET_ZONE_MODULES: u32 = 4;

/// Error correction: medium (recovers about 15% damage), which tolerates screen glare and
/// smudges without making the symbol much denser.
const QR_EC_LEVEL: EcLevel = EcLevel::M;

/// Why a payload could not be rendered.
#[derive(Debug, Error)]
pub enum QrSvgError {
    /// The payload is longer than any valid pickup QR payload.
    #[error("QR payload is {len_bytes} bytes long; at most {QR_PAYLOAD_LEN_MAX} are rendered")]
    TooLong {
        /// Length of the payload in bytes.
        len_bytes: usize,
    },
    /// The QR encoder refused the payload.
    #[error("QR encoding failed: {0}")]
    Encode(#[from] QrError),
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

/// Renders `payload` as a square SVG QR code.
///
/// The payload length is bounded by the engine's [`QR_PAYLOAD_LEN_MAX`] so the work and the
/// image size per call are bounded. Same payload, same SVG: the output is deterministic.
pub fn qr_svg(payload: &str) -> Result<String, QrSvgError> {
    if payload.len() > QR_PAYLOAD_LEN_MAX {
        return Err(QrSvgError::TooLong {
            len_bytes: payload.len(),
        });
    }
    let code = QrCode::with_error_correction_level(payload.as_bytes(), QR_EC_LEVEL)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(QR_MODULE_PX, QR_MODULE_PX)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build())
}

/// Pixels per module of the PNG form: 6 keeps a short payload about 200 px wide, what
/// mail clients show without scaling.
pub const QR_PNG_MODULE_PX: u32 = 6;

/// Renders `payload` as a greyscale PNG QR code (the form mail clients show inline: many
/// do not render SVG). Same bounds and error correction as [`qr_svg`]; deterministic.
pub fn qr_png(payload: &str) -> Result<Vec<u8>, QrSvgError> {
    if payload.len() > QR_PAYLOAD_LEN_MAX {
        return Err(QrSvgError::TooLong {
            len_bytes: payload.len(),
        });
    }
    let code = QrCode::with_error_correction_level(payload.as_bytes(), QR_EC_LEVEL)?;
    let modules = code.width() as u32;
    let colors = code.to_colors();
    let side = (modules + 2 * QR_QUIET_ZONE_MODULES) * QR_PNG_MODULE_PX;
    let mut pixels = vec![0xffu8; (side * side) as usize];
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % modules, i as u32 / modules);
        let (x0, y0) = (
            (mx + QR_QUIET_ZONE_MODULES) * QR_PNG_MODULE_PX,
            (my + QR_QUIET_ZONE_MODULES) * QR_PNG_MODULE_PX,
        );
        for y in y0..y0 + QR_PNG_MODULE_PX {
            let row = (y * side) as usize;
            pixels[row + x0 as usize..row + (x0 + QR_PNG_MODULE_PX) as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| QrSvgError::Png(e.to_string()))?;
    w.write_image_data(&pixels)
        .map_err(|e| QrSvgError::Png(e.to_string()))?;
    w.finish().map_err(|e| QrSvgError::Png(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickline_engine::pickup_code::{PickupCode, QrPayload};

    /// Returns the value of attribute `name` on the `<svg>` element.
    fn svg_attribute<'a>(svg: &'a str, name: &str) -> Option<&'a str> {
        let element = &svg[svg.find("<svg ")?..];
        let element = &element[..element.find('>')?];
        let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
        let value = &element[start..];
        Some(&value[..value.find('"')?])
    }

    fn payload() -> String {
        let code = PickupCode::from_entropy([0x5a; 8]);
        QrPayload::new("TYO-01", "ord-42", code)
            .expect("valid ids")
            .encode()
    }

    #[test]
    fn svg_is_well_formed_and_sized_from_the_module_count() {
        let text = payload();
        let svg = qr_svg(&text).expect("renders");
        assert!(svg.starts_with("<?xml version=\"1.0\""), "{svg}");
        assert!(
            svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches('<').count(), svg.matches('>').count(), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<path").count(), 1);

        // The payload is 34 bytes; at error correction M a version 3 symbol (29 x 29
        // modules) is the smallest that holds it (version 2 holds 26 bytes), so the image
        // is (29 + 2 * 4) * 4 = 148 units square.
        assert_eq!(text.len(), 34);
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).expect("fits");
        assert_eq!(code.width(), 29);
        assert_eq!(svg_attribute(&svg, "width"), Some("148"));
        assert_eq!(svg_attribute(&svg, "height"), Some("148"));
        assert_eq!(svg_attribute(&svg, "viewBox"), Some("0 0 148 148"));

        // The path holds only move and line commands on integer coordinates, none outside
        // the symbol area (the quiet zone stays light).
        let path_start = svg.find(" d=\"").expect("path data") + 4;
        let path = &svg[path_start..];
        let path = &path[..path.find('"').expect("closing quote")];
        assert!(!path.is_empty());
        assert!(
            path.chars().all(|c| "MhvHV0123456789 ".contains(c)),
            "{path}"
        );
        let quiet = QR_QUIET_ZONE_MODULES * QR_MODULE_PX;
        for number in path
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
        {
            let value: u32 = number.parse().expect("integer");
            assert!(value <= 148 - quiet, "{value} in {path}");
        }
        for start in path.split('M').skip(1) {
            let mut coordinates = start.split(|c: char| !c.is_ascii_digit());
            let x: u32 = coordinates.next().and_then(|s| s.parse().ok()).expect("x");
            let y: u32 = coordinates.next().and_then(|s| s.parse().ok()).expect("y");
            assert!(
                x >= quiet && y >= quiet,
                "module at {x},{y} in the quiet zone"
            );
        }
    }

    #[test]
    fn rendering_is_deterministic_and_payload_dependent() {
        let text = payload();
        assert_eq!(qr_svg(&text).ok(), qr_svg(&text).ok());
        let other = text.replace("ord-42", "ord-43");
        assert_ne!(qr_svg(&text).ok(), qr_svg(&other).ok());
    }

    #[test]
    fn longest_payload_renders_and_longer_is_refused() {
        let longest = "A".repeat(QR_PAYLOAD_LEN_MAX);
        let svg = qr_svg(&longest).expect("longest payload renders");
        assert!(svg.ends_with("</svg>"));
        let too_long = "A".repeat(QR_PAYLOAD_LEN_MAX + 1);
        assert!(matches!(
            qr_svg(&too_long),
            Err(QrSvgError::TooLong { len_bytes }) if len_bytes == QR_PAYLOAD_LEN_MAX + 1
        ));
    }
}
