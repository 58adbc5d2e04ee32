//! The sub-stream rendition of a clip: every frame decoded, scaled down and encoded again
//! with libavcodec (H.264), keyframes where the clip has them and the clip's timestamps,
//! so that a camera's two streams show the same scene at the same moment and start at
//! the same keyframes. Written to a temporary MP4 that [`Clip::prepare`] reads like any
//! clip, so the sub stream is served by the same code as the main one.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::Video as VideoFrame;
use ffmpeg_next as ffmpeg;

use super::clip::Clip;
use super::SimError;
use crate::source::FileSource;

/// Prepares the `width`×`height` rendition of `path` as a servable clip.
pub(super) fn prepare(path: &Path, width: u32, height: u32) -> Result<Clip, SimError> {
    let bad = |reason: String| SimError::Clip {
        path: path.to_path_buf(),
        reason: format!("cannot make its {width}x{height} sub stream: {reason}"),
    };
    if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
        return Err(bad("the size must be even and not zero".into()));
    }
    let dir = tempfile::tempdir().map_err(|e| bad(format!("temporary folder: {e}")))?;
    let out = dir.path().join("sub.mp4");
    transcode(path, &out, width, height).map_err(|e| bad(e.to_string()))?;
    let mut clip = Clip::prepare(&out)?;
    clip.path = path.to_path_buf();
    Ok(clip)
}

fn transcode(path: &Path, out: &Path, width: u32, height: u32) -> Result<(), ffmpeg::Error> {
    let (mut source, info) = FileSource::open(path).map_err(|_| ffmpeg::Error::InvalidData)?;
    let mut decoder = ffmpeg::codec::Context::from_parameters(info.parameters.clone())?
        .decoder()
        .video()?;
    let codec = ffmpeg::encoder::find_by_name("libx264")
        .or_else(|| ffmpeg::encoder::find(ffmpeg::codec::Id::H264))
        .ok_or(ffmpeg::Error::EncoderNotFound)?;
    let mut output = ffmpeg::format::output_as(out, "mp4")?;
    let global_header = output
        .format()
        .flags()
        .contains(ffmpeg::format::Flags::GLOBAL_HEADER);
    let mut encoder = ffmpeg::codec::Context::new_with_codec(codec)
        .encoder()
        .video()?;
    encoder.set_width(width);
    encoder.set_height(height);
    encoder.set_format(Pixel::YUV420P);
    encoder.set_time_base(info.time_base);
    if let Some(rate) = info.frame_rate {
        encoder.set_frame_rate(Some(ffmpeg::Rational::from(rate)));
    }
    // Keyframes only where the clip has them (forced below), and no B-frames: decode
    // order is presentation order, as on the cameras that stream a sub stream.
    encoder.set_gop(u32::MAX / 2);
    encoder.set_max_b_frames(0);
    if global_header {
        encoder.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
    }
    let mut options = ffmpeg::Dictionary::new();
    options.set("preset", "veryfast");
    options.set("x264-params", "scenecut=0:open-gop=0");
    options.set("forced-idr", "1");
    let mut encoder = encoder.open_with(options)?;
    let stream_index = {
        let mut stream = output.add_stream(codec)?;
        stream.set_parameters(&encoder);
        stream.set_time_base(info.time_base);
        stream.index()
    };
    output.write_header()?;
    let stream_time_base = output.stream(stream_index).expect("added").time_base();
    // Packets carry their frame's duration, so the rendition's length and frame rate
    // come out as the clip's (the last frame counts too).
    let frame_ticks = info.frame_rate.map_or(0, |rate| {
        (f64::from(info.time_base.denominator()) / (rate * f64::from(info.time_base.numerator())))
            .round() as i64
    });
    let mut scaler: Option<scaling::Context> = None;
    let write_packets = |encoder: &mut ffmpeg::encoder::Video,
                         output: &mut ffmpeg::format::context::Output|
     -> Result<(), ffmpeg::Error> {
        let mut packet = ffmpeg::Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(stream_index);
            packet.set_duration(frame_ticks);
            packet.rescale_ts(info.time_base, stream_time_base);
            packet.write_interleaved(output)?;
        }
        Ok(())
    };
    let mut encode = |decoded: &VideoFrame,
                      encoder: &mut ffmpeg::encoder::Video,
                      output: &mut ffmpeg::format::context::Output|
     -> Result<(), ffmpeg::Error> {
        let scaler = match &mut scaler {
            Some(scaler) => scaler,
            None => scaler.insert(scaling::Context::get(
                decoded.format(),
                decoded.width(),
                decoded.height(),
                Pixel::YUV420P,
                width,
                height,
                scaling::Flags::BILINEAR,
            )?),
        };
        let mut scaled = VideoFrame::empty();
        scaler.run(decoded, &mut scaled)?;
        scaled.set_pts(decoded.timestamp());
        scaled.set_kind(if decoded.is_key() {
            ffmpeg::picture::Type::I
        } else {
            ffmpeg::picture::Type::None
        });
        encoder.send_frame(&scaled)?;
        write_packets(encoder, output)
    };
    let mut decoded = VideoFrame::empty();
    while let Some(unit) = source.next_unit().map_err(|_| ffmpeg::Error::InvalidData)? {
        // A damaged unit is skipped, as the daemon's decoder skips it.
        if decoder.send_packet(&unit.packet).is_err() {
            continue;
        }
        while decoder.receive_frame(&mut decoded).is_ok() {
            encode(&decoded, &mut encoder, &mut output)?;
        }
    }
    decoder.send_eof()?;
    while decoder.receive_frame(&mut decoded).is_ok() {
        encode(&decoded, &mut encoder, &mut output)?;
    }
    encoder.send_eof()?;
    write_packets(&mut encoder, &mut output)?;
    output.write_trailer()
}
