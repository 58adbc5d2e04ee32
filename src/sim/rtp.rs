//! RTP as cameras send it: the fixed header (RFC 3550 §5.1), H.264 payloads (RFC 6184) and
//! H.265 payloads (RFC 7798), and the RTCP sender report that lets clients map RTP time to
//! wall-clock time.

/// The dynamic payload type every simulated camera announces in its SDP.
pub const PAYLOAD_TYPE: u8 = 96;

/// Video RTP clocks tick at 90 kHz for both codecs.
pub const CLOCK_RATE: u32 = 90_000;

/// Largest RTP payload. With the RTP, UDP and IP headers a packet stays under a 1500-byte
/// Ethernet MTU, so no datagram is fragmented on the way.
pub const MAX_PAYLOAD: usize = 1400;

pub const HEADER_LEN: usize = 12;

/// The two video codecs IP cameras send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    /// The encoding name of `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        }
    }

    /// Bytes of the NAL unit header: H.265 added the layer and temporal ids in a second byte.
    fn nal_header_len(self) -> usize {
        match self {
            Codec::H264 => 1,
            Codec::H265 => 2,
        }
    }

    /// The NAL unit type of `nal`, whose header must be present.
    pub fn nal_type(self, nal: &[u8]) -> u8 {
        match self {
            Codec::H264 => nal[0] & 0x1f,
            Codec::H265 => (nal[0] >> 1) & 0x3f,
        }
    }

    /// NAL unit types of the parameter sets a decoder needs before the first picture, in
    /// the order they must be sent: (VPS,) SPS, PPS.
    pub fn parameter_set_types(self) -> &'static [u8] {
        match self {
            Codec::H264 => &[7, 8],
            Codec::H265 => &[32, 33, 34],
        }
    }

    pub fn access_unit_delimiter(self) -> u8 {
        match self {
            Codec::H264 => 9,
            Codec::H265 => 35,
        }
    }

    /// Whether `payload` is the first fragmentation unit of a NAL unit split over several.
    pub fn starts_fragment(self, payload: &[u8]) -> bool {
        let header_len = self.nal_header_len();
        payload.len() > header_len
            && self.nal_type(payload) == self.fragment_type()
            && payload[header_len] & 0xc0 == 0x80
    }

    /// The RTP payload type number of a fragmentation unit: FU-A (RFC 6184 §5.8) or FU
    /// (RFC 7798 §4.4.3).
    fn fragment_type(self) -> u8 {
        match self {
            Codec::H264 => 28,
            Codec::H265 => 49,
        }
    }
}

/// Splits one NAL unit into RTP payloads of at most `max_payload` bytes: the NAL unit as is
/// (a single NAL unit packet) when it fits, otherwise fragmentation units whose first and
/// last carry the start and end bits.
pub fn packetize(codec: Codec, nal: &[u8], max_payload: usize, out: &mut Vec<Box<[u8]>>) {
    if nal.len() <= max_payload {
        out.push(nal.into());
        return;
    }
    let header_len = codec.nal_header_len();
    let nal_type = codec.nal_type(nal);
    // The payload header keeps the NAL unit's own F/NRI (H.264) or F/layer/TID (H.265)
    // bits and replaces the type; the FU header carries the original type.
    let mut payload_header = nal[..header_len].to_vec();
    match codec {
        Codec::H264 => payload_header[0] = (nal[0] & 0xe0) | codec.fragment_type(),
        Codec::H265 => payload_header[0] = (nal[0] & 0x81) | (codec.fragment_type() << 1),
    }
    let body = &nal[header_len..];
    let chunk_len = max_payload - header_len - 1;
    let chunks = body.len().div_ceil(chunk_len);
    for (i, chunk) in body.chunks(chunk_len).enumerate() {
        let start = if i == 0 { 0x80 } else { 0 };
        let end = if i + 1 == chunks { 0x40 } else { 0 };
        let mut payload = Vec::with_capacity(header_len + 1 + chunk.len());
        payload.extend_from_slice(&payload_header);
        payload.push(start | end | nal_type);
        payload.extend_from_slice(chunk);
        out.push(payload.into());
    }
}

/// Appends the 12-byte RTP fixed header: version 2, no padding, extension or CSRCs.
pub fn write_header(out: &mut Vec<u8>, marker: bool, sequence: u16, timestamp: u32, ssrc: u32) {
    out.push(0x80);
    out.push(if marker { 0x80 } else { 0 } | PAYLOAD_TYPE);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// What a sender report says: which RTP timestamp belongs to which wall-clock instant,
/// and how much was sent so far.
pub struct SenderReport {
    pub ssrc: u32,
    /// Wall-clock time in NTP format: seconds since 1900 in the high 32 bits.
    pub ntp_time: u64,
    pub rtp_time: u32,
    pub packets: u32,
    pub octets: u32,
}

impl SenderReport {
    /// Appends the report as an RTCP packet with no report blocks (RFC 3550 §6.4.1).
    pub fn write(&self, out: &mut Vec<u8>) {
        const SENDER_REPORT: u8 = 200;
        // Length in 32-bit words minus one: 28 bytes.
        const LENGTH_WORDS: u16 = 6;
        out.push(0x80);
        out.push(SENDER_REPORT);
        out.extend_from_slice(&LENGTH_WORDS.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.ntp_time.to_be_bytes());
        out.extend_from_slice(&self.rtp_time.to_be_bytes());
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.octets.to_be_bytes());
    }
}

/// NTP time (RFC 5905: seconds since 1900, 32.32 fixed point) of a system time.
pub fn ntp_time(time: std::time::SystemTime) -> u64 {
    const UNIX_TO_NTP_SECONDS: u64 = 2_208_988_800;
    let since_unix = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_unix.as_secs() + UNIX_TO_NTP_SECONDS;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a depacketiser does: joins fragmentation units back into NAL units.
    fn reassemble(codec: Codec, payloads: &[Box<[u8]>]) -> Vec<Vec<u8>> {
        let header_len = codec.nal_header_len();
        let mut nals: Vec<Vec<u8>> = Vec::new();
        for payload in payloads {
            if codec.nal_type(payload) != codec.fragment_type() {
                nals.push(payload.to_vec());
                continue;
            }
            let fu_header = payload[header_len];
            if fu_header & 0x80 != 0 {
                let nal_type = fu_header & 0x3f;
                let header = match codec {
                    Codec::H264 => vec![(payload[0] & 0xe0) | nal_type],
                    Codec::H265 => vec![(payload[0] & 0x81) | (nal_type << 1), payload[1]],
                };
                nals.push(header);
            }
            nals.last_mut()
                .expect("a fragment after a start fragment")
                .extend_from_slice(&payload[header_len + 1..]);
        }
        nals
    }

    fn nal_strategy(codec: Codec) -> impl Strategy<Value = Vec<u8>> {
        let header = match codec {
            // F = 0, any NRI, types 1..=23 (the ones a single NAL unit packet may carry).
            Codec::H264 => (0u8..4, 1u8..24)
                .prop_map(|(nri, t)| vec![(nri << 5) | t])
                .boxed(),
            // F = 0, types 0..=47, layer 0, TID 1..=7.
            Codec::H265 => (0u8..48, 1u8..8)
                .prop_map(|(t, tid)| vec![t << 1, tid])
                .boxed(),
        };
        (header, proptest::collection::vec(any::<u8>(), 1..6000)).prop_map(|(mut h, body)| {
            h.extend(body);
            h
        })
    }

    fn round_trip(codec: Codec, nals: &[Vec<u8>], max_payload: usize) {
        let mut payloads = Vec::new();
        for nal in nals {
            packetize(codec, nal, max_payload, &mut payloads);
        }
        assert!(payloads.iter().all(|p| p.len() <= max_payload));
        assert_eq!(&reassemble(codec, &payloads), nals);
    }

    proptest! {
        #[test]
        fn h264_fu_a_round_trip(nals in proptest::collection::vec(nal_strategy(Codec::H264), 1..5),
                                max_payload in 20usize..2000) {
            round_trip(Codec::H264, &nals, max_payload);
        }

        #[test]
        fn h265_fu_round_trip(nals in proptest::collection::vec(nal_strategy(Codec::H265), 1..5),
                              max_payload in 20usize..2000) {
            round_trip(Codec::H265, &nals, max_payload);
        }
    }

    #[test]
    fn fragments_carry_start_and_end_bits() {
        // An H.264 IDR slice (NRI 3, type 5) of 3000 bytes: three FU-A packets.
        let mut nal = vec![0x65];
        nal.extend(std::iter::repeat_n(0xab, 2999));
        let mut payloads = Vec::new();
        packetize(Codec::H264, &nal, MAX_PAYLOAD, &mut payloads);
        let fu: Vec<(u8, u8)> = payloads.iter().map(|p| (p[0], p[1])).collect();
        assert_eq!(fu, [(0x7c, 0x85), (0x7c, 0x05), (0x7c, 0x45)]);

        // An H.265 IDR_W_RADL (type 19), TID 1: payload header type 49, FU header type 19.
        let mut nal = vec![19 << 1, 1];
        nal.extend(std::iter::repeat_n(0xcd, 2000));
        payloads.clear();
        packetize(Codec::H265, &nal, MAX_PAYLOAD, &mut payloads);
        let fu: Vec<[u8; 3]> = payloads.iter().map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(fu, [[49 << 1, 1, 0x80 | 19], [49 << 1, 1, 0x40 | 19]]);
    }

    #[test]
    fn header_fields() {
        let mut out = Vec::new();
        write_header(&mut out, true, 0xbeef, 0x0102_0304, 0xdead_cafe);
        assert_eq!(
            out,
            [
                0x80,
                0x80 | 96,
                0xbe,
                0xef,
                1,
                2,
                3,
                4,
                0xde,
                0xad,
                0xca,
                0xfe
            ]
        );
        out.clear();
        write_header(&mut out, false, 1, 0, 0);
        assert_eq!(out[0] >> 6, 2, "version 2");
        assert_eq!(out[1], 96, "no marker, payload type 96");
        assert_eq!(out.len(), HEADER_LEN);
    }

    #[test]
    fn sender_report_layout() {
        let mut out = Vec::new();
        SenderReport {
            ssrc: 7,
            ntp_time: ntp_time(std::time::UNIX_EPOCH),
            rtp_time: 9,
            packets: 10,
            octets: 11,
        }
        .write(&mut out);
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..4], [0x80, 200, 0, 6]);
        assert_eq!(&out[8..12], 2_208_988_800u32.to_be_bytes());
    }
}
