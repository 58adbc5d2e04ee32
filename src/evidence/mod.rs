//! Evidence images beside the store, `<db>.evidence/<case id>/<kind>.jpg`: the case engine
//! says which images a sample needs, this module draws and writes them. Images are written
//! before the sample's transaction commits and taken back if it does not, so every image
//! on disk has its row, and a deleted candidate's images go only once its rows are gone.

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
    /// the rows for the store and must be committed once the store has them.
    pub fn write(
        &self,
        picture: &Picture,
        detections: &[Detection],
        requests: &[EvidenceRequest],
    ) -> Result<Uncommitted<'_>, EvidenceError> {
        let mut written = Uncommitted::new(&self.dir);
        let Some(first) = requests.first() else {
            return Ok(written);
        };
        let clean = picture.to_rgb().map_err(|error| EvidenceError::Picture {
            case: first.case_id.clone(),
            error,
        })?;
        for request in requests {
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
                images.push((format!("{kind}-crop"), annotate::crop(&clean, bbox)));
            }
            for (name, image) in images {
                let path = self.dir.join(&request.case_id).join(format!("{name}.jpg"));
                written
                    .save(&image, &path)
                    .map_err(|error| EvidenceError::Write {
                        case: request.case_id.clone(),
                        error,
                    })?;
                written.rows.push(Evidence {
                    case_id: request.case_id.clone(),
                    kind: name,
                    path,
                    ts: request.ts,
                });
            }
        }
        Ok(written)
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
        }
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
    /// closed a second time) until the commit.
    fn save(&mut self, image: &RgbImage, path: &Path) -> Result<(), AnnotateError> {
        if !self.files.iter().any(|f| f.path == path) {
            let old = path.with_extension("jpg.replaced");
            let replaced = std::fs::rename(path, &old).is_ok().then_some(old);
            self.files.push(WrittenFile {
                path: path.to_path_buf(),
                replaced,
            });
        }
        annotate::save_jpeg(image, path)
    }
}

impl Drop for Uncommitted<'_> {
    fn drop(&mut self) {
        for file in self.files.drain(..).rev() {
            removed(&file.path, std::fs::remove_file(&file.path));
            match file.replaced {
                Some(old) => {
                    if let Err(e) = std::fs::rename(&old, &file.path) {
                        tracing::warn!(path = %file.path.display(), error = %e, "cannot restore evidence");
                    }
                }
                // Only succeeds when the folder is empty, i.e. this transaction made it.
                None => {
                    if let Some(dir) = file.path.parent() {
                        let _ = std::fs::remove_dir(dir);
                    }
                }
            }
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
}
