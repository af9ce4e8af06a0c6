//! Bounded big-endian reading and writing shared by the message codecs.
//!
//! The reader only ever hands out sub-slices of its input: it never allocates, so a length field
//! can make it fail but never make it reserve memory.

use super::{ChannelId, DecodeError, MAGIC, MessageKind, SIGNATURE_LEN, VERSION, VerifyError};

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next unread byte.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes, or fails naming the field they belong to.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(field));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads the preamble and checks that the message is of kind `expected` and no longer than
    /// `max` bytes in all.
    pub(crate) fn expect(&mut self, expected: MessageKind, max: usize) -> Result<(), DecodeError> {
        let kind = self.preamble()?;
        match MessageKind::from_byte(kind) {
            Some(k) if k == expected => {}
            Some(found) => return Err(DecodeError::WrongKind { expected, found }),
            None => return Err(DecodeError::UnknownKind(kind)),
        }
        if self.buf.len() > max {
            return Err(DecodeError::MessageTooLarge {
                len: self.buf.len(),
                max,
            });
        }
        Ok(())
    }

    /// Reads magic and version, and returns the kind byte.
    pub(crate) fn preamble(&mut self) -> Result<u8, DecodeError> {
        if self.array::<2>("magic")? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = self.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        self.u8("kind")
    }
}

/// Checks that `encoded` (a whole decoded message whose channel field is `claimed`) belongs to
/// `channel` and that its trailing signature verifies over everything before it.
pub(crate) fn verify_signed(
    encoded: &[u8],
    claimed: &[u8; 32],
    channel: &ChannelId,
) -> Result<(), VerifyError> {
    if claimed != channel.as_bytes() {
        return Err(VerifyError::WrongChannel {
            expected: channel.to_string(),
            found: ChannelId::describe(claimed),
        });
    }
    let (signed, signature) = encoded.split_at(encoded.len() - SIGNATURE_LEN);
    let signature: &[u8; SIGNATURE_LEN] = signature
        .try_into()
        .expect("split_at leaves exactly SIGNATURE_LEN bytes");
    channel.verify(signed, signature)
}

/// Appends big-endian fields to a buffer sized up front by the caller.
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn preamble(&mut self, kind: u8) {
        self.bytes(&MAGIC);
        self.u8(VERSION);
        self.u8(kind);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}
