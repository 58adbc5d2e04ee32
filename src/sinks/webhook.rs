use super::{Sink, SinkError};
use crate::redact::redact_url;
use crate::store::OutboxEvent;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Signs deliveries in the Standard Webhooks scheme (<https://www.standardwebhooks.com/>):
/// `webhook-signature: v1,<base64 of HMAC-SHA256("{id}.{timestamp}.{body}")>` with the key
/// of a `whsec_<base64>` secret.
#[derive(Clone)]
pub struct WebhookSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(***)")
    }
}

impl WebhookSigner {
    /// The signer of a `whsec_<base64>` secret (the prefix may be left off).
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the webhook secret is not whsec_<base64>: {e}"))?;
        if key.is_empty() {
            return Err("the webhook secret is empty".into());
        }
        Ok(WebhookSigner { key })
    }

    /// The `webhook-signature` value of a message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// The `webhook-id` of a batch: the same for every retry of it (a hash of its
/// `Idempotency-Key`), so that receivers can deduplicate.
pub fn webhook_id(batch_key: &str) -> String {
    let digest = Sha256::digest(batch_key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// POSTs each batch as `{"events": [OutboxEvent, …]}` with `Content-Type: application/json`,
/// `Authorization: Bearer …` when a token is set, and `Idempotency-Key: <first key>..<last
/// key>`. Any 2xx acknowledges the whole batch. With a signer ([`WebhookSink::signed`])
/// each request also carries `webhook-id` (stable across retries of the batch),
/// `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`.
///
/// Delivery is at least once: when an acknowledgement is lost (timeout, crash) the batch
/// comes again, possibly cut differently. The batch header only names the batch;
/// receivers must dedupe on each event's own `idempotency_key`.
pub struct WebhookSink {
    name: String,
    url: String,
    bearer_token: Option<String>,
    signer: Option<WebhookSigner>,
    timeout: Duration,
    agent: ureq::Agent,
}

#[derive(serde::Serialize)]
struct WebhookBody<'a> {
    events: &'a [OutboxEvent],
}

/// How much of an error answer to keep: enough for the receiver's reason, not a whole page.
const ERROR_BODY_BYTES: u64 = 512;

impl WebhookSink {
    /// `timeout` bounds a whole delivery (connect, send, answer), so a hung receiver
    /// cannot stall the outbox worker. A `user:password@` in the URL goes out as Basic
    /// auth unless a bearer token is given; it never appears in names or errors.
    pub fn new(
        url: &str,
        bearer_token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let name = format!("webhook:{}", redact_url(url));
        let invalid = |reason: String| SinkError::InvalidUrl {
            sink: name.clone(),
            reason,
        };
        let uri: ureq::http::Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid("expected http:// or https:// and a host".into()));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // A redirected POST is retried as a GET without the events, and its 2xx would
            // acknowledge a batch nobody received.
            .max_redirects(0)
            .build()
            .into();
        Ok(WebhookSink {
            name,
            url: url.to_string(),
            bearer_token,
            signer: None,
            timeout,
            agent,
        })
    }

    /// The sink, signing every delivery with `signer` (none: unsigned).
    pub fn signed(mut self, signer: Option<WebhookSigner>) -> Self {
        self.signer = signer;
        self
    }

    fn request_error(&self, error: ureq::Error) -> SinkError {
        let sink = self.name.clone();
        match error {
            ureq::Error::Timeout(_) => SinkError::Timeout {
                sink,
                after: self.timeout,
            },
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                SinkError::Connect {
                    sink,
                    reason: error.to_string(),
                }
            }
            other => SinkError::Request {
                sink,
                reason: other.to_string(),
            },
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[OutboxEvent]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let body = serde_json::to_vec(&WebhookBody { events: batch })
            .expect("an OutboxEvent always serializes: its map keys are strings");
        let batch_key = format!("{}..{}", first.idempotency_key, last.idempotency_key);
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(signer) = &self.signer {
            let id = webhook_id(&batch_key);
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request
                .header("webhook-signature", signer.sign(&id, timestamp, &body))
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string());
        }
        let mut request = request.header("Idempotency-Key", batch_key);
        if let Some(token) = &self.bearer_token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.send(body).map_err(|e| self.request_error(e))?;
        let status = response.status();
        if status.is_success() {
            tracing::debug!(sink = %self.name, events = batch.len(), "batch acknowledged");
            return Ok(());
        }
        let mut reason = Vec::new();
        // The status alone already says what failed; a body cut short or lost adds nothing.
        let _ = response
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_BYTES)
            .read_to_end(&mut reason);
        Err(SinkError::Status {
            sink: self.name.clone(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&reason).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use crate::sinks::tests::event;
    use std::collections::{HashMap, HashSet};
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::{self, JoinHandle};
    use std::time::Instant;

    #[derive(Clone, Copy)]
    enum Reply {
        /// Stores nothing and answers this status.
        Fail(u16),
        /// Stores the events, then never answers: the acknowledgement is lost.
        StoreAndHang,
        /// Stores the events and answers 200.
        Store,
    }

    /// A receiver that dedupes on each event's key, as the sink's docs ask receivers to.
    #[derive(Default)]
    struct Receiver {
        /// Headers (lower-case names) of every request, in order.
        requests: Vec<HashMap<String, String>>,
        stored: Vec<OutboxEvent>,
        duplicates_dropped: usize,
    }

    /// Serves one connection per scripted reply, then returns what it received.
    fn spawn_receiver(script: Vec<Reply>) -> (u16, JoinHandle<Receiver>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let mut receiver = Receiver::default();
            let mut stored_keys = HashSet::new();
            let mut hung = Vec::new();
            for reply in script {
                let (stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut reader = BufReader::new(stream);
                let (headers, body) = read_request(&mut reader);
                receiver.requests.push(headers);
                if !matches!(reply, Reply::Fail(_)) {
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let events: Vec<OutboxEvent> =
                        serde_json::from_value(body["events"].clone()).unwrap();
                    for event in events {
                        if stored_keys.insert(event.idempotency_key.clone()) {
                            receiver.stored.push(event);
                        } else {
                            receiver.duplicates_dropped += 1;
                        }
                    }
                }
                let mut stream = reader.into_inner();
                let answer = match reply {
                    Reply::Fail(status) => format!(
                        "HTTP/1.1 {status} Scripted\r\nContent-Length: 13\r\n\
                         Connection: close\r\n\r\nscripted fail"
                    ),
                    Reply::Store => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
                    }
                    Reply::StoreAndHang => {
                        hung.push(stream);
                        continue;
                    }
                };
                stream.write_all(answer.as_bytes()).unwrap();
            }
            receiver
        });
        (port, server)
    }

    fn read_request(reader: &mut BufReader<TcpStream>) -> (HashMap<String, String>, Vec<u8>) {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("POST /hook HTTP/1.1"), "{line:?}");
        let mut headers = HashMap::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
        let mut body = vec![0; headers["content-length"].parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        (headers, body)
    }

    #[test]
    fn retrying_through_errors_and_a_hang_leaves_one_copy_of_each_event() {
        let timeout = Duration::from_millis(300);
        let script = vec![
            Reply::Fail(500),
            Reply::Fail(500),
            Reply::StoreAndHang,
            Reply::Store,
        ];
        let (port, receiver) = spawn_receiver(script);
        let url = format!("http://127.0.0.1:{port}/hook");
        let mut sink = WebhookSink::new(&url, Some("s3cret".into()), timeout).unwrap();
        let batch = [event(1), event(2), event(3)];

        // The outbox worker's loop: the same batch until acknowledged.
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let mut failures = Vec::new();
        loop {
            let started = Instant::now();
            match sink.deliver(&batch) {
                Ok(()) => break,
                Err(e) => failures.push((e, started.elapsed())),
            }
            assert!(failures.len() < 10, "never acknowledged: {failures:?}");
            thread::sleep(backoff.next_delay());
        }
        let receiver = receiver.join().unwrap();

        assert_eq!(failures.len(), 3, "{failures:?}");
        for (failure, _) in &failures[..2] {
            assert!(
                matches!(failure, SinkError::Status { status: 500, .. }),
                "{failure}"
            );
        }
        let (hang, hang_took) = &failures[2];
        assert!(matches!(hang, SinkError::Timeout { .. }), "{hang}");
        assert!(
            *hang_took < timeout + Duration::from_secs(1),
            "{hang_took:?}"
        );
        assert!(failures.iter().all(|(failure, _)| failure.retryable()));

        assert_eq!(receiver.stored, batch);
        assert_eq!(receiver.duplicates_dropped, batch.len());
        assert_eq!(receiver.requests.len(), 4);
        for headers in &receiver.requests {
            assert_eq!(headers["authorization"], "Bearer s3cret");
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(headers["idempotency-key"], "case-1:filed:1..case-3:filed:1");
        }
    }

    #[test]
    fn a_client_error_is_not_retryable_and_hides_the_url_credentials() {
        let (port, receiver) = spawn_receiver(vec![Reply::Fail(404)]);
        let url = format!("http://robot:hunter2@127.0.0.1:{port}/hook");
        let mut sink = WebhookSink::new(&url, None, Duration::from_secs(5)).unwrap();
        let err = sink.deliver(&[event(1)]).unwrap_err();
        receiver.join().unwrap();

        assert!(
            matches!(err, SinkError::Status { status: 404, .. }),
            "{err}"
        );
        assert!(!err.retryable());
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "webhook:http://***@127.0.0.1:{port}/hook: answered HTTP 404: \"scripted fail\""
            )
        );

        let err = WebhookSink::new("ftp://robot:hunter2@host/x", None, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(err, SinkError::InvalidUrl { .. }) && !err.retryable());
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn an_unreachable_port_is_a_quick_retryable_connection_error() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/hook");
        let mut sink = WebhookSink::new(&url, None, Duration::from_secs(5)).unwrap();
        assert!(sink.deliver(&[]).is_ok(), "an empty batch needs no request");

        let started = Instant::now();
        let err = sink.deliver(&[event(1)]).unwrap_err();
        assert!(
            matches!(err, SinkError::Connect { .. }) && err.retryable(),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// The example of the Standard Webhooks specification, and one computed with Python's
    /// `hmac` (`base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body,
    /// hashlib.sha256).digest())`).
    #[test]
    fn signatures_match_independently_computed_vectors() {
        let signer = WebhookSigner::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let signer =
            WebhookSigner::from_secret("whsec_Y2dib3QgdGVzdCBrZXkgMDEyMzQ1Njc4OQ==\n").unwrap();
        assert_eq!(
            signer.sign("msg_1", 1700000000, br#"{"events":[]}"#),
            "v1,8hTxKy0VI9X40S8LoMkZ9SGZCxNkTKmKN1mhf18bB/g="
        );
        // The prefix may be left off; anything not base64 is refused without echoing it.
        assert!(WebhookSigner::from_secret("Y2dib3QgdGVzdCBrZXkgMDEyMzQ1Njc4OQ==").is_ok());
        let err = WebhookSigner::from_secret("whsec_not base64!").unwrap_err();
        assert!(!err.contains("not base64!"), "{err}");
        assert!(WebhookSigner::from_secret("whsec_").is_err());
        assert_eq!(format!("{signer:?}"), "WebhookSigner(***)");
        // Stable per batch, different between batches, ASCII.
        assert_eq!(webhook_id("a..b"), webhook_id("a..b"));
        assert_ne!(webhook_id("a..b"), webhook_id("a..c"));
        assert!(webhook_id("案-1..案-2").is_ascii());
    }

    /// What a receiver does with a signed request (Standard Webhooks): recompute the
    /// signature of id, timestamp and body with the shared key; refuse stale timestamps.
    fn verify(key: &[u8], headers: &HashMap<String, String>, body: &[u8]) -> bool {
        let (Some(id), Some(timestamp), Some(signatures)) = (
            headers.get("webhook-id"),
            headers.get("webhook-timestamp"),
            headers.get("webhook-signature"),
        ) else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let Ok(sent) = timestamp.parse::<u64>() else {
            return false;
        };
        if now.abs_diff(sent) > 300 {
            return false;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        signatures
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    }

    #[test]
    fn a_receiver_verifies_signed_batches_and_rejects_a_tampered_body() {
        let key = b"cgbot test key 0123456789".to_vec();
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&key)
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // First request: verified, then answered 503 (so the batch comes again); the
        // others: 204 when the signature holds, 401 when not.
        let server = thread::spawn(move || {
            let mut seen = Vec::new();
            for n in 0..3 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let (headers, body) = read_request(&mut reader);
                let valid = verify(&key, &headers, &body);
                let status = match (n, valid) {
                    (_, false) => "401 Unauthorized",
                    (0, true) => "503 Busy",
                    (_, true) => "204 No Content",
                };
                reader
                    .into_inner()
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .unwrap();
                seen.push((headers, body, valid));
            }
            seen
        });
        let url = format!("http://127.0.0.1:{port}/hook");
        let signer = WebhookSigner::from_secret(&secret).unwrap();
        let mut sink = WebhookSink::new(&url, None, Duration::from_secs(5))
            .unwrap()
            .signed(Some(signer));
        let batch = [event(1), event(2)];
        let err = sink.deliver(&batch).unwrap_err();
        assert!(
            matches!(err, SinkError::Status { status: 503, .. }),
            "{err}"
        );
        sink.deliver(&batch).unwrap();

        // A forger with the headers of a real delivery and a changed body.
        let (headers, body) = {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let original = sink_request_headers(&batch, &secret);
            let tampered = String::from_utf8(original.1.clone())
                .unwrap()
                .replace("illegal_parking", "exposed_litter");
            let mut request = format!(
                "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
                tampered.len()
            );
            for (name, value) in &original.0 {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            request.push_str(&tampered);
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
            original
        };
        let seen = server.join().unwrap();
        assert!(seen[0].2 && seen[1].2, "both deliveries verify");
        assert!(!seen[2].2, "the tampered body does not");
        // The same batch keeps its webhook-id across the retry; the forger reused it too.
        assert_eq!(seen[0].0["webhook-id"], seen[1].0["webhook-id"]);
        assert_eq!(seen[0].0["webhook-id"], headers[0].1);
        assert_eq!(seen[0].1, body, "the body is what the sink signs");
        assert_eq!(
            seen[0].0["webhook-id"],
            webhook_id("case-1:filed:1..case-2:filed:1")
        );
    }

    /// The signing headers and body a sink sends for `batch`, made the sink's way.
    fn sink_request_headers(
        batch: &[OutboxEvent],
        secret: &str,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let body = serde_json::to_vec(&WebhookBody { events: batch }).unwrap();
        let id = webhook_id(&format!(
            "{}..{}",
            batch[0].idempotency_key,
            batch[batch.len() - 1].idempotency_key
        ));
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signature = WebhookSigner::from_secret(secret)
            .unwrap()
            .sign(&id, timestamp, &body);
        (
            vec![
                ("webhook-id", id),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
            ],
            body,
        )
    }
}
