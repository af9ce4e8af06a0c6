//! Local playback: the channel as one continuous fragmented MP4 over HTTP, which VLC, mpv and
//! ffplay open as a URL.
//!
//! The encoder writes strict CMAF, one fMP4 stream per track, each with track id 1. A desktop
//! player wants one stream with both tracks, so [`combined_init`] merges the init segments (the
//! audio track becomes track 2) and [`Remuxer`] rewrites each chunk's `tfhd` track id and `mfhd`
//! sequence number; the media bytes are untouched.
//!
//! [`PlaySession`] decides what to write, as a pure state machine: start at the newest group
//! start held, then each track in sequence order; a chunk that is missing once a later one is
//! past its deadline is given up (audio goes on with the next chunk, video waits for the next
//! group start, since later chunks of a group cannot decode without it). Everything is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use fjord_core::wire::{Chunk, ChunkFlags, Manifest, TrackKind};

/// Chunks kept per track for a new session to start from (about 12 s at 200 ms chunks).
const HISTORY: usize = 64;
/// Chunks a session holds back per track while waiting for a missing one.
const PENDING: usize = 64;

/// Why a stream cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemuxError {
    /// The boxes are not what the encoder writes.
    #[error("unexpected MP4 structure: {0}")]
    Structure(&'static str),
    /// The manifest has no video or no audio track.
    #[error("the manifest needs one video and at most one audio track")]
    Tracks,
}

/// One ISO BMFF box inside a byte string: type and the range of its payload.
#[derive(Clone, Copy, Debug)]
struct BoxRef {
    kind: [u8; 4],
    start: usize,
    header: usize,
    end: usize,
}

fn boxes(bytes: &[u8]) -> Result<Vec<BoxRef>, RemuxError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 8)
            .ok_or(RemuxError::Structure("truncated box header"))?;
        let size = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let (size, header) = match size {
            1 => {
                let large = bytes
                    .get(at + 8..at + 16)
                    .ok_or(RemuxError::Structure("truncated large size"))?;
                (
                    usize::try_from(u64::from_be_bytes(large.try_into().expect("8 bytes")))
                        .map_err(|_| RemuxError::Structure("box too large"))?,
                    16,
                )
            }
            0 => (bytes.len() - at, 8),
            n => (n, 8),
        };
        if size < header || at + size > bytes.len() {
            return Err(RemuxError::Structure("box size out of range"));
        }
        out.push(BoxRef {
            kind: head[4..8].try_into().expect("4 bytes"),
            start: at,
            header,
            end: at + size,
        });
        at += size;
    }
    Ok(out)
}

fn find(list: &[BoxRef], kind: &[u8; 4]) -> Result<BoxRef, RemuxError> {
    list.iter()
        .find(|b| &b.kind == kind)
        .copied()
        .ok_or(RemuxError::Structure("missing box"))
}

fn children(bytes: &[u8], b: BoxRef) -> Result<Vec<BoxRef>, RemuxError> {
    let inner = &bytes[b.start + b.header..b.end];
    let base = b.start + b.header;
    Ok(boxes(inner)?
        .into_iter()
        .map(|c| BoxRef {
            start: c.start + base,
            end: c.end + base,
            ..c
        })
        .collect())
}

fn write_box(out: &mut BytesMut, kind: &[u8; 4], payload: &[u8]) {
    out.put_u32((8 + payload.len()) as u32);
    out.put_slice(kind);
    out.put_slice(payload);
}

/// A `trak` with its `tkhd` track id set to `id`, without an edit list (the tracks of the
/// combined movie start at zero; edit lists would use the other movie's timescale).
fn retrack(init: &[u8], trak: BoxRef, id: u32) -> Result<Bytes, RemuxError> {
    let mut payload = BytesMut::new();
    for c in children(init, trak)? {
        if &c.kind == b"edts" {
            continue;
        }
        let mut b = init[c.start..c.end].to_vec();
        if &c.kind == b"tkhd" {
            let version = *b.get(c.header).ok_or(RemuxError::Structure("empty tkhd"))?;
            let at = c.header + 4 + if version == 1 { 16 } else { 8 };
            b.get_mut(at..at + 4)
                .ok_or(RemuxError::Structure("short tkhd"))?
                .copy_from_slice(&id.to_be_bytes());
        }
        payload.put_slice(&b);
    }
    let mut out = BytesMut::new();
    write_box(&mut out, b"trak", &payload);
    Ok(out.freeze())
}

fn trex(init: &[u8], mvex: BoxRef, id: u32) -> Result<Bytes, RemuxError> {
    let t = find(&children(init, mvex)?, b"trex")?;
    let mut b = init[t.start..t.end].to_vec();
    b.get_mut(t.header + 4..t.header + 8)
        .ok_or(RemuxError::Structure("short trex"))?
        .copy_from_slice(&id.to_be_bytes());
    Ok(Bytes::from(b))
}

/// Merges the video and audio init segments (each a single-track `ftyp` + `moov` with track
/// id 1) into one: video is track 1, audio track 2.
pub fn combined_init(video: &[u8], audio: Option<&[u8]>) -> Result<Bytes, RemuxError> {
    let vtop = boxes(video)?;
    let ftyp = find(&vtop, b"ftyp")?;
    let vmoov = find(&vtop, b"moov")?;
    let vkids = children(video, vmoov)?;
    let mvhd = find(&vkids, b"mvhd")?;
    let mut mvhd_bytes = video[mvhd.start..mvhd.end].to_vec();
    let n = mvhd_bytes.len();
    if n < mvhd.header + 4 + 4 {
        return Err(RemuxError::Structure("short mvhd"));
    }
    // next_track_ID closes the mvhd.
    mvhd_bytes[n - 4..].copy_from_slice(&3u32.to_be_bytes());
    let mut moov = BytesMut::new();
    moov.put_slice(&mvhd_bytes);
    moov.put_slice(&retrack(video, find(&vkids, b"trak")?, 1)?);
    let mut mvex = BytesMut::new();
    mvex.put_slice(&trex(video, find(&vkids, b"mvex")?, 1)?);
    if let Some(audio) = audio {
        let atop = boxes(audio)?;
        let amoov = find(&atop, b"moov")?;
        let akids = children(audio, amoov)?;
        moov.put_slice(&retrack(audio, find(&akids, b"trak")?, 2)?);
        mvex.put_slice(&trex(audio, find(&akids, b"mvex")?, 2)?);
    }
    write_box(&mut moov, b"mvex", &mvex);
    let mut out = BytesMut::new();
    out.put_slice(&video[ftyp.start..ftyp.end]);
    write_box(&mut out, b"moov", &moov);
    Ok(out.freeze())
}

/// Rewrites chunk payloads (`moof` + `mdat`) for the combined stream.
#[derive(Debug, Default)]
pub struct Remuxer {
    sequence: u32,
}

impl Remuxer {
    /// The payload with its fragment sequence number made continuous across both tracks and
    /// its track id set to `track_id`.
    pub fn fragment(&mut self, payload: &[u8], track_id: u32) -> Result<Bytes, RemuxError> {
        let top = boxes(payload)?;
        let moof = find(&top, b"moof")?;
        let mut out = payload.to_vec();
        let kids = children(payload, moof)?;
        let mfhd = find(&kids, b"mfhd")?;
        self.sequence = self.sequence.wrapping_add(1);
        out.get_mut(mfhd.start + mfhd.header + 4..mfhd.start + mfhd.header + 8)
            .ok_or(RemuxError::Structure("short mfhd"))?
            .copy_from_slice(&self.sequence.to_be_bytes());
        for traf in kids.iter().filter(|b| &b.kind == b"traf") {
            let tfhd = find(&children(payload, *traf)?, b"tfhd")?;
            out.get_mut(tfhd.start + tfhd.header + 4..tfhd.start + tfhd.header + 8)
                .ok_or(RemuxError::Structure("short tfhd"))?
                .copy_from_slice(&track_id.to_be_bytes());
        }
        Ok(Bytes::from(out))
    }
}

/// Recent chunks per track, for new sessions to start from.
#[derive(Debug, Default)]
pub struct History {
    tracks: Mutex<BTreeMap<u8, VecDeque<Chunk>>>,
}

impl History {
    /// Remembers a delivered chunk (the oldest are forgotten).
    pub fn push(&self, chunk: Chunk) {
        let mut t = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let q = t.entry(chunk.meta().track).or_default();
        if q.len() >= HISTORY {
            q.pop_front();
        }
        q.push_back(chunk);
    }

    /// Every chunk held, oldest first per track.
    pub fn snapshot(&self) -> Vec<Chunk> {
        let t = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        t.values().flat_map(|q| q.iter().cloned()).collect()
    }
}

/// Keeps the history of a node's deliveries; runs until the node stops.
pub fn keep_history(node: &crate::NodeHandle) -> Arc<History> {
    let history = Arc::new(History::default());
    let mut rx = node.deliveries();
    let h = history.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(c) => h.push(c),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    history
}

#[derive(Debug)]
struct TrackState {
    id: u8,
    out_id: u32,
    video: bool,
    next: Option<u64>,
    /// Video: waiting for a group start before writing anything.
    need_group: bool,
    pending: BTreeMap<u64, Chunk>,
}

/// What one playback session writes, decided from the chunks offered to it.
#[derive(Debug)]
pub struct PlaySession {
    epoch: u64,
    target_latency_us: u64,
    tracks: Vec<TrackState>,
    remux: Remuxer,
    started: bool,
}

impl PlaySession {
    /// A session for `manifest`; returns it with the bytes to write first (the init segment).
    pub fn new(manifest: &Manifest) -> Result<(Self, Bytes), RemuxError> {
        let c = manifest.content();
        let video = c
            .tracks
            .iter()
            .find(|t| t.kind == TrackKind::Video)
            .ok_or(RemuxError::Tracks)?;
        let audio = c.tracks.iter().find(|t| t.kind == TrackKind::Audio);
        let init = combined_init(&video.init_segment, audio.map(|a| &a.init_segment[..]))?;
        let mut tracks = vec![TrackState {
            id: video.id,
            out_id: 1,
            video: true,
            next: None,
            need_group: true,
            pending: BTreeMap::new(),
        }];
        if let Some(a) = audio {
            tracks.push(TrackState {
                id: a.id,
                out_id: 2,
                video: false,
                next: None,
                need_group: false,
                pending: BTreeMap::new(),
            });
        }
        Ok((
            Self {
                epoch: c.epoch,
                target_latency_us: u64::from(c.target_latency_us),
                tracks,
                remux: Remuxer::default(),
                started: false,
            },
            init,
        ))
    }

    /// Starts from what a node holds: the newest video group start, and the same sequence
    /// on the other tracks (the encoder numbers both tracks alike). Returns what to write.
    pub fn start(&mut self, held: &[Chunk], now_us: u64) -> Vec<Bytes> {
        let video = self.tracks[0].id;
        let start = held
            .iter()
            .filter(|c| {
                let m = c.meta();
                m.epoch == self.epoch
                    && m.track == video
                    && m.flags.contains(ChunkFlags::GROUP_START)
            })
            .map(|c| c.meta().sequence)
            .max();
        let mut out = Vec::new();
        if let Some(s) = start {
            self.started = true;
            for t in &mut self.tracks {
                t.next = Some(s);
            }
            let mut held: Vec<&Chunk> = held.iter().filter(|c| c.meta().sequence >= s).collect();
            held.sort_by_key(|c| (c.meta().sequence, c.meta().track));
            for c in held {
                out.extend(self.offer(c.clone(), now_us));
            }
        }
        out
    }

    /// A chunk newly available; returns the bytes to write now.
    pub fn offer(&mut self, chunk: Chunk, now_us: u64) -> Vec<Bytes> {
        let m = *chunk.meta();
        if m.epoch != self.epoch {
            return Vec::new();
        }
        let latency = self.target_latency_us;
        let Some(ti) = self.tracks.iter().position(|t| t.id == m.track) else {
            return Vec::new();
        };
        if !self.started {
            // No group start was held when the session began: begin at the first one.
            if !(self.tracks[ti].video && m.flags.contains(ChunkFlags::GROUP_START)) {
                return Vec::new();
            }
            self.started = true;
            for t in &mut self.tracks {
                t.next = Some(m.sequence);
            }
        }
        let t = &mut self.tracks[ti];
        if t.next.is_some_and(|n| m.sequence < n) {
            return Vec::new();
        }
        if t.pending.len() >= PENDING
            && let Some((&first, _)) = t.pending.iter().next()
        {
            t.pending.remove(&first);
        }
        t.pending.insert(m.sequence, chunk);
        let mut out = Vec::new();
        loop {
            let t = &mut self.tracks[ti];
            let next = t.next.unwrap_or(0);
            if let Some(c) = t.pending.remove(&next) {
                t.next = Some(next + 1);
                if t.video && t.need_group && !c.meta().flags.contains(ChunkFlags::GROUP_START) {
                    continue;
                }
                t.need_group = false;
                let out_id = t.out_id;
                if let Ok(b) = self.remux.fragment(&c.payload(), out_id) {
                    out.push(b);
                }
                continue;
            }
            // The next chunk is missing: give it up once a later chunk is past its deadline
            // (the missing one was published before it).
            let Some((&later, c)) = t.pending.iter().next() else {
                break;
            };
            if c.meta().published_at_us + latency > now_us {
                break;
            }
            t.next = Some(later);
            if t.video {
                t.need_group = true;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_box(&mut out, kind, payload);
        out.to_vec()
    }

    fn full(version: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![version, 0, 0, 0];
        v.extend_from_slice(rest);
        v
    }

    /// A single-track init segment shaped like FFmpeg's: ftyp, moov(mvhd, trak(tkhd, edts,
    /// mdia), mvex(trex)).
    fn init(handler: &[u8; 4]) -> Vec<u8> {
        let mut mvhd = vec![0u8; 96];
        mvhd[92..].copy_from_slice(&2u32.to_be_bytes());
        let mut tkhd = vec![0u8; 80];
        tkhd[8..12].copy_from_slice(&1u32.to_be_bytes());
        let trak = [
            bx(b"tkhd", &full(0, &tkhd)),
            bx(b"edts", b"xxxx"),
            bx(b"mdia", handler),
        ]
        .concat();
        let trex = full(
            0,
            &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let moov = [
            bx(b"mvhd", &full(0, &mvhd)),
            bx(b"trak", &trak),
            bx(b"mvex", &bx(b"trex", &trex)),
        ]
        .concat();
        [bx(b"ftyp", b"iso6"), bx(b"moov", &moov)].concat()
    }

    fn fragment(seq: u32) -> Vec<u8> {
        let tfhd = full(0, &[0, 0, 0, 1, 0, 0, 0, 0]);
        let traf = [bx(b"tfhd", &tfhd), bx(b"trun", b"run!")].concat();
        let moof = [
            bx(b"mfhd", &full(0, &seq.to_be_bytes())),
            bx(b"traf", &traf),
        ]
        .concat();
        [bx(b"moof", &moof), bx(b"mdat", b"media")].concat()
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn inits_merge_into_two_tracks() {
        let merged = combined_init(&init(b"vide"), Some(&init(b"soun"))).unwrap();
        let top = boxes(&merged).unwrap();
        assert_eq!(top.len(), 2);
        let moov = find(&top, b"moov").unwrap();
        let kids = children(&merged, moov).unwrap();
        let kinds: Vec<&[u8; 4]> = kids.iter().map(|b| &b.kind).collect();
        assert_eq!(kinds, vec![b"mvhd", b"trak", b"trak", b"mvex"]);
        let mvhd = kids[0];
        assert_eq!(u32_at(&merged, mvhd.end - 4), 3, "next track id");
        for (i, trak) in kids[1..3].iter().enumerate() {
            let inner = children(&merged, *trak).unwrap();
            assert!(inner.iter().all(|b| &b.kind != b"edts"));
            let tkhd = find(&inner, b"tkhd").unwrap();
            assert_eq!(u32_at(&merged, tkhd.start + 8 + 12), i as u32 + 1);
        }
        let mvex = children(&merged, kids[3]).unwrap();
        assert_eq!(mvex.len(), 2);
        assert_eq!(u32_at(&merged, mvex[1].start + 12), 2);
        // Media bytes of the trak pass untouched.
        assert!(merged.windows(4).any(|w| w == b"soun"));
    }

    #[test]
    fn fragments_get_continuous_sequences_and_their_track() {
        let mut r = Remuxer::default();
        let a = r.fragment(&fragment(1), 1).unwrap();
        let b = r.fragment(&fragment(1), 2).unwrap();
        assert_eq!(u32_at(&a, 8 + 8 + 4), 1);
        assert_eq!(u32_at(&b, 8 + 8 + 4), 2);
        // tfhd track id: moof(8) + mfhd(16) + traf(8) + tfhd header(8) + version/flags(4).
        assert_eq!(u32_at(&b, 8 + 16 + 8 + 8 + 4), 2);
        assert_eq!(&b[b.len() - 5..], b"media");
        assert!(r.fragment(b"\x00\x00\x00\x09moof", 1).is_err());
    }

    fn manifest() -> (fjord_core::wire::ChannelKey, Manifest) {
        use fjord_core::wire::{ManifestContent, Track};
        let key = fjord_core::wire::ChannelKey::from_seed(&[5; 32]);
        let content = ManifestContent {
            epoch: 9,
            name: "t".into(),
            issued_at_us: 1,
            chunk_duration_us: 200_000,
            group_duration_us: 1_000_000,
            target_latency_us: 3_000_000,
            tracks: vec![
                Track {
                    id: 0,
                    kind: TrackKind::Video,
                    codec: "avc1.42c01e".into(),
                    timescale: 90_000,
                    bitrate: 1_000_000,
                    init_segment: Bytes::from(init(b"vide")),
                },
                Track {
                    id: 1,
                    kind: TrackKind::Audio,
                    codec: "mp4a.40.2".into(),
                    timescale: 48_000,
                    bitrate: 96_000,
                    init_segment: Bytes::from(init(b"soun")),
                },
            ],
        };
        let m = key.sign_manifest(&content).unwrap();
        (key, m)
    }

    fn chunk(key: &fjord_core::wire::ChannelKey, track: u8, seq: u64) -> Chunk {
        let flags = if seq.is_multiple_of(5) {
            ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT
        } else {
            ChunkFlags::empty()
        };
        key.sign_chunk(
            &fjord_core::wire::ChunkMeta {
                epoch: 9,
                track,
                sequence: seq,
                flags,
                timestamp: seq * 100,
                duration: 100,
                published_at_us: 1_000_000 + seq * 200_000,
            },
            &fragment(1),
        )
        .unwrap()
    }

    #[test]
    fn session_starts_at_the_newest_group_and_skips_what_is_lost() {
        let (key, m) = manifest();
        let (mut s, init) = PlaySession::new(&m).unwrap();
        assert!(!init.is_empty());
        let held: Vec<Chunk> = (3..8)
            .flat_map(|q| [chunk(&key, 0, q), chunk(&key, 1, q)])
            .collect();
        // Group starts at 5: chunks 5, 6, 7 of both tracks.
        let out = s.start(&held, 2_000_000);
        assert_eq!(out.len(), 6);
        // Video 8 is lost; 9 arrives, still within 8's deadline: held back.
        assert!(s.offer(chunk(&key, 0, 9), 2_900_000).is_empty());
        // Audio goes on.
        assert_eq!(s.offer(chunk(&key, 1, 8), 2_900_000).len(), 1);
        // Once 9 is past its deadline, 8 is given up; 9 is mid-group, so video waits for 10.
        assert!(
            s.offer(chunk(&key, 0, 10), 1_000_000 + 9 * 200_000 + 3_000_001)
                .len()
                == 1
        );
        // Anything older is ignored, and so is another epoch.
        assert!(s.offer(chunk(&key, 0, 4), 9_000_000).is_empty());
    }

    #[test]
    fn a_session_without_history_begins_at_the_first_group_start() {
        let (key, m) = manifest();
        let (mut s, _) = PlaySession::new(&m).unwrap();
        assert!(s.start(&[], 0).is_empty());
        assert!(s.offer(chunk(&key, 1, 3), 0).is_empty());
        assert!(s.offer(chunk(&key, 0, 4), 0).is_empty());
        assert_eq!(s.offer(chunk(&key, 0, 5), 0).len(), 1);
        assert_eq!(s.offer(chunk(&key, 1, 5), 0).len(), 1);
        assert_eq!(s.offer(chunk(&key, 1, 6), 0).len(), 1);
    }
}
