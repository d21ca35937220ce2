//! Camera passwords sealed with an authenticated cipher (XChaCha20-Poly1305), so that the
//! database, the outbox, the `EVENTS` stream and NATS's store on disk only ever hold ciphertext.
//! event-api seals; workers, which hold the same keys, open.
//!
//! A key is 32 random bytes with an id: `CAMERA_SECRET_KEY=<id>:<base64 key>` is the key that
//! seals; `CAMERA_SECRET_KEYS_OLD` (the same form, comma-separated) lists retired keys that can
//! still open what they sealed. A sealed value is `v1.<key id>.<base64(nonce ‖ ciphertext)>`,
//! bound to its camera (the camera id is the associated data), so a value copied onto another
//! camera does not open. Rotating: add the new key as `CAMERA_SECRET_KEY`, move the old one to
//! `CAMERA_SECRET_KEYS_OLD`; event-api re-seals every camera with the new key at start, and once
//! every worker has the new key the old one can go.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

const PREFIX: &str = "v1";
const NONCE_LEN: usize = 24;

/// Why keys could not be read or a value not opened. The messages never hold a key or a
/// password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("a key is <id>:<base64 of 32 bytes>, the id letters, digits, '-' or '_'")]
    BadKey,
    #[error("not a sealed value")]
    Malformed,
    #[error("sealed with key {0:?}, which this process does not have")]
    UnknownKey(String),
    #[error("does not open with its key (altered, or sealed for another camera)")]
    Rejected,
}

/// The keys of this process: the one that seals and every one that opens.
#[derive(Clone)]
pub struct CameraKeys {
    current: String,
    keys: HashMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for CameraKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        write!(f, "CameraKeys(current {:?}, ids {ids:?})", self.current)
    }
}

fn parse_key(s: &str) -> Result<(String, XChaCha20Poly1305), SealError> {
    let (id, key) = s.trim().split_once(':').ok_or(SealError::BadKey)?;
    let id_ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let bytes = B64.decode(key.trim()).map_err(|_| SealError::BadKey)?;
    if !id_ok || bytes.len() != 32 {
        return Err(SealError::BadKey);
    }
    let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?;
    Ok((id.to_owned(), cipher))
}

impl CameraKeys {
    /// Reads `current` (`CAMERA_SECRET_KEY`) and `old` (`CAMERA_SECRET_KEYS_OLD`, may be empty).
    pub fn parse(current: &str, old: &str) -> Result<Self, SealError> {
        let (id, cipher) = parse_key(current)?;
        let mut keys = HashMap::from([(id.clone(), cipher)]);
        for entry in old.split(',').filter(|s| !s.trim().is_empty()) {
            let (old_id, cipher) = parse_key(entry)?;
            keys.entry(old_id).or_insert(cipher);
        }
        Ok(Self { current: id, keys })
    }

    /// A fresh key in the `<id>:<base64>` form (for `scripts/dev.sh` and tests).
    pub fn generate(id: &str) -> String {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        format!("{id}:{}", B64.encode(key))
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Seals `password` for `camera` with the current key.
    pub fn seal(&self, camera: Uuid, password: &str) -> String {
        use rand::RngCore;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.current];
        let payload = Payload {
            msg: password.as_bytes(),
            aad: camera.as_bytes(),
        };
        // Encryption with a valid key and nonce does not fail for inputs this small.
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}.{}.{}", self.current, B64.encode(out))
    }

    /// The key id `sealed` names, if it is a sealed value.
    pub fn key_id(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, '.');
        (parts.next() == Some(PREFIX)).then_some(())?;
        let id = parts.next()?;
        parts.next().map(|_| id)
    }

    /// Opens `sealed`, which must have been sealed for `camera`.
    pub fn open(&self, camera: Uuid, sealed: &str) -> Result<String, SealError> {
        let id = Self::key_id(sealed).ok_or(SealError::Malformed)?;
        let body = sealed
            .rsplit_once('.')
            .map(|(_, b)| b)
            .ok_or(SealError::Malformed)?;
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = B64.decode(body).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: camera.as_bytes(),
        };
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Rejected)?;
        String::from_utf8(plain).map_err(|_| SealError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_password_opens_for_its_camera_only() {
        let keys = CameraKeys::parse(&CameraKeys::generate("k1"), "").unwrap();
        let (cam, other) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = keys.seal(cam, "Sup3r-secret");
        assert!(sealed.starts_with("v1.k1."), "{sealed}");
        assert!(!sealed.contains("Sup3r-secret"));
        assert_ne!(
            sealed,
            keys.seal(cam, "Sup3r-secret"),
            "a fresh nonce each time"
        );
        assert_eq!(keys.open(cam, &sealed).unwrap(), "Sup3r-secret");
        assert_eq!(keys.open(other, &sealed), Err(SealError::Rejected));
        let mut altered = sealed.clone();
        altered.replace_range(sealed.len() - 4.., "AAAA");
        assert_eq!(keys.open(cam, &altered), Err(SealError::Rejected));
        assert_eq!(keys.open(cam, "Sup3r-secret"), Err(SealError::Malformed));
    }

    #[test]
    fn retired_keys_still_open_and_unknown_ones_are_named() {
        let old = CameraKeys::generate("2026-01");
        let new = CameraKeys::generate("2026-06");
        let before = CameraKeys::parse(&old, "").unwrap();
        let cam = Uuid::now_v7();
        let sealed = before.seal(cam, "pw");
        let after = CameraKeys::parse(&new, &old).unwrap();
        assert_eq!(after.open(cam, &sealed).unwrap(), "pw");
        assert_eq!(CameraKeys::key_id(&after.seal(cam, "pw")), Some("2026-06"));
        let only_new = CameraKeys::parse(&new, "").unwrap();
        assert_eq!(
            only_new.open(cam, &sealed),
            Err(SealError::UnknownKey("2026-01".into()))
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        for bad in ["", "k1", "k1:", "k1:c2hvcnQ=", "bad id:AAAA", ":AAAAAAAA"] {
            let e = CameraKeys::parse(bad, "").unwrap_err();
            assert_eq!(e, SealError::BadKey, "{bad:?}");
        }
        let keys = CameraKeys::parse(&CameraKeys::generate("k1"), "").unwrap();
        assert!(!format!("{keys:?}").contains(':'), "{keys:?}");
    }
}
