//! A clip prepared for serving: demuxed once, every access unit cut into RTP payloads once,
//! then shared read-only by every session of every camera. Sessions only add the 12-byte
//! RTP header, so a thousand cameras cost one copy of the clip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ffmpeg_next as ffmpeg;

use super::rtp::{self, Codec};
use super::SimError;
use crate::source::{seconds, FileSource};

/// A video clip ready to be sent as RTP, looped forever.
pub struct Clip {
    pub path: PathBuf,
    pub codec: Codec,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    /// The longest run of frames from one keyframe to the next.
    pub gop: usize,
    /// One pass through the clip; playback loops after it.
    pub duration: Duration,
    /// (VPS,) SPS and PPS, announced in the SDP and repeated before every keyframe.
    parameter_sets: Vec<Vec<u8>>,
    /// Access units in decode order, the order cameras send them.
    pub(super) units: Vec<Unit>,
    /// Indexes into `units`, in order.
    keyframes: Vec<usize>,
    /// `duration` in RTP clock ticks: what each loop adds to the timestamps.
    pub(super) loop_ticks: u32,
}

/// One access unit, packetised.
pub(super) struct Unit {
    /// When to send it, from the start of the clip (its decode time).
    pub send_offset: Duration,
    /// Its presentation time in RTP clock ticks from the start of the clip. With B-frames
    /// this runs ahead of `send_offset`, as it does on cameras that use them.
    pub rtp_offset: u32,
    pub keyframe: bool,
    /// RTP payloads; the last one carries the marker bit.
    pub payloads: Vec<Box<[u8]>>,
}

impl Clip {
    /// Demuxes `path` and packetises all of it. Blocking: it reads the whole file.
    pub fn prepare(path: &Path) -> Result<Clip, SimError> {
        let bad = |reason: String| SimError::Clip {
            path: path.to_path_buf(),
            reason,
        };
        let (mut source, info) = FileSource::open(path)?;
        let codec = match info.codec {
            ffmpeg::codec::Id::H264 => Codec::H264,
            ffmpeg::codec::Id::HEVC => Codec::H265,
            other => {
                return Err(SimError::UnsupportedCodec {
                    path: path.to_path_buf(),
                    codec: other.name().to_string(),
                })
            }
        };
        // SAFETY: the parameters belong to the open source's stream, which outlives this
        // read; FFmpeg keeps `extradata_size` bytes at `extradata` when it is not null.
        let extradata = unsafe {
            let p = &*info.parameters.as_ptr();
            if p.extradata.is_null() || p.extradata_size <= 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p.extradata, p.extradata_size as usize).to_vec()
            }
        };
        let (length_size, mut parameter_sets) =
            decoder_configuration(codec, &extradata).map_err(bad)?;
        let frame_rate = info.frame_rate.unwrap_or(25.0);
        let mut units: Vec<Unit> = Vec::new();
        let mut first_dts = None;
        let mut last_frame = Duration::from_secs_f64(1.0 / frame_rate);
        while let Some(unit) = source.next_unit()? {
            // Units before the first keyframe cannot be decoded by anyone.
            if units.is_empty() && !unit.keyframe {
                continue;
            }
            let data = unit.packet.data().unwrap_or_default();
            let nals = match length_size {
                Some(size) => split_length_prefixed(data, size)
                    .map_err(|reason| bad(format!("access unit {}: {reason}", units.len())))?,
                None => split_annex_b(data),
            };
            // Raw Annex-B streams carry no timestamps: one frame period per unit then.
            let dts = unit
                .packet
                .dts()
                .map(|t| seconds(t, info.time_base))
                .or(unit.pts)
                .unwrap_or(units.len() as f64 / frame_rate);
            let pts = unit.pts.unwrap_or(dts);
            let first = *first_dts.get_or_insert(dts);
            if unit.packet.duration() > 0 {
                last_frame =
                    Duration::from_secs_f64(seconds(unit.packet.duration(), info.time_base));
            }
            if parameter_sets.is_empty() {
                parameter_sets = nals
                    .iter()
                    .filter(|nal| codec.parameter_set_types().contains(&codec.nal_type(nal)))
                    .map(|nal| nal.to_vec())
                    .collect();
            }
            let mut payloads = Vec::new();
            // Clients that missed the SDP, or joined mid-stream, need the parameter sets
            // in band; MP4 keeps them only in the sample description.
            let has_parameter_sets = nals
                .iter()
                .any(|nal| codec.parameter_set_types().contains(&codec.nal_type(nal)));
            let mut parameter_sets_due = unit.keyframe && !has_parameter_sets;
            for nal in &nals {
                // An access unit delimiter must stay first (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4).
                if parameter_sets_due && codec.nal_type(nal) != codec.access_unit_delimiter() {
                    for set in &parameter_sets {
                        rtp::packetize(codec, set, rtp::MAX_PAYLOAD, &mut payloads);
                    }
                    parameter_sets_due = false;
                }
                rtp::packetize(codec, nal, rtp::MAX_PAYLOAD, &mut payloads);
            }
            if payloads.is_empty() {
                continue;
            }
            // Decode times never go backwards; a broken file must not make us sleep backwards.
            let send_offset = Duration::from_secs_f64((dts - first).max(0.0));
            let send_offset = units
                .last()
                .map_or(send_offset, |prev| send_offset.max(prev.send_offset));
            units.push(Unit {
                send_offset,
                rtp_offset: ((pts - first).max(0.0) * f64::from(rtp::CLOCK_RATE)).round() as u32,
                keyframe: unit.keyframe,
                payloads,
            });
        }
        if units.is_empty() {
            return Err(bad("no keyframe: nothing a client could decode".into()));
        }
        if parameter_sets.is_empty() {
            return Err(bad(
                "no SPS/PPS in the sample description or the stream".into()
            ));
        }
        let keyframes: Vec<usize> = (0..units.len()).filter(|&i| units[i].keyframe).collect();
        let gop = keyframes
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or(units.len());
        let duration = units.last().expect("not empty").send_offset + last_frame;
        Ok(Clip {
            path: path.to_path_buf(),
            codec,
            width: info.width,
            height: info.height,
            frame_rate,
            gop,
            duration,
            parameter_sets,
            keyframes,
            loop_ticks: (duration.as_secs_f64() * f64::from(rtp::CLOCK_RATE)).round() as u32,
            units,
        })
    }

    /// "H.264 1920x1080, 25 fps, GOP 50".
    pub fn summary(&self) -> String {
        let codec = match self.codec {
            Codec::H264 => "H.264",
            Codec::H265 => "H.265",
        };
        // 25 fps as "25", 30000/1001 as "29.97".
        let fps = format!("{:.2}", self.frame_rate);
        let fps = fps.trim_end_matches('0').trim_end_matches('.');
        format!(
            "{codec} {}x{}, {fps} fps, GOP {}",
            self.width, self.height, self.gop
        )
    }

    /// The `a=fmtp` parameters that let a client configure its decoder from the SDP.
    pub(super) fn fmtp(&self) -> String {
        fmtp(self.codec, &self.parameter_sets)
    }

    /// The keyframe at or before `position` in the clip: where a new session starts, so
    /// that its first picture decodes.
    pub(super) fn start_unit(&self, position: Duration) -> usize {
        let after = self
            .keyframes
            .partition_point(|&k| self.units[k].send_offset <= position);
        self.keyframes[after.saturating_sub(1)]
    }
}

/// The `a=fmtp` parameters for these parameter sets (RFC 6184 §8.1, RFC 7798 §7.1).
fn fmtp(codec: Codec, parameter_sets: &[Vec<u8>]) -> String {
    let base64 = |nal_type: u8| {
        parameter_sets
            .iter()
            .filter(|set| codec.nal_type(set) == nal_type)
            .map(|set| base64::engine::general_purpose::STANDARD.encode(set))
            .collect::<Vec<_>>()
            .join(",")
    };
    match codec {
        Codec::H264 => {
            let profile_level_id = parameter_sets
                .iter()
                .find(|set| codec.nal_type(set) == 7 && set.len() >= 4)
                .map(|sps| format!("{:02X}{:02X}{:02X}", sps[1], sps[2], sps[3]))
                .unwrap_or_else(|| "42E01F".into());
            format!(
                "packetization-mode=1;profile-level-id={profile_level_id};sprop-parameter-sets={},{}",
                base64(7),
                base64(8)
            )
        }
        Codec::H265 => format!(
            "sprop-vps={};sprop-sps={};sprop-pps={}",
            base64(32),
            base64(33),
            base64(34)
        ),
    }
}

/// Reads the codec's decoder configuration record from the container (avcC, ISO/IEC
/// 14496-15 §5.3.3; hvcC, §8.3.3): the length-prefix size of the NAL units in each
/// sample and the parameter sets. Anything else, empty included, means Annex-B samples
/// (start codes), whose parameter sets, if any, are read as Annex-B too.
fn decoder_configuration(
    codec: Codec,
    extradata: &[u8],
) -> Result<(Option<usize>, Vec<Vec<u8>>), String> {
    if extradata.first() != Some(&1) {
        let sets = split_annex_b(extradata)
            .into_iter()
            .filter(|nal| codec.parameter_set_types().contains(&codec.nal_type(nal)))
            .map(<[u8]>::to_vec)
            .collect();
        return Ok((None, sets));
    }
    let mut reader = Reader {
        data: extradata,
        pos: 0,
    };
    let mut sets = Vec::new();
    let length_size = match codec {
        Codec::H264 => {
            reader.skip(4)?;
            let length_size = usize::from(reader.u8()? & 3) + 1;
            let sps_count = reader.u8()? & 0x1f;
            for _ in 0..sps_count {
                sets.push(reader.sized()?.to_vec());
            }
            let pps_count = reader.u8()?;
            for _ in 0..pps_count {
                sets.push(reader.sized()?.to_vec());
            }
            length_size
        }
        Codec::H265 => {
            reader.skip(21)?;
            let length_size = usize::from(reader.u8()? & 3) + 1;
            let arrays = reader.u8()?;
            for _ in 0..arrays {
                reader.skip(1)?;
                let count = reader.u16()?;
                for _ in 0..count {
                    sets.push(reader.sized()?.to_vec());
                }
            }
            length_size
        }
    };
    // hvcC may also carry SEI; keep what decoders need, in the order they need it.
    let order = codec.parameter_set_types();
    sets.retain(|set| !set.is_empty() && order.contains(&codec.nal_type(set)));
    sets.sort_by_key(|set| order.iter().position(|&t| t == codec.nal_type(set)));
    Ok((Some(length_size), sets))
}

/// A cursor over a decoder configuration record; running off its end is an error.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let bytes = self.data.get(self.pos..self.pos + len).ok_or_else(|| {
            format!(
                "decoder configuration record truncated at byte {}",
                self.pos
            )
        })?;
        self.pos += len;
        Ok(bytes)
    }

    fn skip(&mut self, len: usize) -> Result<(), String> {
        self.take(len).map(drop)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A NAL unit preceded by its 16-bit length.
    fn sized(&mut self) -> Result<&'a [u8], String> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// NAL units of an MP4/MKV sample: each preceded by its big-endian length.
fn split_length_prefixed(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, String> {
    let mut nals = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err(format!(
                "{} stray bytes after the last NAL unit",
                rest.len()
            ));
        }
        let len = rest[..length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[length_size..];
        if len > rest.len() {
            return Err(format!(
                "NAL unit of {len} bytes but only {} left in the sample",
                rest.len()
            ));
        }
        if len > 0 {
            nals.push(&rest[..len]);
        }
        rest = &rest[len..];
    }
    Ok(nals)
}

/// NAL units of an Annex-B byte stream: separated by 00 00 01 start codes (the zero byte
/// of a four-byte start code ends up trailing the previous unit, and is trimmed).
fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            if let Some(s) = start {
                nals.push(trim_trailing_zeros(&data[s..i]));
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        nals.push(trim_trailing_zeros(&data[s..]));
    }
    nals.retain(|nal| !nal.is_empty());
    nals
}

fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::damaged;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];

    fn avcc(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut record = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(sps);
        record.push(1);
        record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        record.extend_from_slice(pps);
        record
    }

    fn fmtp_parameter<'a>(fmtp: &'a str, name: &str) -> &'a str {
        fmtp.split(';')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} missing from {fmtp}"))
    }

    fn decode(text: &str) -> Vec<Vec<u8>> {
        text.split(',')
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
            .collect()
    }

    #[test]
    fn h264_sprop_parameter_sets_decode_to_the_avcc_ones() {
        let (length_size, sets) = decoder_configuration(Codec::H264, &avcc(SPS, PPS)).unwrap();
        assert_eq!(length_size, Some(4));
        let fmtp = fmtp(Codec::H264, &sets);
        assert_eq!(fmtp_parameter(&fmtp, "packetization-mode"), "1");
        assert_eq!(fmtp_parameter(&fmtp, "profile-level-id"), "640028");
        assert_eq!(
            decode(fmtp_parameter(&fmtp, "sprop-parameter-sets")),
            [SPS, PPS]
        );
    }

    const VPS: &[u8] = &[0x40, 0x01, 0x0c, 0x01];
    const H265_SPS: &[u8] = &[0x42, 0x01, 0x01, 0x01, 0x60];
    const H265_PPS: &[u8] = &[0x44, 0x01, 0xc1, 0x72];

    /// An hvcC record with 4-byte lengths and one array per parameter set, in the order
    /// given.
    fn hvcc(sets: &[&[u8]]) -> Vec<u8> {
        let mut record = vec![1];
        record.extend_from_slice(&[0; 20]);
        record.push(0xf3); // 4-byte lengths
        record.push(sets.len() as u8);
        for set in sets {
            record.push(set[0] >> 1);
            record.extend_from_slice(&1u16.to_be_bytes());
            record.extend_from_slice(&(set.len() as u16).to_be_bytes());
            record.extend_from_slice(set);
        }
        record
    }

    #[test]
    fn h265_sprops_decode_to_the_hvcc_ones() {
        // Deliberately out of order: PPS, VPS, SPS.
        let (length_size, sets) =
            decoder_configuration(Codec::H265, &hvcc(&[H265_PPS, VPS, H265_SPS])).unwrap();
        assert_eq!(length_size, Some(4));
        assert_eq!(sets, [VPS, H265_SPS, H265_PPS]);
        let fmtp = fmtp(Codec::H265, &sets);
        assert_eq!(decode(fmtp_parameter(&fmtp, "sprop-vps")), [VPS]);
        assert_eq!(decode(fmtp_parameter(&fmtp, "sprop-sps")), [H265_SPS]);
        assert_eq!(decode(fmtp_parameter(&fmtp, "sprop-pps")), [H265_PPS]);
    }

    #[test]
    fn truncated_record_is_an_error() {
        let record = avcc(SPS, PPS);
        let err = decoder_configuration(Codec::H264, &record[..9]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn annex_b_and_length_prefixed_samples_split_alike() {
        let annex_b = [
            &[0, 0, 0, 1][..],
            SPS,
            &[0, 0, 1],
            PPS,
            &[0, 0, 1, 0x65, 0x88],
        ]
        .concat();
        let mut prefixed = Vec::new();
        for nal in [SPS, PPS, &[0x65, 0x88]] {
            prefixed.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            prefixed.extend_from_slice(nal);
        }
        let expected: Vec<&[u8]> = vec![SPS, PPS, &[0x65, 0x88]];
        assert_eq!(split_annex_b(&annex_b), expected);
        assert_eq!(split_length_prefixed(&prefixed, 4).unwrap(), expected);
        assert!(split_length_prefixed(&prefixed[..prefixed.len() - 1], 4).is_err());
        let (length_size, sets) = decoder_configuration(Codec::H264, &annex_b).unwrap();
        assert_eq!(
            (length_size, sets),
            (None, vec![SPS.to_vec(), PPS.to_vec()])
        );
    }

    /// Reads `extradata` as `codec`'s decoder configuration. What is accepted must give
    /// an fmtp whose sprop parameters carry exactly the parameter sets found; what is
    /// refused must say at which byte of the record it ran out.
    fn check_extradata(codec: Codec, extradata: &[u8]) -> Result<(), TestCaseError> {
        let (length_size, sets) = match decoder_configuration(codec, extradata) {
            Ok(configuration) => configuration,
            Err(reason) => {
                let at = reason
                    .strip_prefix("decoder configuration record truncated at byte ")
                    .and_then(|at| at.parse::<usize>().ok());
                prop_assert!(at.is_some_and(|at| at <= extradata.len()), "{}", reason);
                return Ok(());
            }
        };
        prop_assert!(length_size.is_none_or(|size| (1..=4).contains(&size)));
        let fmtp = fmtp(codec, &sets);
        let sprops: &[(&str, &[u8])] = match codec {
            Codec::H264 => {
                let profile_level_id = fmtp_parameter(&fmtp, "profile-level-id");
                prop_assert!(
                    profile_level_id.len() == 6
                        && profile_level_id.chars().all(|c| c.is_ascii_hexdigit()),
                    "{}",
                    fmtp
                );
                &[("sprop-parameter-sets", &[7, 8])]
            }
            Codec::H265 => &[
                ("sprop-vps", &[32]),
                ("sprop-sps", &[33]),
                ("sprop-pps", &[34]),
            ],
        };
        for (name, types) in sprops {
            let announced: Vec<Vec<u8>> = decode(fmtp_parameter(&fmtp, name))
                .into_iter()
                .filter(|set| !set.is_empty())
                .collect();
            let found: Vec<Vec<u8>> = types
                .iter()
                .flat_map(|&t| sets.iter().filter(move |set| codec.nal_type(set) == t))
                .cloned()
                .collect();
            prop_assert_eq!(announced, found, "{}", fmtp);
        }
        Ok(())
    }

    fn codec() -> impl Strategy<Value = Codec> {
        prop::sample::select(vec![Codec::H264, Codec::H265])
    }

    /// Any bytes, half of them starting with 1 as a configuration record does (anything
    /// else is read as Annex-B).
    fn extradata() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..256)).prop_map(
            |(record, mut bytes)| {
                if record {
                    bytes.insert(0, 1);
                }
                bytes
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_extradata(codec in codec(), extradata in extradata()) {
            check_extradata(codec, &extradata)?;
        }

        #[test]
        fn damaged_avcc(record in damaged(&avcc(SPS, PPS))) {
            check_extradata(Codec::H264, &record)?;
        }

        #[test]
        fn damaged_hvcc(record in damaged(&hvcc(&[VPS, H265_SPS, H265_PPS]))) {
            check_extradata(Codec::H265, &record)?;
        }

        /// Samples cut into NAL units by their length prefixes: every byte is accounted
        /// for, by a NAL unit or an empty one, or the error says what is left over.
        #[test]
        fn arbitrary_length_prefixed_sample(
            sample in prop::collection::vec(any::<u8>(), 0..256),
            length_size in 1usize..=4,
        ) {
            match split_length_prefixed(&sample, length_size) {
                Ok(nals) => {
                    let used: usize = nals.iter().map(|nal| length_size + nal.len()).sum();
                    prop_assert!(nals.iter().all(|nal| !nal.is_empty()));
                    prop_assert!(used <= sample.len() && (sample.len() - used) % length_size == 0);
                }
                Err(reason) => prop_assert!(
                    reason.contains("stray bytes") || reason.contains("left in the sample"),
                    "{}",
                    reason
                ),
            }
        }

        /// Annex-B samples cut at their start codes: no empty NAL unit, none with a start
        /// code inside.
        #[test]
        fn arbitrary_annex_b_sample(sample in prop::collection::vec(0u8..4, 0..256)) {
            let nals = split_annex_b(&sample);
            prop_assert!(nals.iter().all(|nal| !nal.is_empty()));
            prop_assert!(!nals.iter().any(|nal| nal.windows(3).any(|w| w == [0, 0, 1])));
        }
    }
}
