//! Evidence images: the frame with one labelled box per object, a caption band under
//! the picture, written as JPEG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontVec, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_rect_mut, draw_hollow_rect_mut, draw_line_segment_mut, draw_text_mut, text_size,
};
use imageproc::rect::Rect;

use crate::detect::nms::iou;
use crate::detect::Detection;

/// Fonts tried for labels and captions, CJK-capable first; `CGBOT_FONT` overrides.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
];

/// Boxes of different labels overlapping at least this much are one object the model
/// scored under two labels (a van as truck 0.72 and bus 0.41: NMS is class-aware, so it
/// keeps both). A person beside a car or on a bicycle overlaps its box far less.
pub const SAME_OBJECT_IOU: f32 = 0.6;

/// The case's box: the violation, in a colour no class has.
pub const VIOLATION_COLOUR: Rgb<u8> = Rgb([230, 25, 75]);

/// The place a case's object left, on the after-image: neutral light and dark grey dashes,
/// visible on a bright or a dark street and not read as a violation.
pub const FORMER_PLACE_COLOURS: [Rgb<u8>; 2] = [Rgb([235, 235, 235]), Rgb([70, 70, 70])];

/// The smallest close-up, in pixels each way. Twice a small box (a car 60 px long far down
/// the street) is a thumbnail nobody can read; 320 px keeps the object's surroundings and
/// stays legible at 100 % in the console, and a 1080p main-stream box of 160 px or more
/// gets its doubled size anyway. No crop adds pixels the camera did not record: the plate
/// is as sharp as the stream the picture came from (the main stream where there is one).
pub const CROP_MIN: u32 = 320;

/// The caption band: light text on near-black, apart from any street.
const CAPTION_BACKGROUND: Rgb<u8> = Rgb([20, 20, 20]);
const CAPTION_TEXT: Rgb<u8> = Rgb([255, 255, 255]);

#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("cannot write evidence image {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read an evidence image: {0}")]
    Read(String),
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
                Some((path, FontVec::try_from_vec(bytes).ok()?))
            });
        match &found {
            None => tracing::warn!(
                "no font found (install fonts-wqy-microhei or set CGBOT_FONT): evidence images have boxes without labels and no caption"
            ),
            // Glyph 0 is the "missing" box.
            Some((path, font)) if font.glyph_id('中').0 == 0 => tracing::warn!(
                font = path,
                "the font has no Chinese characters: they show as boxes in labels and captions (install fonts-wqy-microhei or set CGBOT_FONT)"
            ),
            Some(_) => {}
        }
        found.map(|(_, font)| font)
    })
    .as_ref()
}

/// A distinct, stable colour per class; none is the violation's red or the zones' yellow.
fn colour(class: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 8] = [
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ];
    Rgb(PALETTE[class % PALETTE.len()])
}

/// One object to outline: its box, colour and label.
#[derive(Debug, Clone, PartialEq)]
pub struct Outline {
    pub bbox: [f32; 4],
    pub colour: Rgb<u8>,
    pub label: String,
    /// A place rather than an object: dashed, in [`FORMER_PLACE_COLOURS`].
    pub dashed: bool,
}

/// One outline per object, best score first: detections of different labels overlapping
/// by [`SAME_OBJECT_IOU`] are one object, outlined once in its best label's colour and
/// labelled `truck 0.72 (bus 0.41)`.
pub fn outlines(detections: &[Detection]) -> Vec<Outline> {
    let mut by_score: Vec<&Detection> = detections.iter().collect();
    by_score.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut objects: Vec<(&Detection, Vec<&Detection>)> = Vec::new();
    for d in by_score {
        match objects
            .iter_mut()
            .find(|(best, _)| iou(&best.bbox, &d.bbox) >= SAME_OBJECT_IOU)
        {
            Some((_, others)) => others.push(d),
            None => objects.push((d, Vec::new())),
        }
    }
    objects
        .into_iter()
        .map(|(best, others)| {
            let mut label = format!("{} {:.2}", best.label, best.score);
            let others: Vec<String> = others
                .iter()
                .filter(|o| o.label != best.label)
                .map(|o| format!("{} {:.2}", o.label, o.score))
                .collect();
            if !others.is_empty() {
                label = format!("{label} ({})", others.join(", "));
            }
            Outline {
                bbox: best.bbox,
                colour: colour(best.class),
                label,
                dashed: false,
            }
        })
        .collect()
}

/// Draws each detection's box and label, one box per object (see [`outlines`]).
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    draw_outlines(image, &outlines(detections));
}

/// Line width of boxes and zones: 2 px, more on large pictures.
fn thickness(image: &RgbImage) -> i32 {
    (image.width().max(image.height()) / 400).max(2) as i32
}

/// Draws the outlines, the first on top, and their labels. Labels sit above their box,
/// or inside its top or bottom edge when that spot is taken by an earlier label.
pub fn draw_outlines(image: &mut RgbImage, outlines: &[Outline]) {
    let thickness = thickness(image);
    for o in outlines.iter().rev() {
        let [x1, y1, x2, y2] = o.bbox.map(|v| v.round() as i32);
        if o.dashed {
            draw_dashed_rect(image, [x1, y1, x2, y2], (thickness / 2).max(1));
            continue;
        }
        for t in 0..thickness {
            let (w, h) = ((x2 - x1 - 2 * t).max(1), (y2 - y1 - 2 * t).max(1));
            let rect = Rect::at(x1 + t, y1 + t).of_size(w as u32, h as u32);
            draw_hollow_rect_mut(image, rect, o.colour);
        }
    }
    let Some(font) = font() else { return };
    let scale = PxScale::from((image.height() as f32 / 30.0).clamp(14.0, 40.0));
    let mut placed: Vec<Rect> = Vec::new();
    for o in outlines {
        let [x1, y1, _, y2] = o.bbox.map(|v| v.round() as i32);
        let (tw, th) = text_size(scale, font, &o.label);
        let (lw, lh) = (tw + 6, th + 4);
        // Kept inside the picture on the right too: a box at the edge has its label.
        let x1 = x1.min(image.width() as i32 - lw as i32).max(0);
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
        let background = if o.dashed {
            FORMER_PLACE_COLOURS[0]
        } else {
            o.colour
        };
        draw_filled_rect_mut(image, rect, background);
        draw_text_mut(
            image,
            Rgb([0, 0, 0]),
            x1 + 3,
            top + 1,
            scale,
            font,
            &o.label,
        );
    }
}

/// A rectangle of alternating light and dark dashes, `width` px wide inside its edge.
fn draw_dashed_rect(image: &mut RgbImage, [x1, y1, x2, y2]: [i32; 4], width: i32) {
    let dash = (4 * width).max(6);
    for t in 0..width {
        let corners = [
            (x1 + t, y1 + t),
            (x2 - t, y1 + t),
            (x2 - t, y2 - t),
            (x1 + t, y2 - t),
        ];
        for (i, &(ax, ay)) in corners.iter().enumerate() {
            let (bx, by) = corners[(i + 1) % 4];
            let (sx, sy) = ((bx - ax).signum(), (by - ay).signum());
            for k in 0..=(bx - ax).abs().max((by - ay).abs()) {
                let (x, y) = (ax + sx * k, ay + sy * k);
                if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
                    let colour = FORMER_PLACE_COLOURS[(k / dash) as usize % 2];
                    image.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    }
}

/// Splits `text` into lines at most `max_width` wide by `measure`: between words where
/// it can (runs of spaces inside a line are kept), between characters inside a word wider
/// than a line (Chinese has no spaces).
fn wrap(text: &str, max_width: u32, measure: impl Fn(&str) -> u32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut push = |line: &mut String| lines.push(std::mem::take(line).trim_end().to_string());
    for word in text.split(' ') {
        if line.is_empty() && word.is_empty() {
            continue;
        }
        let joined = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if measure(&joined) <= max_width {
            line = joined;
            continue;
        }
        if !line.is_empty() {
            push(&mut line);
        }
        for c in word.chars() {
            line.push(c);
            if measure(&line) > max_width && line.chars().count() > 1 {
                line.pop();
                push(&mut line);
                line.push(c);
            }
        }
    }
    if !line.trim_end().is_empty() {
        push(&mut line);
    }
    lines
}

/// How a caption band under a picture `width` px wide is set.
#[derive(Debug, Clone, PartialEq)]
struct CaptionLayout {
    /// Text height in px: about 48 Latin characters a line, 14 to 40 px.
    scale: f32,
    margin: u32,
    line_height: u32,
    /// The caption's lines, wrapped to the width.
    lines: Vec<String>,
    /// The band's height: the lines and a margin above and below.
    height: u32,
}

fn caption_layout(font: &FontVec, width: u32, lines: &[String]) -> CaptionLayout {
    let scale = (width as f32 / 48.0).clamp(14.0, 40.0);
    let margin = (scale * 0.5).ceil() as u32;
    let line_height = (scale * 1.3).ceil() as u32;
    let room = width.saturating_sub(2 * margin).max(1);
    let lines: Vec<String> = lines
        .iter()
        .flat_map(|line| wrap(line, room, |t| text_size(PxScale::from(scale), font, t).0))
        .collect();
    let height = if lines.is_empty() {
        0
    } else {
        lines.len() as u32 * line_height + 2 * margin
    };
    CaptionLayout {
        scale,
        margin,
        line_height,
        lines,
        height,
    }
}

/// `picture` with a band under it holding `lines`, each wrapped to the picture's width,
/// and the band's height; without a font (warned about once) the picture alone, and 0.
pub fn with_caption(picture: &RgbImage, lines: &[String]) -> (RgbImage, u32) {
    let Some(font) = font() else {
        return (picture.clone(), 0);
    };
    let layout = caption_layout(font, picture.width(), lines);
    let (width, height) = picture.dimensions();
    let mut image = RgbImage::from_pixel(width, height + layout.height, CAPTION_BACKGROUND);
    image::imageops::replace(&mut image, picture, 0, 0);
    for (i, line) in layout.lines.iter().enumerate() {
        let top = height + layout.margin + i as u32 * layout.line_height;
        draw_text_mut(
            &mut image,
            CAPTION_TEXT,
            layout.margin as i32,
            top as i32,
            PxScale::from(layout.scale),
            font,
            line,
        );
    }
    (image, layout.height)
}

/// The picture of an evidence JPEG whose caption band is `caption_height` px high.
pub fn without_caption(jpeg: &[u8], caption_height: u32) -> Result<Vec<u8>, AnnotateError> {
    if caption_height == 0 {
        return Ok(jpeg.to_vec());
    }
    let image = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .map_err(|e| AnnotateError::Read(e.to_string()))?
        .to_rgb8();
    let height = image.height().saturating_sub(caption_height).max(1);
    let picture = image::imageops::crop_imm(&image, 0, 0, image.width(), height).to_image();
    encode_jpeg(&picture, EVIDENCE_QUALITY).map_err(AnnotateError::Read)
}

/// `image` as a JPEG of `quality`, 4:2:0. Encoded with `jpeg-encoder` (its AVX2 path
/// where the CPU has one): several times faster than the `image` crate's encoder, which
/// took most of the filing thread's CPU when evidence of many cases was drawn at once.
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = jpeg_size(image.dimensions())?;
    encode_with(quality, image.as_raw().len() / 8, |encoder| {
        encoder.encode(image.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
    })
}

/// Rows handed over by `image` (e.g. YCbCr planes, with no RGB in between) as a JPEG of
/// `quality`, 4:2:0.
pub fn encode_jpeg_rows(
    image: impl jpeg_encoder::ImageBuffer,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let pixels = usize::from(image.width()) * usize::from(image.height());
    encode_with(quality, pixels * 3 / 8, |encoder| {
        encoder.encode_image(image)
    })
}

/// A picture's size as JPEG's 16-bit sides.
pub fn jpeg_size((w, h): (u32, u32)) -> Result<(u16, u16), String> {
    match (u16::try_from(w), u16::try_from(h)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(format!(
            "a {w} × {h} picture is beyond JPEG's 65,535 pixels a side"
        )),
    }
}

fn encode_with(
    quality: u8,
    capacity: usize,
    encode: impl FnOnce(jpeg_encoder::Encoder<&mut Vec<u8>>) -> Result<(), jpeg_encoder::EncodingError>,
) -> Result<Vec<u8>, String> {
    let mut jpeg = Vec::with_capacity(capacity);
    let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, quality);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encode(encoder).map_err(|e| e.to_string())?;
    Ok(jpeg)
}

/// Evidence quality: boxes, plates and captions stay legible.
const EVIDENCE_QUALITY: u8 = 85;

/// Writes the image as JPEG (quality 85), creating the directory.
pub fn save_jpeg(image: &RgbImage, path: &Path) -> Result<(), AnnotateError> {
    let fail = |reason: String| AnnotateError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let jpeg = encode_jpeg(image, EVIDENCE_QUALITY).map_err(fail)?;
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
    let thickness = thickness(image);
    for (i, &a) in points.iter().enumerate() {
        let b = points[(i + 1) % points.len()];
        for dx in -thickness / 2..=thickness / 2 {
            for dy in -thickness / 2..=thickness / 2 {
                let offset = |p: (f32, f32)| (p.0 + dx as f32, p.1 + dy as f32);
                draw_line_segment_mut(image, offset(a), offset(b), colour);
            }
        }
    }
}

/// Where the close-up of `bbox` lies in a picture of `size` (width, height), as (x, y,
/// width, height): centred on the box, twice its size each way and at least [`CROP_MIN`],
/// moved rather than cut to stay inside the picture (no larger than it).
pub fn crop_region(bbox: [f32; 4], size: (u32, u32)) -> (u32, u32, u32, u32) {
    let axis = |low: f32, high: f32, room: u32| {
        let wanted = ((high - low).max(0.0) * 2.0).ceil().max(CROP_MIN as f32);
        let length = (wanted as u32).clamp(1, room.max(1));
        let start = ((low + high) / 2.0 - length as f32 / 2.0).round();
        (
            start.clamp(0.0, (room.max(1) - length) as f32) as u32,
            length,
        )
    };
    let (x, width) = axis(bbox[0], bbox[2], size.0);
    let (y, height) = axis(bbox[1], bbox[3], size.1);
    (x, y, width, height)
}

/// The close-up of `bbox` (see [`crop_region`]).
pub fn crop(image: &RgbImage, bbox: [f32; 4]) -> RgbImage {
    let (x, y, width, height) = crop_region(bbox, image.dimensions());
    image::imageops::crop_imm(image, x, y, width, height).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(label: &str, class: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            label: label.into(),
            class,
            score,
            bbox,
        }
    }

    fn test_font() -> &'static FontVec {
        font().expect("a font for labels and captions (make setup installs them)")
    }

    #[test]
    fn one_object_under_two_labels_is_one_outline_with_the_best_label() {
        let van = [520.0, 213.0, 640.0, 337.0];
        let detections = [
            detection("bus", 5, 0.41, [524.0, 210.0, 640.0, 340.0]),
            detection("truck", 7, 0.72, van),
            // Beside the van, overlapping it a little: another object.
            detection("person", 0, 0.66, [600.0, 250.0, 660.0, 400.0]),
        ];
        let drawn = outlines(&detections);
        let labels: Vec<&str> = drawn.iter().map(|o| o.label.as_str()).collect();
        assert_eq!(labels, ["truck 0.72 (bus 0.41)", "person 0.66"]);
        assert_eq!((drawn[0].bbox, drawn[0].colour), (van, colour(7)));
        assert!(drawn.iter().all(|o| o.colour != VIOLATION_COLOUR));
    }

    #[test]
    fn text_wraps_between_words_and_inside_words_wider_than_a_line() {
        let ten_px_a_char = |t: &str| 10 * t.chars().count() as u32;
        assert_eq!(
            wrap("camera cam-7  street=3301", 120, ten_px_a_char),
            ["camera cam-7", "street=3301"]
        );
        assert_eq!(
            wrap("cam-7  street=3301", 200, ten_px_a_char),
            ["cam-7  street=3301"]
        );
        assert_eq!(
            wrap("地址 演示路一号东侧人行道", 60, ten_px_a_char),
            ["地址", "演示路一号东", "侧人行道"]
        );
        assert!(wrap("", 60, ten_px_a_char).is_empty());
        // A line narrower than one character still gets every character, one a line.
        assert_eq!(wrap("ab", 5, ten_px_a_char), ["a", "b"]);
    }

    #[test]
    fn the_caption_band_grows_with_the_width_and_wraps_on_close_ups() {
        let font = test_font();
        let lines = [
            "2026-12-01 10:20:30 +08:00  案件 C3f2a9e01b".to_string(),
            "摄像头 demo-street-01  演示路口 东侧 (demo street, east side)".to_string(),
        ];
        let hd = caption_layout(font, 1920, &lines);
        assert_eq!(hd.scale, 40.0);
        assert_eq!(hd.lines.len(), 2, "{:?}", hd.lines);
        assert_eq!(hd.height, 2 * hd.line_height + 2 * hd.margin);
        let close_up = caption_layout(font, CROP_MIN, &lines);
        assert_eq!(close_up.scale, 14.0);
        assert!(close_up.lines.len() > 2, "{:?}", close_up.lines);
        let room = CROP_MIN - 2 * close_up.margin;
        for line in &close_up.lines {
            assert!(
                text_size(PxScale::from(14.0), font, line).0 <= room,
                "{line}"
            );
        }
        // Every character is kept, only spaces become line breaks.
        let joined: String = close_up.lines.concat().split_whitespace().collect();
        let wanted: String = lines.concat().split_whitespace().collect();
        assert_eq!(joined, wanted);
        assert_eq!(caption_layout(font, 640, &[]).height, 0);
    }

    #[test]
    fn the_caption_goes_under_the_picture_and_can_be_cut_off_again() {
        test_font();
        let picture = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 3, y as u8 * 5, 90]));
        let lines = ["2026-12-01 10:20:30 +08:00".to_string()];
        let (captioned, band) = with_caption(&picture, &lines);
        assert!(band >= 20, "{band}");
        assert_eq!(captioned.dimensions(), (64, 48 + band));
        let top = image::imageops::crop_imm(&captioned, 0, 0, 64, 48).to_image();
        assert_eq!(top, picture, "the picture is not covered");
        let band_pixels = (0..64).flat_map(|x| (48..48 + band).map(move |y| (x, y)));
        let text = band_pixels
            .filter(|&(x, y)| captioned.get_pixel(x, y) != &CAPTION_BACKGROUND)
            .count();
        assert!(text > 30, "the band has text: {text} px");

        let jpeg = encode_jpeg(&captioned, EVIDENCE_QUALITY).unwrap();
        let cut = image::load_from_memory(&without_caption(&jpeg, band).unwrap()).unwrap();
        assert_eq!((cut.width(), cut.height()), (64, 48));
        assert_eq!(without_caption(&jpeg, 0).unwrap(), jpeg);
        assert!(matches!(
            without_caption(b"not a jpeg", band),
            Err(AnnotateError::Read(_))
        ));
    }

    #[test]
    fn a_close_up_is_twice_the_box_at_least_320_px_and_moved_inside_the_picture() {
        let hd = (1920, 1080);
        // A van 400×300 px in the middle: twice its size, centred on it.
        assert_eq!(
            crop_region([800.0, 400.0, 1200.0, 700.0], hd),
            (600, 250, 800, 600)
        );
        // A distant car of 60×40 px: the 320 px minimum, centred.
        assert_eq!(
            crop_region([930.0, 520.0, 990.0, 560.0], hd),
            (800, 380, 320, 320)
        );
        // At the right and bottom edges: moved in, not cut.
        assert_eq!(
            crop_region([1800.0, 1000.0, 1920.0, 1080.0], hd),
            (1600, 760, 320, 320)
        );
        assert_eq!(crop_region([0.0, 0.0, 50.0, 50.0], hd), (0, 0, 320, 320));
        // A box larger than half the picture: the whole picture that way.
        assert_eq!(
            crop_region([100.0, 100.0, 1800.0, 900.0], hd),
            (0, 0, 1920, 1080)
        );
        // A picture smaller than the minimum: all of it.
        assert_eq!(
            crop_region([10.0, 10.0, 20.0, 20.0], (160, 90)),
            (0, 0, 160, 90)
        );
        let image = RgbImage::new(640, 360);
        assert_eq!(
            crop(&image, [600.0, 300.0, 640.0, 360.0]).dimensions(),
            (320, 320)
        );
    }

    #[test]
    fn a_former_place_is_a_dashed_grey_outline() {
        let mut image = RgbImage::from_pixel(200, 100, Rgb([0, 90, 0]));
        let place = Outline {
            bbox: [20.0, 20.0, 180.0, 80.0],
            colour: FORMER_PLACE_COLOURS[0],
            label: String::new(),
            dashed: true,
        };
        draw_outlines(&mut image, &[place]);
        let top_edge: Vec<Rgb<u8>> = (20..180).map(|x| *image.get_pixel(x, 20)).collect();
        for colour in FORMER_PLACE_COLOURS {
            assert!(top_edge.contains(&colour));
        }
        assert!(top_edge.iter().all(|c| FORMER_PLACE_COLOURS.contains(c)));
        assert_eq!(
            image.get_pixel(100, 50),
            &Rgb([0, 90, 0]),
            "inside untouched"
        );
    }

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
