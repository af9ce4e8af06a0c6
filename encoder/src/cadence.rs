//! Where chunks and groups begin: the encoder's cutting rules, as pure state.
//!
//! Chunks are a whole number of video frames and groups a whole number of chunks, so every
//! chunk of a group has the same duration and every group starts with a key frame at a
//! chunk boundary. Call order per video frame: [`Cutter::next_frame`] (whether the frame
//! starts a group and so must be a key frame), encode and mux it, then
//! [`Cutter::frame_done`] (whether the chunk is complete and must be cut now, without
//! waiting for the next frame). [`Cutter::interrupt`] ends the current chunk early when the
//! input is lost; the next frame then starts a new group.

use std::time::Duration;

/// A chunk or group length that the frame rate cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CadenceError {
    /// Frame rate of zero or beyond what the encoder supports.
    #[error("frame rate {0} is outside 1..=120 frames per second")]
    FrameRate(u32),
    /// The chunk is shorter than one frame.
    #[error("chunk duration {0:?} is shorter than one frame at {1} frames per second")]
    ChunkTooShort(Duration, u32),
    /// The group is shorter than one chunk.
    #[error("group duration {0:?} is shorter than the chunk duration {1:?}")]
    GroupTooShort(Duration, Duration),
}

/// Chunk and group lengths in frames, derived from requested durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// Video frames per second (integer rates only).
    pub fps: u32,
    /// Frames in every chunk.
    pub frames_per_chunk: u32,
    /// Chunks in every group.
    pub chunks_per_group: u32,
}

impl Cadence {
    /// Rounds `chunk` to the nearest whole number of frames and `group` to the nearest whole
    /// number of chunks.
    pub fn new(fps: u32, chunk: Duration, group: Duration) -> Result<Self, CadenceError> {
        if !(1..=120).contains(&fps) {
            return Err(CadenceError::FrameRate(fps));
        }
        let frames = (chunk.as_secs_f64() * f64::from(fps)).round();
        if frames < 1.0 {
            return Err(CadenceError::ChunkTooShort(chunk, fps));
        }
        let frames_per_chunk = frames as u32;
        let chunk_secs = f64::from(frames_per_chunk) / f64::from(fps);
        let chunks = (group.as_secs_f64() / chunk_secs).round();
        if chunks < 1.0 {
            return Err(CadenceError::GroupTooShort(group, chunk));
        }
        Ok(Self {
            fps,
            frames_per_chunk,
            chunks_per_group: chunks as u32,
        })
    }

    /// One chunk's duration in microseconds (rounded down).
    pub fn chunk_us(&self) -> u32 {
        (u64::from(self.frames_per_chunk) * 1_000_000 / u64::from(self.fps)) as u32
    }

    /// One group's duration in microseconds (rounded down).
    pub fn group_us(&self) -> u32 {
        (u64::from(self.frames_per_chunk) * u64::from(self.chunks_per_group) * 1_000_000
            / u64::from(self.fps)) as u32
    }

    /// Frames in a group: the key-frame interval.
    pub fn frames_per_group(&self) -> u32 {
        self.frames_per_chunk * self.chunks_per_group
    }
}

/// What a frame is in the chunk structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRole {
    /// The frame opens a chunk.
    pub starts_chunk: bool,
    /// The frame opens a group: it must be a key frame.
    pub starts_group: bool,
}

/// The cutting state for one track of video frames.
#[derive(Clone, Debug)]
pub struct Cutter {
    cadence: Cadence,
    frames_in_chunk: u32,
    chunks_in_group: u32,
    started: bool,
}

impl Cutter {
    /// A cutter whose first frame starts a group.
    pub fn new(cadence: Cadence) -> Self {
        Self {
            cadence,
            frames_in_chunk: 0,
            chunks_in_group: 0,
            started: false,
        }
    }

    /// The role of the next frame.
    pub fn next_frame(&mut self) -> FrameRole {
        let starts_chunk = self.frames_in_chunk == 0;
        let starts_group = starts_chunk && self.chunks_in_group == 0;
        self.started = true;
        FrameRole {
            starts_chunk,
            starts_group,
        }
    }

    /// Records that the frame was written; returns whether its chunk is now complete.
    pub fn frame_done(&mut self) -> bool {
        self.frames_in_chunk += 1;
        if self.frames_in_chunk < self.cadence.frames_per_chunk {
            return false;
        }
        self.frames_in_chunk = 0;
        self.chunks_in_group = (self.chunks_in_group + 1) % self.cadence.chunks_per_group;
        true
    }

    /// The input was lost: returns whether a chunk is open and must be cut now (short). The
    /// next frame starts a new group either way.
    pub fn interrupt(&mut self) -> bool {
        let open = self.frames_in_chunk > 0;
        self.frames_in_chunk = 0;
        self.chunks_in_group = 0;
        open
    }

    /// For a copied (not re-encoded) frame, where the input's key frames decide the groups:
    /// a key frame starts a group (after closing a chunk that is open, which is then short),
    /// other frames continue the group, cut into chunks of the usual length. Returns the
    /// frame's role and whether the open chunk must be cut before it; `None` for a frame
    /// before the first key frame, which cannot be decoded and must be dropped.
    pub fn next_copied_frame(&mut self, key: bool) -> Option<(FrameRole, bool)> {
        if key {
            let cut_before = self.frames_in_chunk > 0;
            self.frames_in_chunk = 0;
            self.chunks_in_group = 0;
            self.started = true;
            return Some((
                FrameRole {
                    starts_chunk: true,
                    starts_group: true,
                },
                cut_before,
            ));
        }
        if !self.started {
            return None;
        }
        Some((
            FrameRole {
                starts_chunk: self.frames_in_chunk == 0,
                starts_group: false,
            },
            false,
        ))
    }

    /// After a copied frame: whether its chunk is complete. Groups are as long as the input
    /// makes them, so only the chunk length counts here.
    pub fn copied_frame_done(&mut self) -> bool {
        self.frames_in_chunk += 1;
        if self.frames_in_chunk < self.cadence.frames_per_chunk {
            return false;
        }
        self.frames_in_chunk = 0;
        true
    }

    /// After an input loss, copying waits for the next key frame.
    pub fn wait_for_key(&mut self) {
        self.started = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn rounds_to_whole_frames_and_chunks() {
        let c = Cadence::new(30, ms(200), ms(1000)).unwrap();
        assert_eq!((c.frames_per_chunk, c.chunks_per_group), (6, 5));
        assert_eq!((c.chunk_us(), c.group_us()), (200_000, 1_000_000));
        let c = Cadence::new(30, ms(250), ms(1000)).unwrap();
        assert_eq!((c.frames_per_chunk, c.chunks_per_group), (8, 4));
        assert_eq!(c.frames_per_group(), 32);
        let c = Cadence::new(25, ms(250), ms(1000)).unwrap();
        assert_eq!((c.frames_per_chunk, c.chunks_per_group), (6, 4));
        assert_eq!(
            Cadence::new(30, ms(10), ms(1000)),
            Err(CadenceError::ChunkTooShort(ms(10), 30))
        );
        assert!(matches!(
            Cadence::new(30, ms(500), ms(100)),
            Err(CadenceError::GroupTooShort(..))
        ));
        assert_eq!(
            Cadence::new(0, ms(200), ms(1000)),
            Err(CadenceError::FrameRate(0))
        );
    }

    #[test]
    fn cuts_every_chunk_and_keys_every_group() {
        let mut cut = Cutter::new(Cadence::new(30, ms(200), ms(1000)).unwrap());
        let mut roles = Vec::new();
        for _ in 0..60 {
            let role = cut.next_frame();
            roles.push((role, cut.frame_done()));
        }
        let keys: Vec<_> = (0..60).filter(|&i| roles[i].0.starts_group).collect();
        assert_eq!(keys, vec![0, 30]);
        let starts: Vec<_> = (0..60).filter(|&i| roles[i].0.starts_chunk).collect();
        assert_eq!(starts, (0..60).step_by(6).collect::<Vec<_>>());
        let ends: Vec<_> = (0..60).filter(|&i| roles[i].1).collect();
        assert_eq!(ends, (5..60).step_by(6).collect::<Vec<_>>());
    }

    #[test]
    fn copied_frames_follow_the_input_key_frames() {
        let mut cut = Cutter::new(Cadence::new(30, ms(200), ms(1000)).unwrap());
        assert_eq!(
            cut.next_copied_frame(false),
            None,
            "nothing before a key frame"
        );
        let (role, cut_before) = cut.next_copied_frame(true).unwrap();
        assert!(role.starts_group && !cut_before);
        let mut cuts = 0;
        cuts += usize::from(cut.copied_frame_done());
        for _ in 0..7 {
            let (role, _) = cut.next_copied_frame(false).unwrap();
            assert!(!role.starts_group);
            cuts += usize::from(cut.copied_frame_done());
        }
        assert_eq!(cuts, 1, "a chunk of 6 frames, and 2 open");
        let (role, cut_before) = cut.next_copied_frame(true).unwrap();
        assert!(
            role.starts_group && cut_before,
            "an early key frame closes the short chunk"
        );
        cut.copied_frame_done();
        cut.wait_for_key();
        assert_eq!(cut.next_copied_frame(false), None);
    }

    #[test]
    fn interrupt_closes_the_open_chunk_and_restarts_the_group() {
        let mut cut = Cutter::new(Cadence::new(30, ms(200), ms(1000)).unwrap());
        for _ in 0..8 {
            cut.next_frame();
            cut.frame_done();
        }
        assert!(cut.interrupt(), "two frames of the second chunk were open");
        assert!(!cut.interrupt(), "nothing open any more");
        let role = cut.next_frame();
        assert!(role.starts_group && role.starts_chunk);
    }
}
