//! HTTP Digest authentication as RTSP cameras use it (RFC 2617 with MD5). Most cameras
//! ship with it switched on, and clients only send credentials after a 401 names the
//! realm and nonce, so the simulator needs the full challenge-response round trip.

use std::collections::HashMap;

use md5::{Digest, Md5};

/// The realm the simulator announces; it is part of every response hash.
pub const REALM: &str = "cgbot-sim";

/// User name and password every camera of the simulator accepts.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// The `WWW-Authenticate` value of a 401 response. It offers no `qop`, the form ffmpeg
/// and most cameras use; clients that answer with `qop=auth` anyway are accepted.
pub(super) fn challenge(nonce: &str) -> String {
    format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5")
}

/// Whether `authorization` (the header value) proves knowledge of the password for this
/// request: right user, our realm and nonce, and a response hash that matches.
pub(super) fn verify(
    credentials: &Credentials,
    method: &str,
    nonce: &str,
    authorization: Option<&str>,
) -> bool {
    let Some(params) = authorization.and_then(parse_digest) else {
        return false;
    };
    let field = |name: &str| params.get(name).map(String::as_str);
    if field("username") != Some(credentials.user.as_str())
        || field("realm") != Some(REALM)
        || field("nonce") != Some(nonce)
    {
        return false;
    }
    let (Some(uri), Some(response)) = (field("uri"), field("response")) else {
        return false;
    };
    let qop = match field("qop") {
        None => None,
        Some("auth") => match (field("nc"), field("cnonce")) {
            (Some(nc), Some(cnonce)) => Some(QualityOfProtection { nc, cnonce }),
            _ => return false,
        },
        Some(_) => return false,
    };
    let expected = response_hash(credentials, REALM, method, uri, nonce, qop.as_ref());
    expected.eq_ignore_ascii_case(response)
}

/// The client's nonce count and nonce under `qop=auth`.
struct QualityOfProtection<'a> {
    nc: &'a str,
    cnonce: &'a str,
}

/// The `response` of RFC 2617 §3.2.2.1: MD5(HA1:nonce[:nc:cnonce:qop]:HA2), with
/// HA1 = MD5(user:realm:password) and HA2 = MD5(method:uri).
fn response_hash(
    credentials: &Credentials,
    realm: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&QualityOfProtection>,
) -> String {
    let ha1 = md5_hex(&format!(
        "{}:{realm}:{}",
        credentials.user, credentials.password
    ));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        Some(q) => md5_hex(&format!("{ha1}:{nonce}:{}:{}:auth:{ha2}", q.nc, q.cnonce)),
    }
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The parameters of a `Digest k=v, k="v", …` header, or `None` for another scheme.
fn parse_digest(header: &str) -> Option<HashMap<String, String>> {
    let (scheme, mut rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (value, remainder) = match after.strip_prefix('"') {
            // Quoted values may contain commas; they end at the next quote.
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_at(after.find(',').unwrap_or(after.len())),
        };
        params.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        rest = remainder;
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::damaged_text;

    fn mufasa() -> Credentials {
        Credentials {
            user: "Mufasa".into(),
            password: "Circle Of Life".into(),
        }
    }

    /// The worked example of RFC 2617 §3.5.
    #[test]
    fn rfc_2617_example() {
        let qop = QualityOfProtection {
            nc: "00000001",
            cnonce: "0a4f113b",
        };
        let response = response_hash(
            &mufasa(),
            "testrealm@host.com",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(&qop),
        );
        assert_eq!(response, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn verifies_without_and_with_qop() {
        let credentials = mufasa();
        let uri = "rtsp://127.0.0.1:8554/cam/0";
        let nonce = "abc123";
        let response = response_hash(&credentials, REALM, "DESCRIBE", uri, nonce, None);
        let header = format!(
            "Digest username=\"Mufasa\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
        );
        assert!(verify(&credentials, "DESCRIBE", nonce, Some(&header)));
        assert!(
            !verify(&credentials, "SETUP", nonce, Some(&header)),
            "method is hashed"
        );
        assert!(
            !verify(&credentials, "DESCRIBE", "other", Some(&header)),
            "stale nonce"
        );
        assert!(!verify(
            &credentials,
            "DESCRIBE",
            nonce,
            Some("Basic TXVmYXNhOng=")
        ));
        assert!(!verify(&credentials, "DESCRIBE", nonce, None));

        let qop = QualityOfProtection {
            nc: "00000002",
            cnonce: "c,n",
        };
        let response = response_hash(&credentials, REALM, "PLAY", uri, nonce, Some(&qop));
        let header = format!(
            "Digest username=\"Mufasa\",realm=\"{REALM}\",nonce=\"{nonce}\",uri=\"{uri}\",qop=auth,nc=00000002,cnonce=\"c,n\",response=\"{response}\""
        );
        assert!(verify(&credentials, "PLAY", nonce, Some(&header)));
    }

    const URI: &str = "rtsp://127.0.0.1:8554/cam/0";
    const NONCE: &str = "abc123";

    /// The `Authorization` value a client that knows the password sends for PLAY, with
    /// `qop=auth` so that every field counts.
    fn signed_authorization() -> String {
        let qop = QualityOfProtection {
            nc: "00000001",
            cnonce: "0a4f113b",
        };
        let response = response_hash(&mufasa(), REALM, "PLAY", URI, NONCE, Some(&qop));
        format!(
            "Digest username=\"Mufasa\", realm=\"{REALM}\", nonce=\"{NONCE}\", uri=\"{URI}\", \
             qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"{response}\""
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_authorization_is_refused(
            header in prop_oneof![
                "\\PC{0,200}",
                "(Digest|digest|Basic) ?( *[a-z]{1,8} *= *(\"[^\"]{0,12}\"?|[^,\"]{0,12}) *,?){0,8}",
            ],
        ) {
            prop_assert!(!verify(&mufasa(), "PLAY", NONCE, Some(&header)));
        }

        /// A damaged header passes only if every field the proof rests on survived (hex
        /// digits of the response may change case).
        #[test]
        fn damaged_authorization_passes_only_intact(header in damaged_text(&signed_authorization())) {
            if verify(&mufasa(), "PLAY", NONCE, Some(&header)) {
                let damaged = parse_digest(&header).expect("verified, so parsed");
                let signed = parse_digest(&signed_authorization()).expect("valid");
                for name in ["username", "realm", "nonce", "uri", "qop", "nc", "cnonce"] {
                    prop_assert_eq!(damaged.get(name), signed.get(name), "{}", name);
                }
                prop_assert!(damaged["response"].eq_ignore_ascii_case(&signed["response"]));
            }
        }
    }
}
