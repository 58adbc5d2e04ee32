//! Credentials never reach logs, errors or the API: URLs are shown with their user
//! information replaced.

/// Replaces the user and password of a URL with `***`, for logs and errors:
/// `http://user:pass@host/x` → `http://***@host/x`. Other URLs come back unchanged.
pub fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_len = url[authority_start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - authority_start);
    let authority = &url[authority_start..authority_start + authority_len];
    // The last '@' ends the user info: an unencoded '@' in a password must not leak the rest.
    match authority.rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_user_and_password_only() {
        assert_eq!(redact_url("http://user:pass@host/x"), "http://***@host/x");
        assert_eq!(
            redact_url("https://u:p@ss@host:8443?q=a@b"),
            "https://***@host:8443?q=a@b"
        );
        assert_eq!(redact_url("https://token@host"), "https://***@host");
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
        assert_eq!(redact_url("http://host:80/x"), "http://host:80/x");
    }
}
