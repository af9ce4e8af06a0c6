//! Strict CMAF per track: one FFmpeg mp4 muxer per track writing fragmented MP4 into memory,
//! cut into an init segment (ftyp + moov) and one chunk (moof + mdat) per call to
//! [`TrackMuxer::cut`].
//!
//! Call order: [`TrackMuxer::new`] (writes the header: the init segment is then known), any
//! number of [`TrackMuxer::write`], then [`TrackMuxer::cut`] at each chunk boundary. The muxer
//! runs with `frag_custom`, so a fragment ends exactly when we say (right after a chunk's last
//! frame, not when the next frame arrives), and with `empty_moov` + `default_base_moof`, so
//! each fragment stands alone after the init segment, as CMAF and MSE want. One muxer per track
//! keeps fragments single-track and keeps AAC priming from shifting the video.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use ffmpeg_next::{self as ffmpeg, Dictionary, Packet, Rational, codec, format};

/// What can go wrong while muxing.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// FFmpeg refused an operation.
    #[error("mp4 muxer: {what}: {source}")]
    Ffmpeg {
        /// The operation.
        what: &'static str,
        /// FFmpeg's error.
        source: ffmpeg::Error,
    },
    /// The muxer wrote something other than the boxes expected at this point.
    #[error("mp4 muxer wrote unexpected boxes: {0}")]
    Boxes(String),
}

fn ff(what: &'static str) -> impl FnOnce(ffmpeg::Error) -> MuxError {
    move |source| MuxError::Ffmpeg { what, source }
}

/// Collects what the muxer writes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets the codec tag of `parameters` to zero ("choose for the container").
///
/// FFmpeg's safe bindings have no setter for it, hence the one unsafe line of the encoder.
#[allow(unsafe_code)]
fn clear_codec_tag(parameters: &mut codec::Parameters) {
    // SAFETY: an owned `codec::Parameters` always wraps a valid, allocated AVCodecParameters
    // (ffmpeg-next allocates it in `new` and copies into it); `codec_tag` is a plain integer
    // field that no other pointer aliases while we hold `&mut`.
    unsafe {
        (*parameters.as_mut_ptr()).codec_tag = 0;
    }
}

/// The top-level boxes of an ISO BMFF byte string, as (type, start, end). Fails unless the
/// bytes are exactly a sequence of whole boxes.
pub fn top_level_boxes(bytes: &[u8]) -> Result<Vec<([u8; 4], usize, usize)>, MuxError> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 8)
            .ok_or_else(|| MuxError::Boxes(format!("truncated box header at {at}")))?;
        let kind: [u8; 4] = header[4..8].try_into().expect("4 bytes");
        let size = match u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) {
            1 => {
                let large = bytes
                    .get(at + 8..at + 16)
                    .ok_or_else(|| MuxError::Boxes("truncated large size".into()))?;
                u64::from_be_bytes(large.try_into().expect("8 bytes")) as usize
            }
            0 => bytes.len() - at,
            n => n as usize,
        };
        if size < 8 || at + size > bytes.len() {
            return Err(MuxError::Boxes(format!(
                "box {} of size {size} at {at} overruns {} bytes",
                String::from_utf8_lossy(&kind),
                bytes.len()
            )));
        }
        boxes.push((kind, at, at + size));
        at += size;
    }
    Ok(boxes)
}

fn kinds(boxes: &[([u8; 4], usize, usize)]) -> String {
    boxes
        .iter()
        .map(|(k, ..)| String::from_utf8_lossy(k).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// The base media decode time (`moof/traf/tfdt`) of a fragment: the time stamp of its first
/// sample in the track's timescale.
pub fn base_decode_time(fragment: &[u8]) -> Option<u64> {
    fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
        let boxes = top_level_boxes(parent).ok()?;
        let &(_, start, end) = boxes.iter().find(|(k, ..)| k == kind)?;
        parent.get(start + 8..end)
    }
    let moof = child(fragment, b"moof")?;
    let traf = child(moof, b"traf")?;
    let tfdt = child(traf, b"tfdt")?;
    match tfdt.first()? {
        1 => Some(u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?)),
        _ => Some(u64::from(u32::from_be_bytes(
            tfdt.get(4..8)?.try_into().ok()?,
        ))),
    }
}

/// The profile, compatibility and level bytes of the `avcC` box in an init segment, as the
/// codec string browsers want (`avc1.64001f`).
pub fn avc_codec_string(init: &[u8]) -> Option<String> {
    let at = init.windows(4).position(|w| w == b"avcC")?;
    let record = init.get(at + 4..at + 8)?;
    (record[0] == 1).then(|| format!("avc1.{:02x}{:02x}{:02x}", record[1], record[2], record[3]))
}

/// A single-track fragmented-MP4 muxer writing into memory.
pub struct TrackMuxer {
    octx: format::context::Output,
    sink: Sink,
    init: Bytes,
    stream_time_base: Rational,
    pending: usize,
}

impl std::fmt::Debug for TrackMuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackMuxer")
            .field("init_len", &self.init.len())
            .field("stream_time_base", &self.stream_time_base)
            .finish()
    }
}

impl TrackMuxer {
    /// A muxer for the stream an opened encoder produces, with the track's time base (the
    /// muxer may pick a finer one: see [`TrackMuxer::time_base`]).
    pub fn new(mut parameters: codec::Parameters, time_base: Rational) -> Result<Self, MuxError> {
        // Parameters copied from an input carry its container's codec tag (MPEG-TS stream
        // type 0x1b for H.264), which the mp4 muxer refuses: let it choose its own.
        clear_codec_tag(&mut parameters);
        let sink = Sink::default();
        let io = format::context::StreamIo::from_write(sink.clone()).map_err(ff("custom I/O"))?;
        let mut octx =
            format::output_to_stream(io, None, Some("mp4")).map_err(ff("output context"))?;
        {
            let mut stream = octx
                .add_stream(None::<codec::codec::Codec>)
                .map_err(ff("add stream"))?;
            stream.set_parameters(parameters);
            stream.set_time_base(time_base);
        }
        let mut options = Dictionary::new();
        options.set(
            "movflags",
            "frag_custom+empty_moov+default_base_moof+cmaf+skip_trailer",
        );
        options.set("flush_packets", "1");
        octx.write_header_with(options)
            .map_err(ff("write header"))?;
        let stream_time_base = octx
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| MuxError::Boxes("stream vanished".into()))?;
        let header = sink.take();
        let boxes = top_level_boxes(&header)?;
        match boxes.as_slice() {
            [(ftyp, ..), (moov, ..)] if ftyp == b"ftyp" && moov == b"moov" => {}
            _ => return Err(MuxError::Boxes(format!("init segment: {}", kinds(&boxes)))),
        }
        Ok(Self {
            octx,
            sink,
            init: Bytes::from(header),
            stream_time_base,
            pending: 0,
        })
    }

    /// The CMAF header: ftyp + moov.
    pub fn init_segment(&self) -> &Bytes {
        &self.init
    }

    /// The track's time base in the file (its timescale is the denominator).
    pub fn time_base(&self) -> Rational {
        self.stream_time_base
    }

    /// Adds an encoded packet whose time stamps are in `from` units.
    pub fn write(&mut self, packet: &mut Packet, from: Rational) -> Result<(), MuxError> {
        packet.set_stream(0);
        packet.rescale_ts(from, self.stream_time_base);
        packet.write(&mut self.octx).map_err(ff("write packet"))?;
        self.pending += 1;
        Ok(())
    }

    /// Ends the current fragment and returns it (moof + mdat), or `None` when no packet was
    /// written since the last cut.
    pub fn cut(&mut self) -> Result<Option<Bytes>, MuxError> {
        if self.pending == 0 {
            return Ok(None);
        }
        self.pending = 0;
        flush_fragment(&mut self.octx).map_err(ff("flush fragment"))?;
        let bytes = self.sink.take();
        let boxes = top_level_boxes(&bytes)?;
        match boxes.as_slice() {
            [(moof, ..), (mdat, ..)] if moof == b"moof" && mdat == b"mdat" => {
                Ok(Some(Bytes::from(bytes)))
            }
            _ => Err(MuxError::Boxes(format!("fragment: {}", kinds(&boxes)))),
        }
    }
}

/// Asks the muxer to end its fragment now and push the bytes out. FFmpeg spells this as
/// writing a null packet, which the safe wrapper does not offer.
#[allow(unsafe_code)]
fn flush_fragment(octx: &mut format::context::Output) -> Result<(), ffmpeg::Error> {
    // SAFETY: `octx` is an open output context whose header was written; a null packet is
    // the documented way to flush a muxer that allows flushing (mp4 with frag_custom), and
    // `pb` is the custom I/O context the wrapper owns for the context's lifetime.
    unsafe {
        let ctx = octx.as_mut_ptr();
        let ret = ffmpeg::ffi::av_write_frame(ctx, std::ptr::null_mut());
        if ret < 0 {
            return Err(ffmpeg::Error::from(ret));
        }
        if !(*ctx).pb.is_null() {
            ffmpeg::ffi::avio_flush((*ctx).pb);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_walker_accepts_whole_boxes_only() {
        let mut b = Vec::new();
        b.extend_from_slice(&16u32.to_be_bytes());
        b.extend_from_slice(b"moof");
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&8u32.to_be_bytes());
        b.extend_from_slice(b"mdat");
        let boxes = top_level_boxes(&b).unwrap();
        assert_eq!(boxes, vec![(*b"moof", 0, 16), (*b"mdat", 16, 24)]);
        assert!(top_level_boxes(&b[..20]).is_err());
        let mut bad = b.clone();
        bad[3] = 200;
        assert!(top_level_boxes(&bad).is_err());
        bad[3] = 4;
        assert!(
            top_level_boxes(&bad).is_err(),
            "a box smaller than its header"
        );
    }
}
