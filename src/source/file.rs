use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;

use super::{init_ffmpeg, seconds, AccessUnit, SourceError, StreamInfo};

/// Demuxes the best video stream of a file.
pub struct FileSource {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    time_base: ffmpeg::Rational,
    units: u64,
    /// Access units the container's index lists, when it has one.
    indexed_units: Option<u64>,
    /// Packets the demuxer could not parse and skipped.
    pub corrupt_packets: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub ended_early: Option<String>,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<(Self, StreamInfo), SourceError> {
        init_ffmpeg();
        if !path.exists() {
            return Err(SourceError::Missing {
                path: path.to_path_buf(),
            });
        }
        let input = ffmpeg::format::input(path).map_err(|e| SourceError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| SourceError::NoVideo {
                path: path.to_path_buf(),
            })?;
        let parameters = stream.parameters();
        let time_base = stream.time_base();
        let rate = f64::from(stream.avg_frame_rate());
        let duration = if stream.duration() > 0 {
            Some(seconds(stream.duration(), time_base))
        } else if input.duration() > 0 {
            Some(input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
        } else {
            None
        };
        // SAFETY: the parameters belong to a stream of the open input and outlive this read.
        let (width, height) = unsafe {
            let p = &*parameters.as_ptr();
            (p.width.max(0) as u32, p.height.max(0) as u32)
        };
        let info = StreamInfo {
            codec: parameters.id(),
            parameters,
            width,
            height,
            time_base,
            frame_rate: (rate.is_finite() && rate > 0.0).then_some(rate),
            duration,
        };
        let stream_index = stream.index();
        let indexed_units = u64::try_from(stream.frames()).ok().filter(|&n| n > 0);
        Ok((
            Self {
                path: path.to_path_buf(),
                input,
                stream_index,
                time_base,
                units: 0,
                indexed_units,
                corrupt_packets: 0,
                ended_early: None,
            },
            info,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the recording started (Unix seconds), from the container's `creation_time`
    /// tag, else the file's modification time.
    pub fn recorded_at(&self) -> Option<f64> {
        let tagged = self
            .input
            .metadata()
            .get("creation_time")
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok());
        let modified = || {
            std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok()
        };
        tagged
            .or_else(modified)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    }

    /// The next access unit of the video stream; `None` at the end. A read error after
    /// some units ends the stream (recorded in `ended_early`) so that what came before is
    /// still analysed; one before any unit is an error.
    pub fn next_unit(&mut self) -> Result<Option<AccessUnit>, SourceError> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream_index => {
                    self.units += 1;
                    return Ok(Some(AccessUnit {
                        pts: packet.pts().map(|t| seconds(t, self.time_base)),
                        keyframe: packet.is_key(),
                        packet,
                    }));
                }
                Ok(()) => continue,
                Err(ffmpeg::Error::Eof) => {
                    if let Some(listed) = self.indexed_units.filter(|&n| n > self.units) {
                        self.ended_early = Some(format!(
                            "file ends after {} of the {listed} access units its index lists (truncated?)",
                            self.units
                        ));
                    }
                    return Ok(None);
                }
                // The demuxer resyncs past a packet it cannot parse.
                Err(ffmpeg::Error::InvalidData) => {
                    self.corrupt_packets += 1;
                    if self.corrupt_packets > 10_000 {
                        self.ended_early = Some("too many unreadable packets".into());
                        return Ok(None);
                    }
                }
                Err(e) if self.units > 0 => {
                    tracing::warn!(file = %self.path.display(), error = %e, "stream ended early");
                    self.ended_early = Some(e.to_string());
                    return Ok(None);
                }
                Err(e) => {
                    return Err(SourceError::Read {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}
