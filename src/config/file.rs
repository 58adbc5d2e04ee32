//! Reading and rewriting camera files on disk: which files a camera path names, and
//! rewriting one in place so that the daemon watching it never reads half a file and two
//! writers never interleave.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A camera file that cannot be listed, read or written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileError {
    pub path: PathBuf,
    pub reason: String,
}

impl FileError {
    pub(crate) fn new(path: &Path, reason: impl ToString) -> Self {
        FileError {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// The camera files `path` names: itself, or every `*.toml` in it (sorted by name) when it
/// is a directory. The daemon's watcher reads the same files.
pub(crate) fn camera_files(path: &Path) -> Result<Vec<PathBuf>, FileError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| FileError::new(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The temporary file a camera file is written through: beside it, so that the rename is
/// atomic, and not `*.toml`, so that the daemon's watcher never reads it.
fn temporary_path(path: &Path) -> Result<PathBuf, FileError> {
    let name = path
        .file_name()
        .ok_or_else(|| FileError::new(path, "not a file name"))?;
    Ok(path.with_file_name(format!(".{}.tmp", name.to_string_lossy())))
}

/// Writes `text` to `path` whole: through a temporary file beside it, synced, then renamed
/// over `path`. The file keeps the permissions of the one it replaces (camera files carry
/// stream credentials).
pub(crate) fn write_replacing(path: &Path, text: &str) -> Result<(), FileError> {
    let temporary = temporary_path(path)?;
    let permissions = std::fs::metadata(path).ok().map(|m| m.permissions());
    let written = (|| {
        let mut file = File::create(&temporary)?;
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(FileError::new(path, format!("cannot write: {e}")));
    }
    // Make the rename itself durable; a directory that cannot be synced is no reason to fail.
    if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Rewrites the existing file `path` (a symbolic link is followed and the file it names
/// rewritten): `edit` gets its text and returns the new text with a result. The file is
/// locked (`flock`) from the read to the rename, so that two rewrites, in this process or
/// another, never work on the same text; unchanged text is not written.
pub(crate) fn rewrite<T, E: From<FileError>>(
    path: &Path,
    edit: impl FnOnce(&str) -> Result<(String, T), E>,
) -> Result<T, E> {
    let target = std::fs::canonicalize(path).map_err(|e| FileError::new(path, e))?;
    let (_lock, text) = lock_and_read(&target)?;
    let (new_text, result) = edit(&text)?;
    if new_text != text {
        write_replacing(&target, &new_text)?;
    }
    Ok(result)
}

/// Opens and locks `path`, and reads it. A rewrite replaces the file (a new inode), so a
/// lock won on the file a rename has just replaced is dropped and taken again on the new one.
fn lock_and_read(path: &Path) -> Result<(File, String), FileError> {
    loop {
        let mut file = File::open(path).map_err(|e| FileError::new(path, e))?;
        // SAFETY: flock on a descriptor this function owns for as long as the call lasts.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(FileError::new(path, format!("cannot lock: {e}")));
        }
        let (locked, current) = (
            file.metadata().map_err(|e| FileError::new(path, e))?,
            std::fs::metadata(path).map_err(|e| FileError::new(path, e))?,
        );
        if (locked.dev(), locked.ino()) != (current.dev(), current.ino()) {
            continue;
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| FileError::new(path, e))?;
        return Ok((file, text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_rewrite_replaces_the_file_whole_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        let got: Result<usize, FileError> =
            rewrite(&path, |text| Ok((format!("{text} new"), text.len())));
        assert_eq!(got, Ok(3));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old new");
        let after = std::fs::metadata(&path).unwrap();
        assert_ne!(after.ino(), before, "renamed over, not written in place");
        assert_eq!(after.permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");

        // An edit that fails writes nothing.
        let failed: Result<(), FileError> = rewrite(&path, |_| {
            Err(FileError {
                path: path.clone(),
                reason: "no".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old new");
    }

    #[test]
    fn a_symbolic_link_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        let link = dir.path().join("link.toml");
        std::fs::write(&real, "a").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let _: Result<(), FileError> = rewrite(&link, |_| Ok(("b".into(), ())));
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "b");
    }

    #[test]
    fn concurrent_rewrites_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("count.toml");
        std::fs::write(&path, "0").unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10 {
                        let _: Result<(), FileError> = rewrite(&path, |text| {
                            let n: u32 = text.parse().unwrap();
                            Ok(((n + 1).to_string(), ()))
                        });
                    }
                });
            }
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "80");
    }
}
