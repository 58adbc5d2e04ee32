//! Evidence images beside the store, `<db>.evidence/<case id>/<kind>.jpg`: the case engine
//! says which images a sample needs, this module draws and writes them. Images are written
//! before the sample's transaction commits and taken back if it does not, so every image
//! on disk has its row, and a deleted candidate's images go only once its rows are gone.
//!
//! What an inspector gets: each image (close-ups too) has a caption band under the
//! picture — local time with the camera's UTC offset, case id, camera id, name and city
//! codes, address and grid, the event's code and name and the moment of the case it shows.
//! The case's object is outlined in red, one box per object however many labels the
//! model gave it; the after-image leaves the place as it is now, only marking where the
//! object stood with a dashed grey outline and when it was seen there.

mod grab;

pub use grab::{scale_box, scale_detections, GrabError, GrabStats, MainStreamGrabs, PendingGrab};

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::annotate::{self, AnnotateError, Outline, SAME_OBJECT_IOU, VIOLATION_COLOUR};
use crate::cases::{Evidence, EvidenceKind, EvidenceRequest, EvidenceSource};
use crate::config::CameraInfo;
use crate::decode::{DecodeError, Picture};
use crate::detect::nms::iou;
use crate::detect::Detection;
use crate::local_time::{local_date, local_time, offset_label};

/// Zones are outlined in yellow, apart from the class colours of the boxes.
const ZONE_COLOUR: Rgb<u8> = Rgb([255, 255, 0]);

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence for case {case}: {error}")]
    Picture { case: String, error: DecodeError },
    #[error("evidence for case {case}: {error}")]
    Write { case: String, error: AnnotateError },
}

/// The picture a sample's images are drawn on, recorded on their rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub source: EvidenceSource,
    /// Why the main-stream grab failed, for [`EvidenceSource::Fallback`].
    pub fallback_reason: Option<String>,
}

impl Drawn {
    /// The frame the detections came from, as intended.
    pub fn analysed() -> Self {
        Self {
            source: EvidenceSource::Analysed,
            fallback_reason: None,
        }
    }
}

/// Writes the evidence images of one camera's cases into one store.
pub struct EvidenceWriter {
    dir: PathBuf,
    camera: CameraInfo,
    /// Seconds east of UTC of the camera's local time, in which captions give times.
    utc_offset: i64,
}

impl EvidenceWriter {
    /// `dir` is the folder beside the store that gets the rows (`Store::evidence_dir`);
    /// `camera` and `utc_offset` are what the captions say about the camera.
    pub fn new(dir: PathBuf, camera: CameraInfo, utc_offset: i64) -> Self {
        Self {
            dir,
            camera,
            utc_offset,
        }
    }

    /// Draws the requested images of `picture` — the zone, all `detections` and the
    /// case's box — and writes them, with a crop where one is wanted, each with its
    /// caption. The result holds the rows for the store, which record `drawn`, and must be
    /// committed once the store has them. A request whose images cannot be written (a
    /// full disk) is handed back in [`Uncommitted::unwritten`] for a later sample, and
    /// has no row.
    pub fn write(
        &self,
        picture: &Picture,
        detections: &[Detection],
        requests: &[EvidenceRequest],
        drawn: &Drawn,
    ) -> Uncommitted<'_> {
        let mut written = Uncommitted::new(&self.dir);
        let Some(first) = requests.first() else {
            return written;
        };
        let clean = match picture.to_rgb() {
            Ok(clean) => clean,
            Err(error) => {
                written.unwritten = requests.to_vec();
                written.error = Some(EvidenceError::Picture {
                    case: first.case_id.clone(),
                    error,
                });
                return written;
            }
        };
        for request in requests {
            if let Err(error) = self.write_one(&mut written, &clean, detections, request, drawn) {
                written.unwritten.push(request.clone());
                written.error.get_or_insert(EvidenceError::Write {
                    case: request.case_id.clone(),
                    error,
                });
            }
        }
        written
    }

    /// The images of one request, with their rows; none of its rows on an error.
    fn write_one(
        &self,
        written: &mut Uncommitted<'_>,
        clean: &RgbImage,
        detections: &[Detection],
        request: &EvidenceRequest,
        drawn: &Drawn,
    ) -> Result<(), AnnotateError> {
        let mut full = clean.clone();
        annotate::draw_zone(&mut full, &request.zone, ZONE_COLOUR);
        let outlines = match request.kind {
            EvidenceKind::After => vec![self.former_place(request)],
            _ => case_outlines(detections, request),
        };
        annotate::draw_outlines(&mut full, &outlines);
        let kind = request.kind.as_str();
        let mut images = vec![(kind.to_string(), full)];
        if let Some(bbox) = request.crop {
            images.push((format!("{kind}-crop"), annotate::crop(clean, bbox)));
        }
        let caption = self.caption(request);
        let mut rows = Vec::new();
        for (name, picture) in images {
            let (image, caption_height) = annotate::with_caption(&picture, &caption);
            let path = self.dir.join(&request.case_id).join(format!("{name}.jpg"));
            written.save(&image, &path)?;
            rows.push(Evidence {
                case_id: request.case_id.clone(),
                kind: name,
                path,
                ts: request.ts,
                source: Some(drawn.source),
                fallback_reason: drawn.fallback_reason.clone(),
                caption_height,
            });
        }
        written.rows.extend(rows);
        Ok(())
    }

    /// The caption band's lines: when and which case, which camera, where, what.
    fn caption(&self, request: &EvidenceRequest) -> Vec<String> {
        let camera = &self.camera;
        let mut lines = vec![format!(
            "{} {}  案件 {}",
            local_time(request.ts, self.utc_offset),
            offset_label(self.utc_offset),
            request.case_id
        )];
        let mut shown = vec!["摄像头".to_string(), camera.id.clone()];
        if !camera.name.is_empty() && camera.name != camera.id {
            shown.push(camera.name.clone());
        }
        shown.extend(
            camera
                .codes
                .iter()
                .map(|(key, code)| format!("{key}={code}")),
        );
        lines.push(shown.join("  "));
        let mut place = Vec::new();
        if let Some(address) = &camera.location.address {
            place.push(format!("地址 {address}"));
        }
        if let Some(grid) = &camera.location.grid {
            place.push(format!("网格 {grid}"));
        }
        if !place.is_empty() {
            lines.push(place.join("  "));
        }
        let moment = match request.kind {
            EvidenceKind::First => "首次发现",
            EvidenceKind::Filed => "立案",
            EvidenceKind::Reopened => "复发",
            EvidenceKind::After => "复核: 已离开",
        };
        lines.push(format!("事件 {}  {moment}", request.label));
        lines
    }

    /// The after-image's mark: where the object stood, dashed and neutral, labelled with
    /// when it was seen there (with the date where that was another day).
    fn former_place(&self, request: &EvidenceRequest) -> Outline {
        let (first, last) = request.seen;
        let today = local_date(request.ts, self.utc_offset);
        let when = |t: f64| {
            let text = local_time(t, self.utc_offset);
            if local_date(t, self.utc_offset) == today {
                text[11..].to_string()
            } else {
                text
            }
        };
        Outline {
            bbox: request.bbox,
            colour: annotate::FORMER_PLACE_COLOURS[0],
            label: format!("原位置 {}–{}", when(first), when(last)),
            dashed: true,
        }
    }
}

/// The outlines of a sample's image of a case: one per object, the case's first, in red,
/// labelled with the event and what the model saw there (`0505 机动车乱停放: truck 0.72 (bus
/// 0.41)`), so the object carries one box and one label.
fn case_outlines(detections: &[Detection], request: &EvidenceRequest) -> Vec<Outline> {
    let mut outlines = annotate::outlines(detections);
    let seen = outlines
        .iter()
        .position(|o| iou(&o.bbox, &request.bbox) >= SAME_OBJECT_IOU)
        .map(|i| outlines.remove(i));
    let label = match seen {
        Some(object) => format!("{}: {}", request.label, object.label),
        None => format!("{} {:.2}", request.label, request.score),
    };
    outlines.insert(
        0,
        Outline {
            bbox: request.bbox,
            colour: VIOLATION_COLOUR,
            label,
            dashed: false,
        },
    );
    outlines
}

/// Images written for a transaction that has not committed. Dropped without
/// [`commit`](Self::commit) — the transaction failed — it deletes them and puts back the
/// images they replaced, so no image is left without its row.
#[must_use = "dropping it deletes the images it wrote"]
pub struct Uncommitted<'a> {
    dir: &'a Path,
    rows: Vec<Evidence>,
    files: Vec<WrittenFile>,
    /// Requests whose images could not be written, and the first reason.
    unwritten: Vec<EvidenceRequest>,
    error: Option<EvidenceError>,
}

struct WrittenFile {
    path: PathBuf,
    /// Where the image this one replaced waits for the commit.
    replaced: Option<PathBuf>,
}

impl<'a> Uncommitted<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            rows: Vec::new(),
            files: Vec::new(),
            unwritten: Vec::new(),
            error: None,
        }
    }

    /// The requests whose images could not be written and why (the first reason): they
    /// have no rows, so the case shows them missing until a later sample writes them.
    pub fn unwritten(&mut self) -> (Vec<EvidenceRequest>, Option<EvidenceError>) {
        (std::mem::take(&mut self.unwritten), self.error.take())
    }

    /// The evidence rows of the written images, for the transaction.
    pub fn rows(&self) -> &[Evidence] {
        &self.rows
    }

    /// The transaction committed: the new images stay, the ones they replaced go, and so
    /// do the folders of the `deleted` candidates, whose rows are gone now.
    pub fn commit(mut self, deleted: &[String]) {
        for file in std::mem::take(&mut self.files) {
            if let Some(old) = file.replaced {
                removed(&old, std::fs::remove_file(&old));
            }
        }
        for id in deleted {
            let dir = self.dir.join(id);
            removed(&dir, std::fs::remove_dir_all(&dir));
        }
    }

    /// Writes `image` to `path`, keeping an image already there (a case reopened or
    /// closed a second time) until the commit; if it cannot be written, the image it
    /// replaced is back at once.
    fn save(&mut self, image: &RgbImage, path: &Path) -> Result<(), AnnotateError> {
        if !self.files.iter().any(|f| f.path == path) {
            let old = path.with_extension("jpg.replaced");
            let replaced = std::fs::rename(path, &old).is_ok().then_some(old);
            self.files.push(WrittenFile {
                path: path.to_path_buf(),
                replaced,
            });
        }
        let saved = annotate::save_jpeg(image, path);
        if saved.is_err() {
            if let Some(i) = self.files.iter().position(|f| f.path == path) {
                self.files.remove(i).undo();
            }
        }
        saved
    }
}

impl WrittenFile {
    /// Removes the new image and puts back the one it replaced.
    fn undo(self) {
        removed(&self.path, std::fs::remove_file(&self.path));
        match self.replaced {
            Some(old) => {
                if let Err(e) = std::fs::rename(&old, &self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot restore evidence");
                }
            }
            // Only succeeds when the folder is empty, i.e. this transaction made it.
            None => {
                if let Some(dir) = self.path.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

impl Drop for Uncommitted<'_> {
    fn drop(&mut self) {
        for file in self.files.drain(..).rev() {
            file.undo();
        }
    }
}

/// Logs a failed removal: a leftover image is harmless, the rows are what counts.
fn removed(path: &Path, result: std::io::Result<()>) {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove evidence")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::street_sample;

    /// 2026-12-01 10:00:30 in Beijing.
    const TS: f64 = 1_796_090_430.0;
    const CST: i64 = 8 * 3600;
    /// The parked van of the sample clip, in its 640×480 pixels.
    const VAN: [f32; 4] = [520.0, 213.0, 640.0, 337.0];

    fn request(kind: EvidenceKind) -> EvidenceRequest {
        EvidenceRequest {
            case_id: "C1".into(),
            kind,
            ts: TS,
            zone: vec![[0.78, 0.40], [1.0, 0.40], [1.0, 0.80], [0.78, 0.80]],
            bbox: VAN,
            label: "0505 机动车乱停放".into(),
            score: 0.72,
            crop: (kind != EvidenceKind::After).then_some(VAN),
            seen: (TS - 300.0, TS - 60.0),
        }
    }

    /// The van under two labels, as the model sometimes scores it.
    fn van_detections() -> Vec<Detection> {
        let detection = |label: &str, class, score, bbox| Detection {
            label: String::from(label),
            class,
            score,
            bbox,
        };
        vec![
            detection("truck", 7, 0.72, VAN),
            detection("bus", 5, 0.41, [516.0, 209.0, 640.0, 340.0]),
        ]
    }

    fn writer(dir: &Path) -> EvidenceWriter {
        let (camera, _, _) = street_sample();
        let mut info = camera.info;
        info.codes.insert("street".into(), "330102003".into());
        EvidenceWriter::new(dir.to_path_buf(), info, CST)
    }

    /// Is the pixel clearly the violation's red (JPEG shifts colours a little)?
    fn red(p: &Rgb<u8>) -> bool {
        p[0] > 170 && p[1] < 90 && p[2] < 130
    }

    #[test]
    fn the_caption_names_time_case_camera_place_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        assert_eq!(
            writer.caption(&request(EvidenceKind::Filed)),
            [
                "2026-12-01 10:00:30 +08:00  案件 C1",
                "摄像头  demo-street-01  演示路口 东侧 (demo street, east side)  street=330102003",
                "地址 演示路 1 号  网格 330102001001",
                "事件 0505 机动车乱停放  立案",
            ]
        );
        let after = writer.caption(&request(EvidenceKind::After));
        assert_eq!(after[3], "事件 0505 机动车乱停放  复核: 已离开");
        // Seen 09:55:30 to 09:59:30 the same day; the day before it would carry its date.
        assert_eq!(
            writer.former_place(&request(EvidenceKind::After)).label,
            "原位置 09:55:30–09:59:30"
        );
        let mut overnight = request(EvidenceKind::After);
        overnight.seen.0 -= 86_400.0;
        assert_eq!(
            writer.former_place(&overnight).label,
            "原位置 2026-11-30 09:55:30–09:59:30"
        );
    }

    #[test]
    fn the_case_and_its_second_label_are_one_red_box() {
        let mut detections = van_detections();
        let bus = [20.0, 150.0, 300.0, 330.0];
        detections.push(Detection {
            label: "bus".into(),
            class: 5,
            score: 0.9,
            bbox: bus,
        });
        let outlines = case_outlines(&detections, &request(EvidenceKind::Filed));
        let labels: Vec<&str> = outlines.iter().map(|o| o.label.as_str()).collect();
        assert_eq!(
            labels,
            ["0505 机动车乱停放: truck 0.72 (bus 0.41)", "bus 0.90"]
        );
        assert_eq!(
            (outlines[0].bbox, outlines[0].colour),
            (VAN, VIOLATION_COLOUR)
        );
        // A case box nothing was detected at (an earlier sample's) keeps its own label.
        let alone = case_outlines(&[], &request(EvidenceKind::Filed));
        assert_eq!(alone[0].label, "0505 机动车乱停放 0.72");
    }

    #[test]
    fn images_get_a_caption_band_a_large_crop_and_record_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let (_, _, frame) = street_sample();
        let (width, height) = (frame.picture.width(), frame.picture.height());
        let fallback = Drawn {
            source: EvidenceSource::Fallback,
            fallback_reason: Some("main stream: connection refused".into()),
        };
        let mut written = writer.write(
            &frame.picture,
            &van_detections(),
            &[request(EvidenceKind::Filed)],
            &fallback,
        );
        assert!(written.unwritten().1.is_none());
        let rows = written.rows().to_vec();
        written.commit(&[]);
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["filed", "filed-crop"]);
        for row in &rows {
            assert_eq!(row.source, Some(EvidenceSource::Fallback));
            assert_eq!(row.fallback_reason, fallback.fallback_reason);
            assert!(row.caption_height >= 40, "{row:?}");
        }
        let filed = image::open(&rows[0].path).unwrap().to_rgb8();
        assert_eq!(filed.dimensions(), (width, height + rows[0].caption_height));
        // The van's left edge is the case's red box.
        let edge = (250..300).filter(|&y| red(filed.get_pixel(521, y))).count();
        assert!(edge > 45, "{edge} red pixels on the van's left edge");
        // 120×124 px van: the 320 px minimum close-up, moved inside the 640 px frame.
        let crop = image::open(&rows[1].path).unwrap();
        assert_eq!(
            (crop.width(), crop.height()),
            (320, 320 + rows[1].caption_height)
        );
    }

    #[test]
    fn the_after_image_marks_the_former_place_without_the_red_box() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let (_, _, frame) = street_sample();
        let written = writer.write(
            &frame.picture,
            &van_detections(),
            &[request(EvidenceKind::After)],
            &Drawn::analysed(),
        );
        let rows = written.rows().to_vec();
        written.commit(&[]);
        let [after] = &rows[..] else {
            panic!("{rows:?}")
        };
        assert_eq!(
            (after.kind.as_str(), after.source),
            ("after", Some(EvidenceSource::Analysed))
        );
        let image = image::open(&after.path).unwrap().to_rgb8();
        let edge: Vec<&Rgb<u8>> = (250..300).map(|y| image.get_pixel(520, y)).collect();
        assert!(!edge.iter().any(|p| red(p)), "no red box: {edge:?}");
        // JPEG blurs a 1 px line into its street a little: light and dark, roughly grey.
        let grey = |p: &&&Rgb<u8>| {
            let (lo, hi) = (p.0.iter().min().unwrap(), p.0.iter().max().unwrap());
            hi - lo < 60
        };
        let brightness = |p: &&Rgb<u8>| p.0.iter().map(|&c| c as u32).sum::<u32>() / 3;
        let light = edge
            .iter()
            .filter(grey)
            .filter(|p| brightness(p) > 170)
            .count();
        let dark = edge
            .iter()
            .filter(grey)
            .filter(|p| brightness(p) < 120)
            .count();
        assert!(light > 10 && dark > 10, "dashed grey: {edge:?}");
    }

    fn image(shade: u8) -> RgbImage {
        RgbImage::from_pixel(8, 8, Rgb([shade; 3]))
    }

    fn shade_of(path: &Path) -> u8 {
        image::open(path).unwrap().to_rgb8().get_pixel(4, 4).0[0]
    }

    #[test]
    fn a_rolled_back_image_is_removed_and_the_one_it_replaced_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let reopened = dir.path().join("C1/reopened.jpg");
        let mut first = Uncommitted::new(dir.path());
        first.save(&image(0), &reopened).unwrap();
        first.commit(&[]);

        let mut second = Uncommitted::new(dir.path());
        second.save(&image(255), &reopened).unwrap();
        second
            .save(&image(255), &dir.path().join("C2/first.jpg"))
            .unwrap();
        assert!(shade_of(&reopened) > 200);
        drop(second);
        assert!(shade_of(&reopened) < 50, "the committed image is back");
        assert!(
            !dir.path().join("C2").exists(),
            "a folder this transaction made goes"
        );
        assert_eq!(std::fs::read_dir(dir.path().join("C1")).unwrap().count(), 1);
    }

    #[test]
    fn a_committed_image_replaces_the_old_one_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let after = dir.path().join("C1/after.jpg");
        let mut first = Uncommitted::new(dir.path());
        first.save(&image(0), &after).unwrap();
        first.commit(&[]);
        let mut second = Uncommitted::new(dir.path());
        second.save(&image(255), &after).unwrap();
        second.commit(&[]);
        assert!(shade_of(&after) > 200);
        assert_eq!(std::fs::read_dir(dir.path().join("C1")).unwrap().count(), 1);
    }

    #[test]
    fn an_image_that_cannot_be_written_keeps_the_one_it_would_replace() {
        let dir = tempfile::tempdir().unwrap();
        let after = dir.path().join("C1/after.jpg");
        let mut first = Uncommitted::new(dir.path());
        first.save(&image(0), &after).unwrap();
        first.commit(&[]);
        // A folder where the new image's partial file goes: the write fails.
        std::fs::create_dir(dir.path().join("C1/after.jpg.partial")).unwrap();
        let mut second = Uncommitted::new(dir.path());
        assert!(second.save(&image(255), &after).is_err());
        second.commit(&[]);
        assert!(shade_of(&after) < 50, "the committed image stays");
    }

    #[test]
    fn requests_whose_images_cannot_be_written_are_handed_back_without_rows() {
        let dir = tempfile::tempdir().unwrap();
        // The evidence folder is a file: nothing can be written under it.
        let evidence = dir.path().join("cases.db.evidence");
        std::fs::write(&evidence, b"").unwrap();
        let writer = EvidenceWriter::new(evidence.clone(), CameraInfo::default(), 0);
        let (_, _, frame) = crate::pipeline::test_support::street_sample();
        let request = EvidenceRequest {
            case_id: "C1".into(),
            kind: crate::cases::EvidenceKind::Filed,
            ts: 1.0,
            zone: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
            bbox: [1.0, 1.0, 4.0, 4.0],
            label: "van".into(),
            score: 0.9,
            crop: Some([1.0, 1.0, 4.0, 4.0]),
            seen: (0.0, 1.0),
        };
        let mut written = writer.write(
            &frame.picture,
            &[],
            std::slice::from_ref(&request),
            &Drawn::analysed(),
        );
        assert!(written.rows().is_empty());
        let (unwritten, error) = written.unwritten();
        assert_eq!(unwritten, [request]);
        let error = error.unwrap().to_string();
        assert!(
            error.contains("case C1") && error.contains("filed.jpg"),
            "{error}"
        );
        written.commit(&[]);
        assert!(evidence.is_file());
    }
}
