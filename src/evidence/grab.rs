//! Main-stream pictures for evidence while a camera is analysed on its sub stream, as
//! NVRs do: detection runs on the cheap low-resolution stream, and a case's images are
//! taken from a keyframe of the main stream — a short RTSP session (connect, first
//! keyframe, decode, teardown) on the daemon's runtime. Grabs run in the background, at
//! most `limit` at a time across the daemon and each within a timeout, so filing never
//! waits for a camera; the filing asks again on its next sample whether the picture came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decode::{decode_keyframe, DecodeError, Picture};
use crate::detect::Detection;
use crate::metrics::{Counter, Histogram};
use crate::redact::redact_url;
use crate::source::{RtspError, RtspOptions, RtspSession};

#[derive(Debug, Clone, thiserror::Error)]
pub enum GrabError {
    #[error("{0}")]
    Rtsp(String),
    #[error("{url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url}: no keyframe within {}", humantime::format_duration(*.after))]
    Timeout { url: String, after: Duration },
    #[error("the daemon is shutting down")]
    Stopped,
}

impl From<RtspError> for GrabError {
    fn from(e: RtspError) -> Self {
        GrabError::Rtsp(e.to_string())
    }
}

/// How the grabs went, for the metrics.
#[derive(Default)]
pub struct GrabStats {
    /// Evidence drawn on a main-stream keyframe.
    pub main: Counter,
    /// Grabs that failed or timed out: evidence drawn on the analysed sub-stream frame.
    pub fallback: Counter,
    /// Time from asking to having the picture (or giving up).
    pub seconds: Histogram,
}

/// The daemon's main-stream grabs.
pub struct MainStreamGrabs {
    runtime: tokio::runtime::Handle,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
    options: RtspOptions,
    stats: Arc<GrabStats>,
}

/// A grab under way; ask [`PendingGrab::poll`] until it answers.
pub struct PendingGrab {
    result: crossbeam_channel::Receiver<Result<Picture, GrabError>>,
}

impl PendingGrab {
    /// The picture or why there is none, once the grab is over.
    pub fn poll(&self) -> Option<Result<Picture, GrabError>> {
        match self.result.try_recv() {
            Ok(result) => Some(result),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(GrabError::Stopped)),
        }
    }
}

impl MainStreamGrabs {
    /// At most `limit` grabs at a time on `runtime`; each gives up after `timeout`, its
    /// wait for a free slot included, so a burst of cases cannot queue grabs forever.
    pub fn new(
        runtime: tokio::runtime::Handle,
        limit: usize,
        timeout: Duration,
        options: RtspOptions,
        stats: Arc<GrabStats>,
    ) -> Self {
        Self {
            runtime,
            permits: Arc::new(tokio::sync::Semaphore::new(limit.max(1))),
            timeout,
            options,
            stats,
        }
    }

    /// Starts taking a keyframe of `url`.
    pub fn start(&self, url: &str) -> PendingGrab {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (url, shown) = (url.to_string(), redact_url(url));
        let permits = self.permits.clone();
        let options = self.options.clone();
        let stats = self.stats.clone();
        let timeout = self.timeout;
        self.runtime.spawn(async move {
            let started = Instant::now();
            let grab = async {
                let _permit = permits.acquire().await.map_err(|_| GrabError::Stopped)?;
                keyframe(&url, &shown, &options).await
            };
            let result = match tokio::time::timeout(timeout, grab).await {
                Ok(result) => result,
                Err(_) => Err(GrabError::Timeout {
                    url: shown,
                    after: timeout,
                }),
            };
            stats.seconds.observe(started.elapsed());
            match &result {
                Ok(_) => stats.main.inc(),
                Err(_) => stats.fallback.inc(),
            }
            let _ = tx.send(result);
        });
        PendingGrab { result: rx }
    }
}

/// One session: its first keyframe, decoded off the runtime, then teardown.
async fn keyframe(url: &str, shown: &str, options: &RtspOptions) -> Result<Picture, GrabError> {
    let mut session = RtspSession::connect(url, options).await?;
    let unit = loop {
        match session.next_unit().await {
            Ok(unit) if unit.keyframe => break Ok(unit),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    session.close().await;
    let unit = unit?;
    let shown = shown.to_string();
    tokio::task::spawn_blocking(move || {
        decode_keyframe(&unit.stream.stream_info(), &unit.access_unit()).map_err(
            |e: DecodeError| GrabError::Decode {
                url: shown,
                reason: e.to_string(),
            },
        )
    })
    .await
    .map_err(|_| GrabError::Stopped)?
}

/// Boxes in pixels of a `from` (width, height) picture, moved to the same places of a
/// `to` picture of the same scene: the sub stream's detections on the main stream.
pub fn scale_box(bbox: [f32; 4], from: (u32, u32), to: (u32, u32)) -> [f32; 4] {
    let sx = to.0 as f32 / from.0.max(1) as f32;
    let sy = to.1 as f32 / from.1.max(1) as f32;
    [bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy]
}

/// [`scale_box`] for every detection.
pub fn scale_detections(
    detections: &[Detection],
    from: (u32, u32),
    to: (u32, u32),
) -> Vec<Detection> {
    detections
        .iter()
        .map(|d| Detection {
            bbox: scale_box(d.bbox, from, to),
            ..d.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_scale_by_each_axis() {
        // 640×360 sub stream of a 1920×1080 main stream: ×3 both ways.
        assert_eq!(
            scale_box([100.0, 50.0, 200.0, 150.0], (640, 360), (1920, 1080)),
            [300.0, 150.0, 600.0, 450.0]
        );
        // 640×360 of a 640×480 main stream: the sub stream squeezed vertically.
        let squeezed = scale_box([520.0, 160.0, 640.0, 252.0], (640, 360), (640, 480));
        for (got, want) in squeezed.iter().zip([520.0, 213.333, 640.0, 336.0]) {
            assert!((got - want).abs() < 0.01, "{squeezed:?}");
        }
        let van = Detection {
            label: "truck".into(),
            class: 7,
            score: 0.8,
            bbox: [10.0, 10.0, 20.0, 30.0],
        };
        let scaled = scale_detections(&[van], (320, 240), (640, 480));
        assert_eq!(scaled[0].bbox, [20.0, 20.0, 40.0, 60.0]);
        assert_eq!((scaled[0].label.as_str(), scaled[0].score), ("truck", 0.8));
    }
}
