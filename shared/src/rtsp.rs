//! The RTSP URL of a camera: untrusted input that may carry a credential.
//!
//! [`RtspUrl`] only exists for `rtsp://` and `rtsps://` URLs with a host. Its `Debug` and
//! `Display` mask the password, so a URL that reaches a log line or an error prints
//! `rtsp://admin:***@host/…`. The full URL is available only through [`RtspUrl::expose`], which the
//! worker calls once, to build FFmpeg's argv, and serde, which puts it into `event.created` (the
//! one message a credential travels in).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use url::Url;

/// Why a string is not an acceptable camera URL. The messages never repeat the input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtspUrlError {
    #[error("is not a valid URL")]
    Malformed,
    #[error("must use the rtsp or rtsps scheme")]
    Scheme,
    #[error("must name a host")]
    NoHost,
    #[error("must not contain whitespace or control characters")]
    Whitespace,
    #[error("must be at most {MAX_LEN} bytes")]
    TooLong,
}

/// The longest URL accepted, in bytes.
pub const MAX_LEN: usize = 2048;

/// A validated `rtsp://` / `rtsps://` URL, possibly with a username and password.
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUrl(Url);

impl RtspUrl {
    /// Parses and validates `s`; on error the message does not contain `s`.
    /// The URL must be exactly what was typed: whitespace or a control character anywhere is
    /// refused, not trimmed or encoded away.
    pub fn parse(s: &str) -> Result<Self, RtspUrlError> {
        if s.len() > MAX_LEN {
            return Err(RtspUrlError::TooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RtspUrlError::Whitespace);
        }
        let url = Url::parse(s).map_err(|_| RtspUrlError::Malformed)?;
        match url.scheme() {
            "rtsp" | "rtsps" => {}
            _ => return Err(RtspUrlError::Scheme),
        }
        match url.host_str() {
            Some(h) if !h.is_empty() => {}
            _ => return Err(RtspUrlError::NoHost),
        }
        Ok(Self(url))
    }

    /// The full URL, credential included. Only for FFmpeg's argv and the wire.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The username in the URL, if any (percent-decoded).
    pub fn username(&self) -> Option<String> {
        let u = self.0.username();
        (!u.is_empty()).then(|| percent_decode(u))
    }

    /// The password in the URL, if any (percent-decoded).
    pub fn password(&self) -> Option<String> {
        self.0.password().map(percent_decode)
    }

    /// The host (IP address or name).
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The port, or 554 (322 for rtsps) when the URL names none.
    pub fn port(&self) -> u16 {
        self.0
            .port()
            .unwrap_or(if self.0.scheme() == "rtsps" { 322 } else { 554 })
    }

    /// What identifies the camera's stream: lower-case host, port (the default made explicit),
    /// path and query. Two cameras with the same key are the same stream, whatever their
    /// credentials; two behind one address on other ports or paths are not.
    pub fn stream_key(&self) -> String {
        let query = self.0.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!(
            "{}:{}{}{query}",
            self.host().to_ascii_lowercase(),
            self.port(),
            self.0.path()
        )
    }

    /// The same URL with no username or password.
    pub fn without_credentials(&self) -> Self {
        let mut u = self.0.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        Self(u)
    }

    /// The same URL with this username and password (either may be empty).
    pub fn with_credentials(&self, username: Option<&str>, password: Option<&str>) -> Self {
        let mut u = self.0.clone();
        let _ = u.set_username(username.unwrap_or(""));
        let _ = u.set_password(password.filter(|p| !p.is_empty()));
        Self(u)
    }

    /// The URL as it may be shown: the password replaced by `***`.
    pub fn masked(&self) -> String {
        if self.0.password().is_some() {
            let mut u = self.0.clone();
            let _ = u.set_password(Some("***"));
            u.to_string()
        } else {
            self.0.to_string()
        }
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtspUrl({})", self.masked())
    }
}

impl fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for RtspUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for RtspUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RtspUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `text` without the userinfo of any URL in it (`rtsp://user:pass@host` becomes
/// `rtsp://host`): FFmpeg's and ffprobe's messages in the worker, and capture errors again in
/// event-api before they are shown. Everything
/// from `://` to the last `@` of the same word goes, so a password holding `/` or `@` does not
/// survive in part (a path with an `@` loses its host: a lesser evil).
pub fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let word = &tail[..end];
        let kept = match word.rfind('@') {
            Some(at) => &word[at + 1..],
            None => word,
        };
        // The rest of the word may hold another URL: scan it too.
        let next = kept.find("://").map_or(kept.len(), |j| j);
        out.push_str(&kept[..next]);
        rest = &tail[end - (kept.len() - next)..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whitespace_control_characters_and_overlong_urls_are_refused() {
        for bad in [
            "rtsp://host/a b",
            "rtsp://host/a\nb",
            "rtsp://host/a\tb",
            " rtsp://host/a",
            "rtsp://host/a\r",
            "rtsp://host/a\u{7f}",
        ] {
            assert_eq!(
                RtspUrl::parse(bad),
                Err(RtspUrlError::Whitespace),
                "{bad:?}"
            );
        }
        let long = format!("rtsp://host/{}", "a".repeat(MAX_LEN));
        assert_eq!(RtspUrl::parse(&long), Err(RtspUrlError::TooLong));
        assert!(RtspUrl::parse(&long[..MAX_LEN]).is_ok());
    }

    #[test]
    fn the_stream_key_is_host_port_and_path_without_credentials() {
        let key = |s: &str| RtspUrl::parse(s).unwrap().stream_key();
        assert_eq!(
            key("rtsp://u:p@Cam.Local/live?ch=1"),
            "cam.local:554/live?ch=1"
        );
        assert_eq!(
            key("rtsp://cam.local:554/live?ch=1"),
            key("rtsp://x:y@CAM.local/live?ch=1")
        );
        assert_ne!(key("rtsp://10.0.0.1:554/a"), key("rtsp://10.0.0.1:8554/a"));
        assert_ne!(key("rtsp://10.0.0.1/a"), key("rtsp://10.0.0.1/b"));
        assert_eq!(key("rtsps://[::1]/s"), "[::1]:322/s");
    }

    #[test]
    fn only_rtsp_schemes_with_a_host() {
        assert!(RtspUrl::parse("rtsp://10.0.0.5:554/stream").is_ok());
        assert!(RtspUrl::parse("rtsps://cam.example/stream").is_ok());
        assert_eq!(
            RtspUrl::parse("http://10.0.0.5/"),
            Err(RtspUrlError::Scheme)
        );
        assert_eq!(
            RtspUrl::parse("file:///etc/passwd"),
            Err(RtspUrlError::Scheme)
        );
        assert_eq!(RtspUrl::parse("rtsp://"), Err(RtspUrlError::NoHost));
        assert_eq!(RtspUrl::parse("not-a-url"), Err(RtspUrlError::Malformed));
    }

    #[test]
    fn the_password_never_prints() {
        let u = RtspUrl::parse("rtsp://admin:s3cr%40t@10.0.0.5:554/cam?channel=1").unwrap();
        assert_eq!(u.password().as_deref(), Some("s3cr@t"));
        assert_eq!(u.username().as_deref(), Some("admin"));
        for shown in [format!("{u}"), format!("{u:?}"), u.masked()] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("admin:***@10.0.0.5"), "{shown}");
        }
        assert!(u.expose().contains("s3cr%40t"));
        let bare = u.without_credentials();
        assert_eq!(bare.expose(), "rtsp://10.0.0.5:554/cam?channel=1");
        let back = bare.with_credentials(Some("admin"), Some("s3cr@t"));
        assert_eq!(back.password().as_deref(), Some("s3cr@t"));
    }

    #[test]
    fn serde_round_trip_keeps_the_credential_for_the_wire() {
        let u = RtspUrl::parse("rtsp://u:p@h/x").unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"rtsp://u:p@h/x\"");
        assert_eq!(serde_json::from_str::<RtspUrl>(&json).unwrap(), u);
        assert!(serde_json::from_str::<RtspUrl>("\"http://h/\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_masks_any_password(s in ".{0,80}", pw in "[a-zA-Z0-9]{4,12}") {
            let _ = RtspUrl::parse(&s);
            let u = RtspUrl::parse(&format!("rtsp://user:{pw}@cam.local/{}", s.len())).unwrap();
            prop_assert!(!u.masked().contains(&pw));
            let debug = format!("{:?}", u);
            prop_assert!(!debug.contains(&pw));
        }
    }

    #[test]
    fn userinfo_is_dropped_from_any_url_in_a_text() {
        assert_eq!(
            scrub_userinfo("rtsp://admin:s3cret@10.0.0.5:554/live: 401 Unauthorized"),
            "rtsp://10.0.0.5:554/live: 401 Unauthorized"
        );
        assert_eq!(
            scrub_userinfo("a rtsps://u:p@h b rtsp://x@y/z 'rtsp://k:l@m'"),
            "a rtsps://h b rtsp://y/z 'rtsp://m'"
        );
        assert_eq!(scrub_userinfo("no url here"), "no url here");
        assert_eq!(scrub_userinfo("rtsp://p@ss@h/x"), "rtsp://h/x");
        assert_eq!(scrub_userinfo("rtsp://u:pa/ss@h/x"), "rtsp://h/x");
        assert_eq!(scrub_userinfo("://"), "://");
    }

    proptest! {
        #[test]
        fn no_password_survives_the_scrubber(
            user in "[a-z0-9._~-]{1,12}",
            password in "[!-~]{1,24}",
            prefix in "[ -~]{0,20}",
            path in "(/[a-z0-9@:]{0,10}){0,3}",
        ) {
            prop_assume!(!password.contains(['"', '\'']));
            prop_assume!(!prefix.contains("://"));
            let text = format!("{prefix} rtsp://{user}:{password}@cam.local:554{path}: refused");
            let scrubbed = scrub_userinfo(&text);
            let secret = format!("{user}:{password}");
            prop_assert!(!scrubbed.contains(&secret), "{scrubbed}");
            prop_assert!(!scrubbed.contains(&format!(":{password}@")), "{scrubbed}");
        }

        #[test]
        fn the_scrubber_never_panics(s in ".{0,120}") {
            let _ = scrub_userinfo(&s);
        }
    }
}
