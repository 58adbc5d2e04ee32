use super::{Sink, SinkError};
use crate::redact::redact_url;
use crate::store::OutboxEvent;
use std::io::Read;
use std::time::Duration;

/// POSTs each batch as `{"events": [OutboxEvent, …]}` with `Content-Type: application/json`,
/// `Authorization: Bearer …` when a token is set, and `Idempotency-Key: <first key>..<last
/// key>`. Any 2xx acknowledges the whole batch.
///
/// Delivery is at least once: when an acknowledgement is lost (timeout, crash) the batch
/// comes again, possibly cut differently. The batch header only names the batch;
/// receivers must dedupe on each event's own `idempotency_key`.
pub struct WebhookSink {
    name: String,
    url: String,
    bearer_token: Option<String>,
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
            timeout,
            agent,
        })
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
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", batch_key);
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
}
