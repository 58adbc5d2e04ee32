//! Decode stage: FFmpeg's libavcodec turns access units into pictures, the sampler
//! decides which are decoded and analysed, and each analysed picture becomes a model
//! input while the full-resolution picture is kept for evidence.

mod preprocess;
mod sampling;
mod signature;
mod thumbnail;

pub use preprocess::{Letterbox, ModelInput, Preprocessor};
pub use sampling::{KeyframePolicy, LiveSampler, Sampling, SamplingError};
pub use signature::{cell_means, LumaSignature, ViewSignature};
pub use thumbnail::{thumbnail_size, Small, SmallYcbcr};

use std::time::{Duration, Instant};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::Video as VideoFrame;
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use crate::models::InputSpec;
use crate::source::{seconds, AccessUnit, StreamInfo};
use sampling::Sampler;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no decoder for codec {codec:?}: {reason}")]
    Open {
        codec: ffmpeg::codec::Id,
        reason: String,
    },
    #[error("picture conversion failed: {reason}")]
    Convert { reason: String },
}

/// A decoded picture, kept at full resolution for evidence images. Holding it costs no
/// copy (FFmpeg reference-counts the decoder's buffers); converting to RGB happens only
/// when an image is actually drawn.
pub struct Picture(VideoFrame);

impl Picture {
    pub fn width(&self) -> u32 {
        self.0.width()
    }

    pub fn height(&self) -> u32 {
        self.0.height()
    }

    /// The decoded frame itself, in the decoder's pixel format.
    pub fn as_frame(&self) -> &VideoFrame {
        &self.0
    }

    pub fn to_rgb(&self) -> Result<RgbImage, DecodeError> {
        let (w, h) = (self.width(), self.height());
        let convert = |reason: String| DecodeError::Convert { reason };
        let mut scaler = scaling::Context::get(
            self.0.format(),
            w,
            h,
            Pixel::RGB24,
            w,
            h,
            scaling::Flags::BILINEAR,
        )
        .map_err(|e| convert(e.to_string()))?;
        let mut rgb = VideoFrame::new(Pixel::RGB24, w, h);
        scaler
            .run(&self.0, &mut rgb)
            .map_err(|e| convert(e.to_string()))?;
        let stride = rgb.stride(0);
        let row = 3 * w as usize;
        let mut pixels = Vec::with_capacity(row * h as usize);
        for line in rgb.data(0).chunks(stride).take(h as usize) {
            pixels.extend_from_slice(&line[..row]);
        }
        RgbImage::from_raw(w, h, pixels).ok_or_else(|| convert("RGB buffer size".into()))
    }
}

/// Decodes one keyframe on its own into a picture: for an evidence image taken from
/// another stream than the analysed one, so there is no sampling and no model input.
pub fn decode_keyframe(info: &StreamInfo, unit: &AccessUnit) -> Result<Picture, DecodeError> {
    let open = |e: ffmpeg::Error| DecodeError::Open {
        codec: info.codec,
        reason: e.to_string(),
    };
    let mut decoder = ffmpeg::codec::Context::from_parameters(info.parameters.clone())
        .map_err(open)?
        .decoder()
        .video()
        .map_err(open)?;
    let undecodable = |e: ffmpeg::Error| DecodeError::Convert {
        reason: format!("the keyframe does not decode: {e}"),
    };
    decoder.send_packet(&unit.packet).map_err(undecodable)?;
    let _ = decoder.send_eof();
    let mut picture = VideoFrame::empty();
    decoder.receive_frame(&mut picture).map_err(undecodable)?;
    Ok(Picture(picture))
}

/// Frames and model inputs are megabyte buffers allocated in bursts (every camera's first
/// keyframe at once). glibc raises its mmap threshold after freeing such a buffer, so later
/// ones come from the heap and their memory is never returned: measured with 500 idle
/// cameras, 820 MB of RSS instead of 150 MB. A fixed threshold keeps them mmapped.
pub fn keep_frame_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator tunable; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// An analysed frame: the model input and the picture it came from.
pub struct Frame {
    /// Presentation time in seconds (0 when the stream has none).
    pub pts: f64,
    pub keyframe: bool,
    pub input: ModelInput,
    pub picture: Picture,
}

/// Counters and time spent in the decode stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeStats {
    /// Access units the sampler kept from the decoder.
    pub units_skipped: u64,
    /// Access units sent to the decoder.
    pub units_decoded: u64,
    /// Access units the decoder rejected as corrupt.
    pub units_rejected: u64,
    pub frames_decoded: u64,
    /// Frames the decoder output with errors concealed (grey or smeared regions).
    pub frames_damaged: u64,
    pub frames_analysed: u64,
    pub decode_time: Duration,
    pub preprocess_time: Duration,
}

impl DecodeStats {
    pub fn add(&mut self, other: &DecodeStats) {
        self.units_skipped += other.units_skipped;
        self.units_decoded += other.units_decoded;
        self.units_rejected += other.units_rejected;
        self.frames_decoded += other.frames_decoded;
        self.frames_damaged += other.frames_damaged;
        self.frames_analysed += other.frames_analysed;
        self.decode_time += other.decode_time;
        self.preprocess_time += other.preprocess_time;
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &DecodeStats) -> DecodeStats {
        DecodeStats {
            units_skipped: self.units_skipped - before.units_skipped,
            units_decoded: self.units_decoded - before.units_decoded,
            units_rejected: self.units_rejected - before.units_rejected,
            frames_decoded: self.frames_decoded - before.frames_decoded,
            frames_damaged: self.frames_damaged - before.frames_damaged,
            frames_analysed: self.frames_analysed - before.frames_analysed,
            decode_time: self.decode_time - before.decode_time,
            preprocess_time: self.preprocess_time - before.preprocess_time,
        }
    }
}

pub struct Decoder {
    decoder: ffmpeg::decoder::Video,
    sampler: Sampler,
    keyframes_only: bool,
    preprocess: Preprocessor,
    time_base: ffmpeg::Rational,
    stats: DecodeStats,
}

impl Decoder {
    pub fn new(
        info: &StreamInfo,
        input: &InputSpec,
        sampling: Sampling,
    ) -> Result<Self, DecodeError> {
        let open = |e: ffmpeg::Error| DecodeError::Open {
            codec: info.codec,
            reason: e.to_string(),
        };
        let mut context =
            ffmpeg::codec::Context::from_parameters(info.parameters.clone()).map_err(open)?;
        if sampling.keyframes_only() {
            // A keyframe decoded on its own is for detection and evidence, not viewing:
            // skipping the deblocking filter cuts its decode time by a third (1080p H.264:
            // 29 → 18 ms) and moved YOLOX-Nano's scores on the samples by 0.004 (median).
            // SAFETY: setting a plain field of the context before it is opened.
            unsafe {
                (*context.as_mut_ptr()).skip_loop_filter = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
        // One thread per decoder: cameras are decoded in parallel with each other, and a
        // frame-threaded decoder would hold keyframes back by its thread count.
        let decoder = context.decoder().video().map_err(open)?;
        Ok(Self {
            decoder,
            sampler: Sampler::new(sampling),
            keyframes_only: sampling.keyframes_only(),
            preprocess: Preprocessor::new(input.clone()),
            time_base: info.time_base,
            stats: DecodeStats::default(),
        })
    }

    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Feeds one access unit; analysed frames are handed to `emit`. Corrupt units are
    /// counted and skipped: the decoder recovers at the next keyframe.
    pub fn push(
        &mut self,
        unit: &AccessUnit,
        emit: &mut dyn FnMut(Frame),
    ) -> Result<(), DecodeError> {
        if !self.sampler.decode_wanted(unit.keyframe, unit.pts) {
            self.stats.units_skipped += 1;
            return Ok(());
        }
        self.stats.units_decoded += 1;
        let started = Instant::now();
        let accepted = self.decoder.send_packet(&unit.packet);
        self.stats.decode_time += started.elapsed();
        if let Err(e) = accepted {
            self.stats.units_rejected += 1;
            tracing::debug!(pts = ?unit.pts, error = %e, "decoder rejected access unit");
            return Ok(());
        }
        if self.keyframes_only {
            // Only keyframes are fed, so nothing later will push this picture out of the
            // reorder buffer: drain now and start afresh with the next keyframe.
            self.drain(emit)
        } else {
            self.receive(emit)
        }
    }

    /// Flushes pictures the decoder still holds at the end of a stream.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Frame)) -> Result<(), DecodeError> {
        self.drain(emit)
    }

    fn drain(&mut self, emit: &mut dyn FnMut(Frame)) -> Result<(), DecodeError> {
        let _ = self.decoder.send_eof();
        let result = self.receive(emit);
        self.decoder.flush();
        result
    }

    fn receive(&mut self, emit: &mut dyn FnMut(Frame)) -> Result<(), DecodeError> {
        loop {
            let mut picture = VideoFrame::empty();
            let started = Instant::now();
            let received = self.decoder.receive_frame(&mut picture);
            self.stats.decode_time += started.elapsed();
            if received.is_err() {
                return Ok(()); // needs more input, or drained
            }
            self.stats.frames_decoded += 1;
            // SAFETY: reading two plain fields of the frame the decoder just filled.
            let damaged = unsafe {
                let raw = &*picture.as_ptr();
                raw.decode_error_flags != 0 || raw.flags & ffmpeg::ffi::AV_FRAME_FLAG_CORRUPT != 0
            };
            self.stats.frames_damaged += u64::from(damaged);
            let pts = picture.timestamp().map(|t| seconds(t, self.time_base));
            if !self.sampler.analyse_wanted(pts) {
                continue;
            }
            let started = Instant::now();
            let input = self.preprocess.run(&picture)?;
            self.stats.preprocess_time += started.elapsed();
            self.stats.frames_analysed += 1;
            emit(Frame {
                pts: pts.unwrap_or(0.0),
                keyframe: picture.is_key(),
                input,
                picture: Picture(picture),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::models::Catalogue;
    use crate::source::FileSource;

    /// The first `n` keyframes of a shared sample clip.
    fn keyframes(clip: &str, n: usize) -> (StreamInfo, Vec<AccessUnit>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples")
            .join(clip);
        let (mut source, info) = FileSource::open(&path).unwrap();
        let mut units = Vec::new();
        while units.len() < n {
            let unit = source.next_unit().unwrap().expect("enough keyframes");
            if unit.keyframe {
                units.push(unit);
            }
        }
        (info, units)
    }

    /// `unit` with its coded data after the first quarter overwritten with noise: the
    /// NAL unit lengths and headers stand, the slice data is garbage.
    fn garbled(unit: &AccessUnit) -> AccessUnit {
        let mut data = unit.packet.data().expect("a packet with data").to_vec();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let from = data.len() / 4;
        for byte in &mut data[from..] {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let mut packet = ffmpeg::Packet::copy(&data);
        packet.set_pts(unit.packet.pts());
        packet.set_dts(unit.packet.dts());
        packet.set_flags(ffmpeg::packet::Flags::KEY);
        AccessUnit {
            pts: unit.pts,
            keyframe: true,
            packet,
        }
    }

    /// The 1080p samples, H.264 and H.265.
    const BOTH_CODECS: [&str; 2] = [
        "people-walking-1080p-h264.mp4",
        "people-walking-1080p-h265.mp4",
    ];

    /// A new decoder of keyframes for the default model's input.
    fn keyframe_decoder(info: &StreamInfo) -> Decoder {
        let sampling = Sampling::Keyframes { min_interval: None };
        Decoder::new(info, &Catalogue::default_input(), sampling).unwrap()
    }

    /// The luma plane of the one picture `unit` decodes to.
    fn luma(decoder: &mut Decoder, unit: &AccessUnit) -> Vec<u8> {
        let mut frames = Vec::new();
        decoder.push(unit, &mut |f| frames.push(f)).unwrap();
        let [frame] = &frames[..] else {
            panic!("{} pictures for one keyframe", frames.len())
        };
        luma_of(frame)
    }

    fn luma_of(frame: &Frame) -> Vec<u8> {
        let picture = frame.picture.as_frame();
        let (stride, width) = (picture.stride(0), picture.width() as usize);
        picture
            .data(0)
            .chunks(stride)
            .take(picture.height() as usize)
            .flat_map(|row| &row[..width])
            .copied()
            .collect()
    }

    #[test]
    fn a_kept_decoder_decodes_each_keyframe_as_a_fresh_one_would() {
        for clip in BOTH_CODECS {
            let (info, units) = keyframes(clip, 3);
            let mut kept = keyframe_decoder(&info);
            for unit in &units {
                let mut fresh = keyframe_decoder(&info);
                assert!(luma(&mut kept, unit) == luma(&mut fresh, unit), "{clip}");
            }
            assert_eq!(kept.stats().frames_damaged, 0, "{clip}");
        }
    }

    #[test]
    fn a_corrupt_keyframe_does_not_spoil_the_next() {
        for clip in BOTH_CODECS {
            let (info, units) = keyframes(clip, 3);
            let mut kept = keyframe_decoder(&info);
            luma(&mut kept, &units[0]);
            let mut spoilt = Vec::new();
            kept.push(&garbled(&units[1]), &mut |f| spoilt.push(luma_of(&f)))
                .unwrap();
            let mut fresh = keyframe_decoder(&info);
            let intact = luma(&mut fresh, &units[1]);
            assert!(
                spoilt.iter().all(|picture| *picture != intact),
                "{clip}: the garbled keyframe is rejected or decodes to another picture"
            );
            let spoilt = kept.stats();
            let mut fresh = keyframe_decoder(&info);
            assert!(
                luma(&mut kept, &units[2]) == luma(&mut fresh, &units[2]),
                "{clip}: the keyframe after the garbled one decodes as on a fresh decoder"
            );
            assert_eq!(kept.stats().frames_damaged, spoilt.frames_damaged, "{clip}");
        }
    }
}
