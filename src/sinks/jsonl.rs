use super::{Sink, SinkError};
use crate::store::OutboxEvent;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// Appends one JSON line per event (an [`OutboxEvent`] as is) to a file, flushed and
/// fsynced before `deliver` returns.
///
/// Nothing is written twice as far as the key can prevent: a crash can come after the
/// lines reached the disk but before the caller marked them delivered, so `open` reads
/// the keys already in the file and `deliver` skips events with those keys. A line torn
/// by a crash mid-write is cut off at open; its event was never acknowledged and comes
/// again.
pub struct JsonlSink {
    name: String,
    file: File,
    /// File length up to the last complete line; a failed write is truncated back to it.
    len: u64,
    written_keys: HashSet<String>,
}

impl JsonlSink {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        let path = path.as_ref();
        let name = format!("jsonl:{}", path.display());
        let io_error = |action| {
            let sink = name.clone();
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
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(io_error("read"))?;

        let mut written_keys = HashSet::new();
        let mut len = 0;
        let lines: Vec<&[u8]> = contents.split_inclusive(|b| *b == b'\n').collect();
        for (index, line) in lines.iter().enumerate() {
            match serde_json::from_slice::<OutboxEvent>(line) {
                Ok(event) => {
                    written_keys.insert(event.idempotency_key);
                    len += line.len() as u64;
                }
                Err(_) if index + 1 == lines.len() && !line.ends_with(b"\n") => {
                    tracing::warn!(sink = %name, bytes = line.len(), "cutting off a torn last line");
                }
                Err(e) => {
                    return Err(SinkError::CorruptFile {
                        sink: name,
                        line: index + 1,
                        reason: e.to_string(),
                    })
                }
            }
        }
        file.set_len(len).map_err(io_error("truncate"))?;
        // A complete last event may still lack its newline; the next line must not join it.
        if len > 0 && !contents[..len as usize].ends_with(b"\n") {
            file.write_all(b"\n").map_err(io_error("append to"))?;
            len += 1;
        }
        Ok(JsonlSink {
            name,
            file,
            len,
            written_keys,
        })
    }

    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.file.write_all(lines)?;
        self.file.sync_data()
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[OutboxEvent]) -> Result<(), SinkError> {
        let mut lines = Vec::new();
        let mut new_keys = HashSet::new();
        for event in batch {
            if self.written_keys.contains(&event.idempotency_key)
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
        self.written_keys
            .extend(new_keys.into_iter().map(str::to_string));
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
