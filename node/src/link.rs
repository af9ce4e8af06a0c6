//! One neighbour link: the tasks that write our two outbound streams to a peer and read the
//! two inbound streams it opened to us.
//!
//! Each side opens its own control and data streams and only writes on them, so two nodes that
//! connect to each other at once need no tie-break. Both streams start with the writer's
//! [`Preamble`]; [`read_preamble`] reads it before the driver decides what the stream is.
//! Writers drain bounded queues filled by the driver, chunk data paced by one [`Pacer`];
//! readers decode and verify what arrives on their own task (signature checks run in parallel
//! across links) and hand typed events to the driver over one bounded channel, which pushes
//! back on a peer that sends faster than the node can take.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_core::proto::{Control, Frame};
use fjord_core::wire::{ChannelId, Chunk, ChunkId, ChunkMeta, Manifest, UnverifiedChunk};
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tokio::sync::{Notify, mpsc};

use crate::framing::{self, FramingError, Preamble};
use crate::mesh::Protocols;
use crate::metrics::Metrics;

/// Control frames queued towards one peer at most; a peer that lets this fill does not read
/// and is dropped.
pub const CONTROL_QUEUE: usize = 1024;
/// Chunks queued towards one peer at most (the core's window keeps far fewer).
pub const DATA_QUEUE: usize = 32;
/// Bytes of control frames written to QUIC at once at most.
const CONTROL_BATCH: usize = 16 * 1024;
/// Time allowed to open both streams to a peer (dialling included).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of a chunk handed to QUIC at once: about two packets, so the node's uplink queue never
/// holds more than a few ms of chunk data ahead of a control message.
const PACED_SLICE: usize = 2400;

/// Paces all chunk data the node sends, over all links, at its upload rate. The core already
/// sends one chunk at a time at that rate, but a whole chunk handed to QUIC leaves as a burst
/// at whatever rate the congestion controller allows; on an uplink with a deep queue (a home
/// router) every announcement, request and acknowledgement the node sends then waits behind
/// the rest of the chunk, hundreds of ms on a slow link. Measured on the emulator's 30 nodes:
/// 1.1 Mbit/s uplinks queued 160-270 ms on average before this.
#[derive(Debug)]
pub struct Pacer {
    bps: u64,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// A pacer at `bps` bit/s (0: unpaced).
    pub fn new(bps: u64) -> Self {
        Self {
            bps,
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Reserves the uplink for `bytes`: returns when they may be handed to QUIC.
    fn reserve(&self, bytes: usize) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if self.bps == 0 {
            return now;
        }
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = (*next).max(now);
        *next = start + Duration::from_nanos(bytes as u64 * 8_000_000_000 / self.bps);
        start
    }

    /// Writes `bytes` to `w` in slices of [`PACED_SLICE`], each at its turn.
    async fn write<W: futures::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        for slice in bytes.chunks(PACED_SLICE) {
            tokio::time::sleep_until(self.reserve(slice.len())).await;
            w.write_all(slice).await?;
        }
        Ok(())
    }
}

/// Identifies one incarnation of a link, so events of a closed link are not taken for those
/// of a newer one to the same peer.
pub type LinkId = u64;

/// What link tasks tell the driver.
#[derive(Debug)]
pub enum LinkEvent {
    /// Our streams to the peer are open.
    Opened(PeerId, LinkId),
    /// Our streams could not be opened.
    OpenFailed(PeerId, LinkId, String),
    /// Writing failed: the link is broken.
    WriteFailed(PeerId, LinkId, String),
    /// A control message arrived.
    Control(PeerId, LinkId, Control),
    /// A manifest arrived and verified.
    Manifest(PeerId, LinkId, Manifest),
    /// A chunk's header arrived; its body follows.
    ChunkHeader(PeerId, LinkId, ChunkMeta, usize),
    /// A chunk arrived and verified.
    Chunk(PeerId, LinkId, Chunk),
    /// The peer sent something invalid.
    Invalid(PeerId, LinkId, String),
    /// An inbound stream ended.
    Closed(PeerId, LinkId, String),
    /// A stream the peer opened to us, with its preamble read.
    Inbound {
        /// The peer.
        peer: PeerId,
        /// The stream, positioned after the preamble.
        stream: Stream,
        /// Whether it is a control stream (else a data stream).
        control: bool,
        /// Its preamble.
        preamble: Preamble,
    },
}

/// Time a peer has to send a new stream's preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the preamble of a stream `peer` opened and hands the stream to the driver; a stream
/// without a preamble in time is dropped.
pub async fn read_preamble(ctx: LinkContext, peer: PeerId, mut stream: Stream, control: bool) {
    match tokio::time::timeout(PREAMBLE_TIMEOUT, Preamble::read(&mut stream)).await {
        Ok(Ok(preamble)) => {
            let _ = ctx
                .events
                .send(LinkEvent::Inbound {
                    peer,
                    stream,
                    control,
                    preamble,
                })
                .await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "stream without a preamble"),
        Err(_) => tracing::debug!(%peer, "no preamble in time"),
    }
}

/// Chunks waiting for the data stream, which the driver can still withdraw (aborts).
#[derive(Debug, Default)]
pub struct DataQueue {
    inner: Mutex<(VecDeque<Chunk>, bool)>,
    notify: Notify,
}

impl DataQueue {
    /// Queues a chunk; beyond [`DATA_QUEUE`] the oldest queued one is dropped (it is the
    /// one most likely to be late by now).
    pub fn push(&self, chunk: Chunk) {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.0.len() >= DATA_QUEUE {
            q.0.pop_front();
        }
        q.0.push_back(chunk);
        drop(q);
        self.notify.notify_one();
    }

    /// Withdraws a chunk not yet written. Returns whether it was still queued.
    pub fn abort(&self, id: ChunkId) -> bool {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = q.0.len();
        q.0.retain(|c| c.id() != id);
        before != q.0.len()
    }

    /// No more chunks: the writer ends once the queue is empty.
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.notify.notify_one();
    }

    async fn next(&self) -> Option<Chunk> {
        loop {
            {
                let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(c) = q.0.pop_front() {
                    return Some(c);
                }
                if q.1 {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }
}

/// Everything a link task needs to know.
#[derive(Clone)]
pub struct LinkContext {
    /// The channel every manifest and chunk must verify against.
    pub channel: ChannelId,
    /// Stream protocol names.
    pub protocols: Protocols,
    /// Where events go.
    pub events: mpsc::Sender<LinkEvent>,
    /// Byte counters.
    pub metrics: Arc<Metrics>,
    /// The event trace, when asked for ([`crate::trace`]).
    pub trace: Option<Arc<crate::trace::Trace>>,
    /// Paces the chunk data of every link.
    pub pacer: Arc<Pacer>,
}

/// Opens our two streams to `peer`, each starting with `preamble`, then writes what the driver
/// queues until the control queue closes (the driver dropped the link) or a write fails.
pub async fn write(
    ctx: LinkContext,
    mut control: libp2p_stream::Control,
    peer: PeerId,
    link: LinkId,
    preamble: Preamble,
    mut frames: mpsc::Receiver<Bytes>,
    data: Arc<DataQueue>,
) {
    let open = async {
        let ctl = control
            .open_stream(peer, ctx.protocols.control.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut dat = control
            .open_stream(peer, ctx.protocols.data.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut ctl = ctl;
        preamble.write(&mut ctl).await.map_err(|e| e.to_string())?;
        preamble.write(&mut dat).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((ctl, dat))
    };
    let (mut ctl, mut dat) = match tokio::time::timeout(OPEN_TIMEOUT, open).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = ctx.events.send(LinkEvent::OpenFailed(peer, link, e)).await;
            return;
        }
        Err(_) => {
            let _ = ctx
                .events
                .send(LinkEvent::OpenFailed(peer, link, "timed out".into()))
                .await;
            return;
        }
    };
    if ctx
        .events
        .send(LinkEvent::Opened(peer, link))
        .await
        .is_err()
    {
        return;
    }
    let metrics = ctx.metrics.clone();
    let control_side = async {
        let mut batch = Vec::new();
        while let Some(frame) = frames.recv().await {
            // Control messages are small: hand them to QUIC together, so that they share
            // packets (a packet's headers cost more than an announcement, and each packet
            // costs the receiver an acknowledgement on its own uplink). The core holds
            // announcements back for company (`fjord_core::node::Config::announce_hold`), so
            // that the simulator, which runs the same core, sees the same delay; here only
            // what is already queued goes along.
            batch.clear();
            framing::encode_frame(&mut batch, &frame);
            while batch.len() < CONTROL_BATCH
                && let Ok(more) = frames.try_recv()
            {
                framing::encode_frame(&mut batch, &more);
            }
            ctl.write_all(&batch).await?;
            metrics.bytes_up.inc_by(batch.len() as u64);
            ctl.flush().await?;
        }
        data.close();
        ctl.close().await
    };
    let data_side = async {
        while let Some(chunk) = data.next().await {
            crate::trace::emit(&ctx.trace, "wr-start", &peer, || {
                crate::trace::chunk(&chunk.id())
            });
            let head = framing::chunk_frame_head(&chunk);
            ctx.pacer.write(&mut dat, &head).await?;
            ctx.pacer.write(&mut dat, chunk.encoded()).await?;
            dat.flush().await?;
            crate::trace::emit(&ctx.trace, "wr-end", &peer, || {
                crate::trace::chunk(&chunk.id())
            });
            metrics.bytes_up.inc_by(5 + chunk.len() as u64);
        }
        dat.close().await
    };
    let result = tokio::try_join!(control_side, data_side);
    if let Err(e) = result {
        let _ = ctx
            .events
            .send(LinkEvent::WriteFailed(peer, link, e.to_string()))
            .await;
    }
}

/// Reads the peer's control stream until it ends.
pub async fn read_control(ctx: LinkContext, peer: PeerId, link: LinkId, mut stream: Stream) {
    let event = loop {
        match framing::read_control(&mut stream).await {
            Ok(None) => break LinkEvent::Closed(peer, link, "control stream ended".into()),
            Ok(Some(frame)) => {
                let n = frame_len(&frame);
                ctx.metrics.bytes_down.inc_by(n);
                let event = match frame {
                    Frame::Control(msg) => LinkEvent::Control(peer, link, msg),
                    Frame::Manifest(m) => match m.verify(&ctx.channel) {
                        Ok(m) => LinkEvent::Manifest(peer, link, m),
                        Err(e) => break LinkEvent::Invalid(peer, link, format!("manifest: {e}")),
                    },
                    Frame::Chunk(_) => {
                        break LinkEvent::Invalid(peer, link, "chunk on the control stream".into());
                    }
                };
                if ctx.events.send(event).await.is_err() {
                    return;
                }
            }
            Err(FramingError::Io(e)) => break LinkEvent::Closed(peer, link, e.to_string()),
            Err(e) => break LinkEvent::Invalid(peer, link, e.to_string()),
        }
    };
    let _ = ctx.events.send(event).await;
}

fn frame_len(frame: &Frame) -> u64 {
    5 + match frame {
        Frame::Control(c) => c.encoded_len() as u64 - 1,
        Frame::Manifest(m) => m.encoded().len() as u64,
        Frame::Chunk(c) => c.len() as u64,
    }
}

/// Reads the peer's data stream until it ends: each chunk's header is reported as soon as it
/// arrives, the chunk once it is whole and verified.
pub async fn read_data(ctx: LinkContext, peer: PeerId, link: LinkId, mut stream: Stream) {
    let event = loop {
        let incoming = match framing::read_chunk_header(&mut stream).await {
            Ok(None) => break LinkEvent::Closed(peer, link, "data stream ended".into()),
            Ok(Some(i)) => i,
            Err(FramingError::Io(e)) => break LinkEvent::Closed(peer, link, e.to_string()),
            Err(e) => break LinkEvent::Invalid(peer, link, e.to_string()),
        };
        if incoming.header.channel != *ctx.channel.as_bytes() {
            break LinkEvent::Invalid(peer, link, "chunk of another channel".into());
        }
        let meta = incoming.header.meta;
        let len = incoming.header.encoded_len;
        if ctx
            .events
            .send(LinkEvent::ChunkHeader(peer, link, meta, len))
            .await
            .is_err()
        {
            return;
        }
        let bytes = match incoming.finish(&mut stream).await {
            Ok(b) => b,
            Err(FramingError::Io(e)) => break LinkEvent::Closed(peer, link, e.to_string()),
            Err(e) => break LinkEvent::Invalid(peer, link, e.to_string()),
        };
        ctx.metrics.bytes_down.inc_by(5 + bytes.len() as u64);
        let chunk = match UnverifiedChunk::decode(bytes) {
            Ok(c) => match c.verify(&ctx.channel) {
                Ok(c) => c,
                Err(e) => break LinkEvent::Invalid(peer, link, format!("chunk: {e}")),
            },
            Err(e) => break LinkEvent::Invalid(peer, link, format!("chunk: {e}")),
        };
        if ctx
            .events
            .send(LinkEvent::Chunk(peer, link, chunk))
            .await
            .is_err()
        {
            return;
        }
    };
    let _ = ctx.events.send(event).await;
}

#[cfg(test)]
mod tests {
    use super::Pacer;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn the_pacer_spreads_a_chunk_over_its_transmission_time() {
        // 100,000 bytes at 8 Mbit/s take 100 ms; the last of the 2,400-byte slices may start
        // at 98.4 ms, and no slice starts before its turn.
        let pacer = Pacer::new(8_000_000);
        let mut sink = futures::io::sink();
        let start = Instant::now();
        pacer.write(&mut sink, &vec![0u8; 100_000]).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_micros(98_400),
            "{:?}",
            start.elapsed()
        );
    }
}
