//! Channel identity: an Ed25519 key pair whose public key is the channel id.
//!
//! The text form of a [`ChannelId`] is the 32-byte public key in lowercase RFC 4648 base32
//! without padding: 52 characters from `a-z2-7`, which survive URLs, shells and double-click
//! selection. Parsing accepts either case and rejects non-zero padding bits, so every id has
//! exactly one text form.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use thiserror::Error;

use super::VerifyError;

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Length of the text form of a 32-byte key.
const TEXT_LEN: usize = 52;

/// A channel's identity: its Ed25519 public key. Always a valid curve point, so it can verify.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelId(VerifyingKey);

impl ChannelId {
    /// Accepts 32 bytes as a channel id if they are a valid Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ParseChannelIdError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| ParseChannelIdError::NotAKey)
    }

    /// The 32 bytes of the public key, as they appear in messages.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Checks `signature` over `message` under this key. Strict verification rejects the
    /// malleable and small-order cases that lenient Ed25519 accepts.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), VerifyError> {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| VerifyError::BadSignature)
    }

    /// Names a raw channel field for error messages: the text form when it is a key, hex if not.
    pub(crate) fn describe(bytes: &[u8; 32]) -> String {
        match Self::from_bytes(bytes) {
            Ok(id) => id.to_string(),
            Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

impl PartialOrd for ChannelId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ChannelId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32_encode(self.as_bytes()))
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

impl FromStr for ChannelId {
    type Err = ParseChannelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(&base32_decode(s.trim())?)
    }
}

/// Why a text or byte string is not a channel id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseChannelIdError {
    /// Wrong number of characters.
    #[error("a channel id has {TEXT_LEN} characters, this has {0}")]
    Length(usize),
    /// A character outside `a-z` and `2-7`.
    #[error("{0:?} is not a base32 character (a channel id uses a-z and 2-7)")]
    Character(char),
    /// The last character carries non-zero padding bits: a mistyped id.
    #[error("the last character is not possible in a channel id (mistyped?)")]
    Padding,
    /// The bytes are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    NotAKey,
}

fn base32_encode(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(TEXT_LEN);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[((acc << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

fn base32_decode(s: &str) -> Result<[u8; 32], ParseChannelIdError> {
    let n = s.chars().count();
    if n != TEXT_LEN {
        return Err(ParseChannelIdError::Length(n));
    }
    let mut out = [0u8; 32];
    let (mut acc, mut bits, mut i) = (0u32, 0u32, 0usize);
    for c in s.chars() {
        let v = match c.to_ascii_lowercase() {
            l @ 'a'..='z' => l as u32 - 'a' as u32,
            d @ '2'..='7' => d as u32 - '2' as u32 + 26,
            _ => return Err(ParseChannelIdError::Character(c)),
        };
        acc = ((acc << 5) | v) & 0x1fff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[i] = (acc >> bits) as u8;
            i += 1;
        }
    }
    // 52 characters carry 260 bits: the 4 left over must be zero.
    if acc & ((1 << bits) - 1) != 0 {
        return Err(ParseChannelIdError::Padding);
    }
    Ok(out)
}

/// A channel's secret signing key. Whoever holds it can publish as the channel.
pub struct ChannelKey(SigningKey);

impl ChannelKey {
    /// Builds the key from a 32-byte secret seed. The caller supplies the randomness (the core
    /// never reads the OS), e.g. 32 bytes from `getrandom`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The channel id: this key's public half.
    pub fn channel_id(&self) -> ChannelId {
        ChannelId(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The text of a key file: the secret seed in base32, with the channel id beside it so an
    /// operator can tell key files apart. Comments explain what the file is.
    pub fn to_key_file(&self) -> String {
        format!(
            "# Fjord channel key. Whoever holds this file can publish as this channel:\n\
             # keep it private, and keep a copy: a lost key means a new channel id.\n\
             channel: {}\n\
             secret: {}\n",
            self.channel_id(),
            base32_encode(self.0.as_bytes()),
        )
    }

    /// Reads the text of a key file written by [`ChannelKey::to_key_file`]. When the file names
    /// its channel, that name must match the secret.
    pub fn from_key_file(text: &str) -> Result<Self, KeyFileError> {
        let (mut secret, mut channel) = (None, None);
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("secret", v)) => secret = Some(v),
                Some(("channel", v)) => channel = Some(v),
                _ => return Err(KeyFileError::UnknownLine(index + 1)),
            }
        }
        let secret = secret.ok_or(KeyFileError::MissingSecret)?;
        let key = Self::from_seed(&base32_decode(secret).map_err(KeyFileError::BadSecret)?);
        if let Some(named) = channel {
            let named: ChannelId = named.parse().map_err(KeyFileError::BadChannel)?;
            if named != key.channel_id() {
                return Err(KeyFileError::ChannelMismatch);
            }
        }
        Ok(key)
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, not even in a debug log.
        write!(f, "ChannelKey(channel: {})", self.channel_id())
    }
}

/// Why a key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyFileError {
    /// No `secret:` line.
    #[error("the key file has no 'secret:' line")]
    MissingSecret,
    /// The secret is not 52 base32 characters.
    #[error("the secret in the key file is malformed: {0}")]
    BadSecret(ParseChannelIdError),
    /// The `channel:` line is not a channel id.
    #[error("the channel line in the key file is malformed: {0}")]
    BadChannel(ParseChannelIdError),
    /// The `channel:` line names another channel than the secret's.
    #[error("the key file's channel line does not match its secret (edited or corrupted file)")]
    ChannelMismatch,
    /// A line that is neither a comment, `secret:` nor `channel:`.
    #[error("line {0} of the key file is not understood")]
    UnknownLine(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_is_52_chars() {
        for seed in 0..=255u8 {
            let id = ChannelKey::from_seed(&[seed; 32]).channel_id();
            let text = id.to_string();
            assert_eq!(text.len(), TEXT_LEN);
            assert!(text.bytes().all(|b| BASE32_ALPHABET.contains(&b)));
            assert_eq!(text.parse::<ChannelId>().unwrap(), id);
            assert_eq!(text.to_uppercase().parse::<ChannelId>().unwrap(), id);
        }
    }

    #[test]
    fn text_form_rejects_typos() {
        let text = ChannelKey::from_seed(&[7; 32]).channel_id().to_string();
        assert_eq!(
            text[1..].parse::<ChannelId>(),
            Err(ParseChannelIdError::Length(51))
        );
        let mut bad = text.clone();
        bad.replace_range(3..4, "1");
        assert_eq!(
            bad.parse::<ChannelId>(),
            Err(ParseChannelIdError::Character('1'))
        );
        // The last character carries 1 data bit and 4 padding bits: 'b' sets a padding bit.
        let mut padded = text.clone();
        let last = if text.ends_with('a') || text.ends_with('q') {
            "b"
        } else {
            "r"
        };
        padded.replace_range(51..52, last);
        assert_eq!(
            padded.parse::<ChannelId>(),
            Err(ParseChannelIdError::Padding)
        );
    }

    #[test]
    fn known_vector() {
        // RFC 8032 test 1: its public key d75a9801...511a in base32 (Python base64.b32encode).
        let seed: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let id = ChannelKey::from_seed(&seed).channel_id();
        assert_eq!(id.as_bytes()[..4], [0xd7, 0x5a, 0x98, 0x01]);
        assert_eq!(
            id.to_string(),
            "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
        );
    }

    #[test]
    fn key_file_round_trips_and_checks_its_channel_line() {
        let key = ChannelKey::from_seed(&[42; 32]);
        let text = key.to_key_file();
        let back = ChannelKey::from_key_file(&text).unwrap();
        assert_eq!(back.channel_id(), key.channel_id());

        let other = ChannelKey::from_seed(&[43; 32]).channel_id().to_string();
        let own = key.channel_id().to_string();
        assert_eq!(
            ChannelKey::from_key_file(&text.replace(&own, &other)).unwrap_err(),
            KeyFileError::ChannelMismatch
        );
        assert_eq!(
            ChannelKey::from_key_file("# nothing\n").unwrap_err(),
            KeyFileError::MissingSecret
        );
        assert_eq!(
            ChannelKey::from_key_file("hello\n").unwrap_err(),
            KeyFileError::UnknownLine(1)
        );
        assert!(matches!(
            ChannelKey::from_key_file("secret: abc\n"),
            Err(KeyFileError::BadSecret(_))
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ChannelKey::from_seed(&[9; 32]);
        let secret = base32_encode(&[9; 32]);
        assert!(!format!("{key:?}").contains(&secret));
    }
}
