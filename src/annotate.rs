//! Evidence images: the frame with labelled boxes, written as JPEG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{FontVec, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;

use crate::detect::Detection;

/// Fonts tried for labels, CJK-capable first; `CGBOT_FONT` overrides.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
];

#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("cannot write evidence image {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

fn font() -> Option<&'static FontVec> {
    static FONT: OnceLock<Option<FontVec>> = OnceLock::new();
    FONT.get_or_init(|| {
        let configured = std::env::var("CGBOT_FONT").ok();
        let found = configured
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied())
            .find_map(|path| {
                let bytes = std::fs::read(path).ok()?;
                FontVec::try_from_vec(bytes).ok()
            });
        if found.is_none() {
            tracing::warn!("no font found (install fonts-dejavu-core or set CGBOT_FONT): boxes are drawn without labels");
        }
        found
    })
    .as_ref()
}

/// A distinct, stable colour per class.
fn colour(class: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 8] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ];
    Rgb(PALETTE[class % PALETTE.len()])
}

/// Draws each detection's box and `label score`. Labels sit above their box, or inside
/// its top or bottom edge when that spot is taken by an earlier (higher-scoring) label.
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    let thickness = (image.width().max(image.height()) / 400).max(2) as i32;
    let scale = PxScale::from((image.height() as f32 / 30.0).clamp(14.0, 40.0));
    for d in detections {
        let [x1, y1, x2, y2] = d.bbox.map(|v| v.round() as i32);
        for t in 0..thickness {
            let (w, h) = ((x2 - x1 - 2 * t).max(1), (y2 - y1 - 2 * t).max(1));
            let rect = Rect::at(x1 + t, y1 + t).of_size(w as u32, h as u32);
            draw_hollow_rect_mut(image, rect, colour(d.class));
        }
    }
    let Some(font) = font() else { return };
    let mut placed: Vec<Rect> = Vec::new();
    for d in detections {
        let [x1, y1, _, y2] = d.bbox.map(|v| v.round() as i32);
        let text = format!("{} {:.2}", d.label, d.score);
        let (tw, th) = text_size(scale, font, &text);
        let (lw, lh) = (tw + 6, th + 4);
        let candidates = [y1 - lh as i32, y1, y2 - lh as i32];
        let fits = |top: &i32| *top >= 0 && *top + lh as i32 <= image.height() as i32;
        let spot = |top: i32| Rect::at(x1, top).of_size(lw, lh);
        let top = candidates
            .iter()
            .copied()
            .filter(fits)
            .find(|&top| placed.iter().all(|r| r.intersect(spot(top)).is_none()))
            .unwrap_or(y1.max(0));
        let rect = spot(top);
        placed.push(rect);
        draw_filled_rect_mut(image, rect, colour(d.class));
        draw_text_mut(image, Rgb([0, 0, 0]), x1 + 3, top + 1, scale, font, &text);
    }
}

/// Writes the image as JPEG (quality 85), creating the directory.
pub fn save_jpeg(image: &RgbImage, path: &Path) -> Result<(), AnnotateError> {
    let fail = |reason: String| AnnotateError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(image)
        .map_err(|e| fail(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    // Written aside and renamed: a full disk leaves no empty or torn image under the name.
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = std::fs::File::create(&partial).and_then(|mut file| {
        file.write_all(&jpeg)?;
        file.sync_data()
    });
    match written.and_then(|()| std::fs::rename(&partial, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(fail(e.to_string()))
        }
    }
}

/// Draws a zone (normalised vertices) as a closed outline.
pub fn draw_zone(image: &mut RgbImage, vertices: &[[f64; 2]], colour: Rgb<u8>) {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let points: Vec<(f32, f32)> = vertices
        .iter()
        .map(|v| (v[0] as f32 * (w - 1.0), v[1] as f32 * (h - 1.0)))
        .collect();
    let thickness = (image.width().max(image.height()) / 400).max(2) as i32;
    for (i, &a) in points.iter().enumerate() {
        let b = points[(i + 1) % points.len()];
        for dx in -thickness / 2..=thickness / 2 {
            for dy in -thickness / 2..=thickness / 2 {
                let offset = |p: (f32, f32)| (p.0 + dx as f32, p.1 + dy as f32);
                imageproc::drawing::draw_line_segment_mut(image, offset(a), offset(b), colour);
            }
        }
    }
}

/// The box's region with a margin of a fifth of its size on each side, clipped.
pub fn crop(image: &RgbImage, bbox: [f32; 4]) -> RgbImage {
    let (bw, bh) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    let x1 = (bbox[0] - bw * 0.2).max(0.0) as u32;
    let y1 = (bbox[1] - bh * 0.2).max(0.0) as u32;
    let x2 = ((bbox[2] + bw * 0.2) as u32).min(image.width()).max(x1 + 1);
    let y2 = ((bbox[3] + bh * 0.2) as u32)
        .min(image.height())
        .max(y1 + 1);
    image::imageops::crop_imm(image, x1, y1, x2 - x1, y2 - y1).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_image_is_complete_and_leaves_nothing_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("C1/filed.jpg");
        save_jpeg(&RgbImage::from_pixel(8, 8, Rgb([200; 3])), &path).unwrap();
        assert_eq!(image::open(&path).unwrap().width(), 8);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("C1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["filed.jpg"]);
    }

    #[test]
    fn a_failed_save_leaves_neither_the_image_nor_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the image should go: the final rename fails.
        let path = dir.path().join("filed.jpg");
        std::fs::create_dir_all(path.join("in-the-way")).unwrap();
        let err = save_jpeg(&RgbImage::new(8, 8), &path).unwrap_err();
        assert!(err.to_string().contains("filed.jpg"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["filed.jpg"], "only the folder in the way");
    }
}
