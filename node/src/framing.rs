//! Frames on a long-lived libp2p stream: a 4-byte big-endian length, then one
//! [`fjord_core::proto::Frame`] (a kind byte and its body).
//!
//! Each direction of a neighbour link uses two streams opened once: a control stream
//! (control messages and manifests, small and latency-sensitive) and a data stream (chunks),
//! so a 100 KB chunk never holds up an acknowledgement or a cancel behind it. A chunk is
//! read in two steps: its fixed header first, so the core can announce and refuse duplicates
//! while the body is still arriving, then the rest.
//!
//! Each stream starts with a [`Preamble`] naming the writer's link incarnation and the
//! incarnation of ours it answers, so a node can tell a neighbour's restarted link from a
//! stale stream and the answer to its own restart (see [`crate::driver`]).
//!
//! Everything read is untrusted: lengths are checked against the format's limits before
//! anything is allocated, and memory grows only as bytes actually arrive.

use bytes::{Bytes, BytesMut};
use fjord_core::proto::{Frame, FrameError, MAX_FRAME_LEN};
use fjord_core::wire::{CHUNK_HEADER_LEN, Chunk, ChunkHeader, DecodeError, Manifest};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Kind byte of a chunk frame (see [`fjord_core::proto`]).
const CHUNK_KIND: u8 = 0x11;
/// Bytes read per step of a body: memory grows with what arrived, never with what a length
/// field claims.
const READ_STEP: usize = 64 * 1024;
/// A chunk body up to this size is allocated at once when its (valid) header arrives: a 5
/// Mbit/s stream has chunks of about 125 KB.
const UPFRONT: usize = 1024 * 1024;

/// What can go wrong reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The stream failed or ended in the middle of a frame.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// A length outside what any valid frame can have.
    #[error("frame length {0} outside 1..={MAX_FRAME_LEN}")]
    Length(usize),
    /// A data stream carried something other than a chunk.
    #[error("data stream frame of kind {0:#04x}, expected a chunk")]
    NotAChunk(u8),
    /// A chunk header that does not decode, or disagrees with the frame length.
    #[error("chunk header: {0}")]
    Header(#[from] DecodeError),
    /// A chunk whose header promises another length than its frame has.
    #[error("chunk header says {header} bytes, frame has {frame}")]
    LengthMismatch {
        /// Length from the header.
        header: usize,
        /// Length from the frame.
        frame: usize,
    },
    /// A control frame that does not decode.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

/// The first bytes on each of a link's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// The writer's link incarnation: larger for a later link of the same node.
    pub nonce: u64,
    /// The reader's incarnation whose streams the writer had attached when it opened this one
    /// (0: none yet).
    pub echo: u64,
}

impl Preamble {
    /// Encoded length.
    pub const LEN: usize = 16;

    /// Writes the preamble.
    pub async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.nonce.to_be_bytes());
        b[8..].copy_from_slice(&self.echo.to_be_bytes());
        w.write_all(&b).await
    }

    /// Reads a preamble.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Self> {
        let mut b = [0u8; Self::LEN];
        r.read_exact(&mut b).await?;
        let word = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Self {
            nonce: word(0),
            echo: word(8),
        })
    }
}

/// Appends one frame (length prefix and encoding) to `out`, for writing several at once.
pub fn encode_frame(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
}

/// Writes one frame whose encoding (kind byte and body) is `frame`.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(frame).await?;
    Ok(())
}

/// Writes a chunk frame: the signed bytes untouched behind the kind byte.
pub async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, chunk: &Chunk) -> std::io::Result<()> {
    w.write_all(&chunk_frame_head(chunk)).await?;
    w.write_all(chunk.encoded()).await?;
    Ok(())
}

/// The bytes of a chunk frame before the chunk's own: the length prefix and the kind byte.
/// Chunks are limited far below 4 GiB by the wire format, so the length always fits.
pub fn chunk_frame_head(chunk: &Chunk) -> [u8; 5] {
    let len = (1 + chunk.len()) as u32;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = CHUNK_KIND;
    head
}

/// Writes a manifest frame.
pub async fn write_manifest<W: AsyncWrite + Unpin>(
    w: &mut W,
    manifest: &Manifest,
) -> std::io::Result<()> {
    write_frame(w, &Frame::encode_manifest(manifest)).await
}

/// Reads a frame's length; `None` at a clean end of stream (between frames).
async fn read_len<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<usize>, FramingError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(FramingError::Length(len));
    }
    Ok(Some(len))
}

/// Reads exactly `len` bytes, growing the buffer step by step.
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    len: usize,
) -> Result<(), FramingError> {
    while buf.len() < len {
        let step = (len - buf.len()).min(READ_STEP.max(buf.capacity() - buf.len()));
        let start = buf.len();
        buf.resize(start + step, 0);
        r.read_exact(&mut buf[start..]).await?;
    }
    Ok(())
}

/// Reads one control-stream frame; `None` at a clean end of stream.
pub async fn read_control<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FramingError> {
    let Some(len) = read_len(r).await? else {
        return Ok(None);
    };
    let mut buf = BytesMut::new();
    read_body(r, &mut buf, len).await?;
    Ok(Some(Frame::decode(buf.freeze())?))
}

/// A chunk frame being read: its header is known, its body follows.
#[derive(Debug)]
pub struct IncomingChunk {
    /// What the header claims (unauthenticated).
    pub header: ChunkHeader,
    buf: BytesMut,
}

/// Reads the next chunk frame's header; `None` at a clean end of stream.
pub async fn read_chunk_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<IncomingChunk>, FramingError> {
    let Some(len) = read_len(r).await? else {
        return Ok(None);
    };
    if len < 1 + CHUNK_HEADER_LEN {
        return Err(FramingError::Length(len));
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await?;
    if kind[0] != CHUNK_KIND {
        return Err(FramingError::NotAChunk(kind[0]));
    }
    let mut buf = BytesMut::new();
    read_body(r, &mut buf, CHUNK_HEADER_LEN).await?;
    let header = ChunkHeader::decode(&buf)?;
    if header.encoded_len != len - 1 {
        return Err(FramingError::LengthMismatch {
            header: header.encoded_len,
            frame: len - 1,
        });
    }
    Ok(Some(IncomingChunk { header, buf }))
}

impl IncomingChunk {
    /// Reads the rest of the chunk and returns its encoded bytes (to decode and verify).
    pub async fn finish<R: AsyncRead + Unpin>(mut self, r: &mut R) -> Result<Bytes, FramingError> {
        let len = self.header.encoded_len;
        // One allocation for any chunk of ordinary size; beyond that, memory still grows only
        // as bytes arrive.
        self.buf.reserve(len.min(UPFRONT) - self.buf.len());
        read_body(r, &mut self.buf, len).await?;
        Ok(self.buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_core::proto::Control;
    use fjord_core::wire::{ChannelKey, ChunkFlags, ChunkMeta, UnverifiedChunk};
    use futures::executor::block_on;
    use futures::io::Cursor;

    fn chunk(len: usize) -> Chunk {
        let key = ChannelKey::from_seed(&[3; 32]);
        let meta = ChunkMeta {
            epoch: 1,
            track: 0,
            sequence: 7,
            flags: ChunkFlags::GROUP_START,
            timestamp: 0,
            duration: 100,
            published_at_us: 5,
        };
        key.sign_chunk(&meta, &vec![9u8; len]).unwrap()
    }

    #[test]
    fn frames_round_trip_and_chunks_arrive_header_first() {
        block_on(async {
            let mut out = Vec::new();
            let ack = Control::Ack(chunk(1).id());
            write_frame(&mut out, &Frame::Control(ack).encode())
                .await
                .unwrap();
            let c = chunk(200_000);
            write_chunk(&mut out, &c).await.unwrap();
            let mut r = Cursor::new(out);
            let Some(Frame::Control(got)) = read_control(&mut r).await.unwrap() else {
                panic!("a control frame");
            };
            assert_eq!(got, ack);
            let incoming = read_chunk_header(&mut r).await.unwrap().unwrap();
            assert_eq!(incoming.header.meta, *c.meta());
            let bytes = incoming.finish(&mut r).await.unwrap();
            let again = UnverifiedChunk::decode(bytes).unwrap();
            assert_eq!(again.verify(c.channel()).unwrap(), c);
            assert!(
                read_chunk_header(&mut r).await.unwrap().is_none(),
                "clean end"
            );
        });
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        block_on(async {
            // A length beyond any frame.
            let mut r = Cursor::new(u32::MAX.to_be_bytes().to_vec());
            assert!(matches!(
                read_control(&mut r).await,
                Err(FramingError::Length(_))
            ));
            // A chunk frame whose header claims another length than the frame.
            let c = chunk(1000);
            let mut out = Vec::new();
            write_chunk(&mut out, &c).await.unwrap();
            out[..4].copy_from_slice(&(c.len() as u32).to_be_bytes());
            let mut r = Cursor::new(out);
            assert!(matches!(
                read_chunk_header(&mut r).await,
                Err(FramingError::LengthMismatch { .. })
            ));
            // A control frame on a data stream.
            let mut out = Vec::new();
            write_frame(&mut out, &Frame::Control(Control::Ack(c.id())).encode())
                .await
                .unwrap();
            let mut r = Cursor::new(out);
            assert!(matches!(
                read_chunk_header(&mut r).await,
                Err(FramingError::Length(_) | FramingError::NotAChunk(_))
            ));
            // A stream cut in the middle of a length.
            let mut r = Cursor::new(vec![0u8, 0]);
            assert!(matches!(
                read_control(&mut r).await,
                Err(FramingError::Io(_))
            ));
            // A body shorter than its length: an error, after reading only what was there.
            let mut out = 1_000_000u32.to_be_bytes().to_vec();
            out.extend_from_slice(&[1, 2, 3]);
            let mut r = Cursor::new(out);
            assert!(matches!(
                read_control(&mut r).await,
                Err(FramingError::Io(_))
            ));
        });
    }
}
