//! Camera credentials kept out of camera files. A camera (or a file's `[defaults]`) names
//! its credentials instead of carrying them in its stream URLs:
//!
//! ```toml
//! [[camera]]
//! id = "cam-0001"
//! main_stream = "rtsp://10.1.2.3/main"
//! credentials = "district-7"          # [credentials.district-7] of the secrets file
//!
//! [[camera]]
//! id = "cam-0002"
//! main_stream = "rtsp://admin@10.1.2.4/main"
//! password_env = "CAM_0002_PASSWORD"  # the password from this environment variable
//! ```
//!
//! The secrets file (run.toml `secrets`, `--secrets` or `$CGBOT_SECRETS`):
//!
//! ```toml
//! [credentials.district-7]
//! user = "admin"
//! password = "s3cret:pass"
//! ```
//!
//! The loader puts them into the stream URLs in memory only, percent-encoded; the camera
//! file is never rewritten with them. A secrets file that others (not owner or group) may
//! read, or that group or others may write, is refused.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

/// The environment variable naming the secrets file when no other is given.
pub const SECRETS_ENV: &str = "CGBOT_SECRETS";

/// Where camera credentials come from when cameras are loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum Secrets {
    /// `credentials = "name"` from this secrets file (none: such a reference is an error);
    /// `password_env` from the environment.
    Resolve(Option<PathBuf>),
    /// References are checked but not resolved: stream URLs come without the credentials
    /// (for what never connects: the console, zone edits, replays).
    Skip,
}

impl Secrets {
    /// The secrets file of `$CGBOT_SECRETS`, if set.
    pub fn from_env() -> Self {
        Secrets::Resolve(
            std::env::var_os(SECRETS_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        )
    }

    /// `file` if given, else `$CGBOT_SECRETS`.
    pub fn file_or_env(file: Option<&Path>) -> Self {
        match file {
            Some(path) => Secrets::Resolve(Some(path.to_path_buf())),
            None => Self::from_env(),
        }
    }
}

/// One named credential of a secrets file; its `Debug` hides the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// None: the user name of the stream URL is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// A secrets file: named credentials.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    #[serde(default)]
    pub credentials: std::collections::BTreeMap<String, Credential>,
}

/// Reads a secrets file, refusing one that others may read or group and others may write.
pub fn read_secrets_file(path: &Path) -> Result<SecretsFile, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o026 != 0 || mode & 0o004 != 0 {
        return Err(format!(
            "{}: mode {mode:03o} lets others read or write it; make it 0600 (chmod 600)",
            path.display()
        ));
    }
    let text = super::read_text(path).map_err(|e| e.to_string())?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a camera says about its credentials.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(super) struct CredentialRef {
    pub credentials: Option<String>,
    pub password_env: Option<String>,
}

impl CredentialRef {
    fn is_empty(&self) -> bool {
        self.credentials.is_none() && self.password_env.is_none()
    }

    /// The camera's own reference, else the file's default; `Err(field)` for both kinds at once.
    pub(super) fn pick<'a>(
        own: &'a CredentialRef,
        defaults: &'a CredentialRef,
    ) -> Result<Option<&'a CredentialRef>, (bool, String)> {
        for (is_default, r) in [(false, own), (true, defaults)] {
            if r.credentials.is_some() && r.password_env.is_some() {
                return Err((
                    is_default,
                    "give `credentials` or `password_env`, not both".into(),
                ));
            }
        }
        Ok([own, defaults].into_iter().find(|r| !r.is_empty()))
    }
}

/// Resolves credential references against one secrets source; the file is read once, when
/// first needed.
pub(super) struct Resolver<'a> {
    secrets: &'a Secrets,
    file: Option<Result<HashMap<String, Credential>, String>>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(secrets: &'a Secrets) -> Self {
        Resolver {
            secrets,
            file: None,
        }
    }

    /// The URLs with the credentials put in (or as they are, when skipping); `Err((field,
    /// reason))` names the field of the reference or of the stream it cannot go into.
    pub(super) fn apply(
        &mut self,
        reference: &CredentialRef,
        streams: [(&str, &mut Option<String>); 2],
    ) -> Result<(), (String, String)> {
        let Secrets::Resolve(file) = self.secrets else {
            return Ok(());
        };
        let credential = if let Some(name) = &reference.credentials {
            let field = "credentials".to_string();
            let Some(path) = file else {
                return Err((
                    field,
                    format!(
                        "`{name}` needs a secrets file (run.toml `secrets`, --secrets or \
                         ${SECRETS_ENV})"
                    ),
                ));
            };
            let entries = self.file.get_or_insert_with(|| {
                read_secrets_file(path).map(|f| f.credentials.into_iter().collect())
            });
            match entries {
                Err(e) => return Err((field, format!("secrets file {e}"))),
                Ok(entries) => entries.get(name).cloned().ok_or_else(|| {
                    (
                        field,
                        format!("unknown credential `{name}` (not in {})", path.display()),
                    )
                })?,
            }
        } else if let Some(var) = &reference.password_env {
            let password = std::env::var(var).map_err(|e| {
                (
                    "password_env".to_string(),
                    format!("environment variable `{var}`: {e}"),
                )
            })?;
            Credential {
                user: None,
                password,
            }
        } else {
            return Ok(());
        };
        for (field, stream) in streams {
            if let Some(url) = stream {
                *url = inject(url, &credential).map_err(|e| (field.to_string(), e))?;
            }
        }
        Ok(())
    }
}

/// What a user name or password may hold unencoded in a URL: the unreserved characters.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `url` with the credential's user (else the URL's own) and password, percent-encoded.
pub(super) fn inject(url: &str, credential: &Credential) -> Result<String, String> {
    let Some(scheme_end) = url.find("://") else {
        return Err("not a URL (no `://`)".into());
    };
    let start = scheme_end + 3;
    let authority_len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    let authority = &url[start..start + authority_len];
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(
            "the URL carries a password and the camera references credentials; remove the \
             password from the URL"
                .into(),
        );
    }
    let user = match (&credential.user, userinfo) {
        (Some(user), _) => utf8_percent_encode(user, USERINFO).to_string(),
        (None, Some(user)) => user.to_string(),
        (None, None) => {
            return Err(
                "no user name: put one in the URL (rtsp://user@host/…) or in the credential".into(),
            )
        }
    };
    Ok(format!(
        "{}{user}:{}@{host}{}",
        &url[..start],
        utf8_percent_encode(&credential.password, USERINFO),
        &url[start + authority_len..]
    ))
}

/// `url` without its user information, and the user and password it had (percent-decoded).
pub(super) fn split_userinfo(url: &str) -> (String, Option<(String, Option<String>)>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), None);
    };
    let start = scheme_end + 3;
    let authority_len = url[start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - start);
    let authority = &url[start..start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let userinfo = &authority[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (decode(user), Some(decode(password))),
        None => (decode(userinfo), None),
    };
    (
        format!("{}{}", &url[..start], &url[start + at + 1..]),
        Some((user, password)),
    )
}

/// Writes a secrets file readable by its owner alone (0600), through a temporary file.
pub(super) fn write_secrets_file(path: &Path, file: &SecretsFile) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = format!(
        "# Camera credentials named by camera files (`credentials = \"…\"`). Keep this file\n         # private (mode 0600) and out of version control.\n\n{}",
        toml::to_string(file).map_err(|e| e.to_string())?
    );
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    super::file::write_replacing(path, &text)
        .map_err(|e| format!("{}: {}", e.path.display(), e.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: Option<&str>, password: &str) -> Credential {
        Credential {
            user: user.map(Into::into),
            password: password.into(),
        }
    }

    #[test]
    fn credentials_go_into_the_url_percent_encoded() {
        assert_eq!(
            inject(
                "rtsp://10.0.0.1:554/main?x=1",
                &cred(Some("ad min"), "p@ss:w/rd%")
            )
            .unwrap(),
            "rtsp://ad%20min:p%40ss%3Aw%2Frd%25@10.0.0.1:554/main?x=1"
        );
        // The URL's user stays when the credential has none.
        assert_eq!(
            inject("rtsp://admin@h/s", &cred(None, "pw")).unwrap(),
            "rtsp://admin:pw@h/s"
        );
        assert_eq!(
            inject("rtsp://old@h", &cred(Some("new"), "pw")).unwrap(),
            "rtsp://new:pw@h"
        );
        let err = inject("rtsp://u:p@h/s", &cred(Some("u"), "x")).unwrap_err();
        assert!(err.contains("carries a password"), "{err}");
        assert!(inject("rtsp://h/s", &cred(None, "x"))
            .unwrap_err()
            .contains("no user name"));
        assert!(inject("h/s", &cred(Some("u"), "x")).is_err());
    }

    #[test]
    fn a_secrets_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "[credentials.a]\nuser = \"u\"\npassword = \"p\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secrets_file(&path).unwrap_err();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let file = read_secrets_file(&path).unwrap();
        assert_eq!(file.credentials["a"], cred(Some("u"), "p"));
        assert!(!format!("{file:?}").contains("\"p\""), "{file:?}");
        let err = read_secrets_file(&dir.path().join("none.toml")).unwrap_err();
        assert!(err.contains("none.toml"), "{err}");
    }
}
