use super::{Sink, SinkError};
use crate::store::OutboxEvent;
use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Keys of the latest events kept to skip events written again: only the last batch can
/// come again (after a crash between writing it and marking it delivered), so a few
/// thousand keys cover it while memory stays bounded however long the file grows.
const KEPT_KEYS: usize = 4096;
/// How much of an existing file is read at open to find those keys.
const TAIL_BYTES: u64 = 4 << 20;

/// Appends one JSON line per event (an [`OutboxEvent`] as is) to a file, flushed and
/// fsynced before `deliver` returns.
///
/// Nothing is written twice as far as the key can prevent: a crash can come after the
/// lines reached the disk but before the caller marked them delivered, so `open` reads
/// the keys of the file's last events and `deliver` skips events with those keys. A line
/// torn by a crash mid-write is cut off at open; its event was never acknowledged and
/// comes again. When the file is rotated away (logrotate renames or removes it), the next
/// delivery starts a new file at the same path.
pub struct JsonlSink {
    name: String,
    path: PathBuf,
    file: File,
    /// File length up to the last complete line; a failed write is truncated back to it.
    len: u64,
    keys: RecentKeys,
}

/// The latest written keys, oldest first, at most [`KEPT_KEYS`].
#[derive(Default)]
struct RecentKeys {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentKeys {
    fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
        }
        while self.order.len() > KEPT_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

impl JsonlSink {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        let path = path.as_ref();
        let name = format!("jsonl:{}", path.display());
        let mut keys = RecentKeys::default();
        let (file, len) = open_file(&name, path, &mut keys)?;
        Ok(JsonlSink {
            name,
            path: path.to_path_buf(),
            file,
            len,
            keys,
        })
    }

    /// Starts a new file at the path if the open one was renamed or removed.
    fn follow_rotation(&mut self) -> Result<(), SinkError> {
        let open = self.file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let at_path = std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()))
            .ok();
        if at_path.is_some() && at_path == open {
            return Ok(());
        }
        tracing::info!(sink = %self.name, "file rotated away; starting a new one");
        let (file, len) = open_file(&self.name, &self.path, &mut self.keys)?;
        self.file = file;
        self.len = len;
        Ok(())
    }

    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.file.write_all(lines)?;
        self.file.sync_data()
    }
}

/// Opens (or creates) the file for appending, reads the keys of its last events into
/// `keys`, cuts off a torn last line; returns the file and its length.
fn open_file(name: &str, path: &Path, keys: &mut RecentKeys) -> Result<(File, u64), SinkError> {
    let io_error = |action| {
        let sink = name.to_string();
        move |source| SinkError::Io {
            sink,
            action,
            source,
        }
    };
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error("open"))?;
    if !existed {
        // A new file's directory entry must be durable too, or a crash could lose the
        // whole file after its events were marked delivered.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(parent.unwrap_or(Path::new(".")))
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("sync its directory"))?;
    }
    let size = file.metadata().map_err(io_error("read"))?.len();
    let start = size.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(io_error("read"))?;
    let mut contents = Vec::new();
    file.read_to_end(&mut contents).map_err(io_error("read"))?;
    // Read from the middle of a file: the first, partial line is not ours to judge.
    let skipped = if start > 0 {
        contents
            .iter()
            .position(|b| *b == b'\n')
            .map_or(contents.len(), |i| i + 1)
    } else {
        0
    };
    let mut len = start + skipped as u64;
    let lines: Vec<&[u8]> = contents[skipped..]
        .split_inclusive(|b| *b == b'\n')
        .collect();
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<OutboxEvent>(line) {
            Ok(event) => {
                keys.insert(event.idempotency_key);
                len += line.len() as u64;
            }
            Err(_) if index + 1 == lines.len() && !line.ends_with(b"\n") => {
                tracing::warn!(sink = %name, bytes = line.len(), "cutting off a torn last line");
            }
            Err(e) => {
                let reason = if start > 0 {
                    format!("{e} (line counted from byte {})", start + skipped as u64)
                } else {
                    e.to_string()
                };
                return Err(SinkError::CorruptFile {
                    sink: name.to_string(),
                    line: index + 1,
                    reason,
                });
            }
        }
    }
    file.set_len(len).map_err(io_error("truncate"))?;
    // A complete last event may still lack its newline; the next line must not join it.
    let complete = &contents[..(len - start) as usize];
    if len > 0 && !complete.ends_with(b"\n") && !(start > 0 && complete.is_empty()) {
        file.write_all(b"\n").map_err(io_error("append to"))?;
        len += 1;
    }
    Ok((file, len))
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[OutboxEvent]) -> Result<(), SinkError> {
        self.follow_rotation()?;
        let mut lines = Vec::new();
        let mut new_keys = HashSet::new();
        for event in batch {
            if self.keys.contains(&event.idempotency_key)
                || !new_keys.insert(event.idempotency_key.as_str())
            {
                tracing::debug!(sink = %self.name, key = %event.idempotency_key, "already written");
                continue;
            }
            serde_json::to_writer(&mut lines, event)
                .expect("an OutboxEvent always serializes: its map keys are strings");
            lines.push(b'\n');
        }
        if lines.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.append(&lines) {
            // A retry must not append after half a line; best effort, the write already failed.
            let _ = self.file.set_len(self.len);
            return Err(SinkError::Io {
                sink: self.name.clone(),
                action: "append to",
                source,
            });
        }
        self.len += lines.len() as u64;
        for key in batch
            .iter()
            .map(|e| &e.idempotency_key)
            .filter(|k| new_keys.contains(k.as_str()))
        {
            self.keys.insert(key.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::tests::event;

    fn read_events(path: &Path) -> Vec<OutboxEvent> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn reopening_and_delivering_an_overlapping_batch_writes_no_duplicate_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        JsonlSink::open(&path)
            .unwrap()
            .deliver(&[event(1), event(2)])
            .unwrap();
        // As after a crash before the caller marked 2 delivered: 2 comes again with 3.
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.deliver(&[event(2), event(3)]).unwrap();
        sink.deliver(&[event(3), event(4), event(4)]).unwrap();
        assert_eq!(read_events(&path), [event(1), event(2), event(3), event(4)]);
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let first = serde_json::to_string(&event(1)).unwrap();
        std::fs::write(&path, format!("{first}\n{{\"seq\":2,\"idempotency_k")).unwrap();
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.deliver(&[event(1), event(2)]).unwrap();
        assert_eq!(read_events(&path), [event(1), event(2)]);

        // Torn exactly before the newline: the event is whole and stays.
        std::fs::write(&path, &first).unwrap();
        JsonlSink::open(&path)
            .unwrap()
            .deliver(&[event(1), event(2)])
            .unwrap();
        assert_eq!(read_events(&path), [event(1), event(2)]);
    }

    #[test]
    fn a_rotated_file_is_followed_by_a_new_one_and_duplicates_still_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.deliver(&[event(1), event(2)]).unwrap();
        // logrotate's default: rename, then the writer must start a new file.
        let rotated = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.deliver(&[event(2), event(3)]).unwrap();
        assert_eq!(read_events(&rotated), [event(1), event(2)]);
        assert_eq!(read_events(&path), [event(3)]);
        // Removed outright (copytruncate-less cleanup): the same.
        std::fs::remove_file(&path).unwrap();
        sink.deliver(&[event(4)]).unwrap();
        assert_eq!(read_events(&path), [event(4)]);
    }

    #[test]
    fn memory_for_keys_stays_bounded_and_a_long_file_is_read_from_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut sink = JsonlSink::open(&path).unwrap();
        let events: Vec<OutboxEvent> = (1..=3 * KEPT_KEYS as i64).map(event).collect();
        for batch in events.chunks(100) {
            sink.deliver(batch).unwrap();
        }
        assert_eq!(sink.keys.order.len(), KEPT_KEYS);
        assert_eq!(sink.keys.set.len(), KEPT_KEYS);
        // A file longer than the tail read at open: the last batch coming again is still
        // recognised, and the file stays whole.
        let mut text = String::new();
        let many: Vec<OutboxEvent> = (1..=60_000).map(event).collect();
        for e in &many {
            text += &serde_json::to_string(e).unwrap();
            text.push('\n');
        }
        assert!(text.len() as u64 > TAIL_BYTES, "{} bytes", text.len());
        std::fs::write(&path, &text).unwrap();
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.deliver(&many[many.len() - 100..]).unwrap();
        sink.deliver(&[event(60_001)]).unwrap();
        let written = read_events(&path);
        assert_eq!(written.len(), 60_001);
        assert_eq!(written.last(), Some(&event(60_001)));
    }

    #[test]
    fn a_corrupt_line_before_the_end_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let first = serde_json::to_string(&event(1)).unwrap();
        std::fs::write(&path, format!("{first}\nnot json\n{first}\n")).unwrap();
        let err = JsonlSink::open(&path).err().unwrap();
        assert!(
            matches!(err, SinkError::CorruptFile { line: 2, .. }),
            "{err}"
        );
        assert!(!err.retryable());
    }
}
