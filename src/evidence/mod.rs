//! Evidence images beside the store, `<db>.evidence/<case id>/<kind>.jpg`: the case engine
//! says which images a sample needs, this module draws and writes them. Images are written
//! before the sample's transaction commits and taken back if it does not, so every image
//! on disk has its row, and a deleted candidate's images go only once its rows are gone.

mod grab;

pub use grab::{scale_box, scale_detections, GrabError, GrabStats, MainStreamGrabs, PendingGrab};

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::annotate::{self, AnnotateError};
use crate::cases::{Evidence, EvidenceRequest};
use crate::decode::{DecodeError, Picture};
use crate::detect::Detection;

/// Zones are outlined in yellow, apart from the class colours of the boxes.
const ZONE_COLOUR: Rgb<u8> = Rgb([255, 255, 0]);

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence for case {case}: {error}")]
    Picture { case: String, error: DecodeError },
    #[error("evidence for case {case}: {error}")]
    Write { case: String, error: AnnotateError },
}

/// Writes the evidence images of one store.
pub struct EvidenceWriter {
    dir: PathBuf,
}

impl EvidenceWriter {
    /// `dir` is the folder beside the store that gets the rows (`Store::evidence_dir`).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Draws the requested images of `picture` — the zone, all `detections` and the
    /// case's box — and writes them, with a crop where one is wanted. The result holds
    /// the rows for the store and must be committed once the store has them. A request
    /// whose images cannot be written (a full disk) is handed back in
    /// [`Uncommitted::unwritten`] for a later sample, and has no row.
    pub fn write(
        &self,
        picture: &Picture,
        detections: &[Detection],
        requests: &[EvidenceRequest],
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
            if let Err(error) = self.write_one(&mut written, &clean, detections, request) {
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
    ) -> Result<(), AnnotateError> {
        let mut full = clean.clone();
        annotate::draw_zone(&mut full, &request.zone, ZONE_COLOUR);
        annotate::draw_detections(&mut full, detections);
        let mark = Detection {
            label: request.label.clone(),
            class: 0,
            score: request.score,
            bbox: request.bbox,
        };
        annotate::draw_detections(&mut full, std::slice::from_ref(&mark));
        let kind = request.kind.as_str();
        let mut images = vec![(kind.to_string(), full)];
        if let Some(bbox) = request.crop {
            images.push((format!("{kind}-crop"), annotate::crop(clean, bbox)));
        }
        let mut rows = Vec::new();
        for (name, image) in images {
            let path = self.dir.join(&request.case_id).join(format!("{name}.jpg"));
            written.save(&image, &path)?;
            rows.push(Evidence {
                case_id: request.case_id.clone(),
                kind: name,
                path,
                ts: request.ts,
            });
        }
        written.rows.extend(rows);
        Ok(())
    }
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
        let writer = EvidenceWriter::new(evidence.clone());
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
        };
        let mut written = writer.write(&frame.picture, &[], std::slice::from_ref(&request));
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
