//! Typed errors of the wire format.

use thiserror::Error;

/// A field value that breaks a rule of the format. Shared by encoding (the value was refused)
/// and decoding (the bytes held such a value).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    /// A variable-length field is longer than its limit.
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit from [`crate::wire::limits`].
        max: usize,
    },
    /// A field that must not be empty or zero is.
    #[error("{0} must not be empty or zero")]
    Empty(&'static str),
    /// The channel name is not UTF-8.
    #[error("the channel name is not valid UTF-8")]
    NameNotUtf8,
    /// A codec string holds something other than printable ASCII.
    #[error("the codec string holds characters other than printable ASCII")]
    CodecNotPrintable,
    /// A manifest lists no track.
    #[error("a manifest needs at least one track")]
    NoTracks,
    /// A manifest lists more tracks than allowed.
    #[error("{0} tracks, more than the limit of {max}", max = crate::wire::limits::MAX_TRACKS)]
    TooManyTracks(usize),
    /// Two tracks share an id.
    #[error("track id {0} appears twice")]
    DuplicateTrack(u8),
    /// A track kind byte that this version does not know.
    #[error("unknown track kind {0}")]
    UnknownTrackKind(u8),
    /// The group duration is shorter than the chunk duration.
    #[error("the group duration is shorter than the chunk duration")]
    GroupShorterThanChunk,
    /// Chunk flags with bits this version does not define.
    #[error("unknown chunk flag bits {0:#04x}")]
    UnknownFlags(u8),
}

/// Why untrusted bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes end before the named field is complete.
    #[error("truncated: the message ends inside {0}")]
    Truncated(&'static str),
    /// Bytes follow the end of the message.
    #[error("{0} unexpected bytes after the end of the message")]
    TrailingBytes(usize),
    /// The message does not start with `FJ`.
    #[error("not a Fjord message (bad magic)")]
    BadMagic,
    /// A version this code does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// A message kind this code does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A known kind, but not the one the caller asked to decode.
    #[error("expected a {expected:?} message, found a {found:?}")]
    WrongKind {
        /// What the caller decodes.
        expected: crate::wire::MessageKind,
        /// What the bytes hold.
        found: crate::wire::MessageKind,
    },
    /// The whole message is larger than any valid one of its kind.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Length offered.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field breaks a rule of the format.
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A field breaks a rule of the format.
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// Why a decoded message was not accepted as authentic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The message names another channel than the one expected.
    #[error("the message belongs to channel {found}, not {expected}")]
    WrongChannel {
        /// The channel the receiver subscribed to.
        expected: String,
        /// The channel the message names (text form, or hex when not a valid key).
        found: String,
    },
    /// The signature does not verify under the channel's key.
    #[error("the signature does not verify")]
    BadSignature,
}
