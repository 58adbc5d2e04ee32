//! Sinks: where case events go after the store's outbox. Delivery is at least once: a
//! worker hands a batch to a [`Sink`] and marks it delivered only after `deliver` returned
//! `Ok`, so a crash or a lost acknowledgement means the batch is sent again. Every event
//! carries a stable `idempotency_key`; receivers dedupe on it, and the sinks themselves
//! skip keys they know they already wrote.

mod delivery;
mod jsonl;
mod webhook;

pub use delivery::{deliver, Delivery};
pub use jsonl::JsonlSink;
pub use webhook::{webhook_id, WebhookSigner, WebhookSink};

use std::time::Duration;

use crate::store::OutboxEvent;

/// Every variant names the sink ([`Sink::name`], which holds its path or redacted URL).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: cannot {action}: {source}")]
    Io {
        sink: String,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{sink}: line {line} is not an outbox event: {reason}")]
    CorruptFile {
        sink: String,
        line: usize,
        reason: String,
    },
    #[error("{sink}: invalid URL: {reason}")]
    InvalidUrl { sink: String, reason: String },
    #[error("{sink}: no answer within {}", humantime::format_duration(*.after))]
    Timeout { sink: String, after: Duration },
    #[error("{sink}: cannot connect: {reason}")]
    Connect { sink: String, reason: String },
    #[error("{sink}: answered HTTP {status}: {body:?}")]
    Status {
        sink: String,
        status: u16,
        body: String,
    },
    #[error("{sink}: request failed: {reason}")]
    Request { sink: String, reason: String },
}

impl SinkError {
    /// Whether waiting may fix it (`true`) or someone has to fix the endpoint or file
    /// (`false`). Callers retry either way; this only picks the log level and wording.
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::Io { .. } | SinkError::Timeout { .. } | SinkError::Connect { .. } => true,
            // 408 and 429 are the receiver asking us to come back later.
            SinkError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            SinkError::CorruptFile { .. }
            | SinkError::InvalidUrl { .. }
            | SinkError::Request { .. } => false,
        }
    }
}

pub trait Sink: Send {
    /// Names the sink in logs and errors, with its path or redacted URL.
    fn name(&self) -> &str;
    /// Delivers the batch (in seq order). Ok means every event in it is acknowledged and
    /// may be marked delivered.
    fn deliver(&mut self, batch: &[OutboxEvent]) -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn event(seq: i64) -> OutboxEvent {
        OutboxEvent {
            seq,
            idempotency_key: format!("case-{seq}:filed:1"),
            kind: "case.filed".into(),
            payload: serde_json::json!({ "camera": "cam-7", "event": "illegal_parking" }),
        }
    }

    #[test]
    fn only_server_side_and_transient_failures_are_retryable() {
        let status = |status| SinkError::Status {
            sink: "webhook:test".into(),
            status,
            body: String::new(),
        };
        assert!(status(500).retryable() && status(503).retryable() && status(429).retryable());
        assert!(!status(400).retryable() && !status(401).retryable() && !status(404).retryable());
    }
}
