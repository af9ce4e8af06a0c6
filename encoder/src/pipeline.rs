//! From decoded frames to signed chunks: encode, mux per track, cut on the cadence, sign,
//! publish.
//!
//! Call order: [`Pipeline::new`] (opens the encoders and muxers, signs and publishes the
//! manifest), then any interleaving of [`Pipeline::push_video`] / [`Pipeline::push_picture`]
//! and [`Pipeline::push_audio`] / [`Pipeline::push_audio_frame`] as the source delivers,
//! [`Pipeline::interrupt`] when the source is lost (the open chunks are cut short and the
//! next frame starts a new group; time stamps stay continuous), and [`Pipeline::finish`] at
//! the end. Video decides where chunks end; audio chunk `n` ends with the first AAC frame
//! that reaches the end of video chunk `n`, so both tracks share sequence numbers and group
//! starts.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ffmpeg_next::{Packet, frame};
use fjord_core::wire::{ChannelKey, ChunkFlags, ChunkMeta, ManifestContent, Track, TrackKind};

use crate::cadence::{Cadence, Cutter};
use crate::cmaf::{self, MuxError, TrackMuxer};
use crate::encode::{AUDIO_RATE, AudioEncoder, EncodeError, VideoEncoder, VideoSettings};
use crate::pattern::Picture;
use crate::publish::{PublishError, Publisher};

/// Track id of the video track.
pub const VIDEO_TRACK: u8 = 0;
/// Track id of the audio track.
pub const AUDIO_TRACK: u8 = 1;
/// At most this many recent chunk-ready latencies are kept per track for percentiles.
const LATENCY_HISTORY: usize = 1 << 20;

/// What can stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Muxing failed.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// Signing failed (a field out of the format's limits).
    #[error("cannot sign: {0}")]
    Sign(#[from] fjord_core::wire::EncodeError),
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A decoded frame given to a pipeline that copies the input's video, or a packet to one
    /// that encodes.
    #[error("this pipeline {0}")]
    Mode(&'static str),
}

/// What the channel looks like.
#[derive(Clone, Debug)]
pub struct OutputConfig {
    /// Channel name in the manifest.
    pub name: String,
    /// Size, rate, bit rate and preset of the video.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Video bit rate in bit/s.
    pub video_bitrate: u32,
    /// x264 preset.
    pub preset: String,
    /// Frame rate and chunk and group lengths.
    pub cadence: Cadence,
    /// AAC bit rate in bit/s.
    pub audio_bitrate: u32,
    /// Target latency from publication to playout, in microseconds.
    pub target_latency_us: u32,
    /// Constant video bit rate, padded with filler data.
    pub cbr: bool,
}

/// Counters and latencies since the start.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Video frames encoded.
    pub frames: u64,
    /// Input frames dropped because their slot had passed (the encoder fell behind, or the
    /// source ran faster than its declared rate).
    pub dropped: u64,
    /// Chunks published (both tracks).
    pub chunks: u64,
    /// Payload bytes published (both tracks).
    pub bytes: u64,
    /// Times the source was lost.
    pub interruptions: u64,
    /// Video chunk-ready latencies in microseconds: capture of the chunk's last frame to the
    /// signed chunk.
    pub video_ready_us: Vec<u32>,
    /// Audio chunk-ready latencies: capture of the last sample to the signed chunk.
    pub audio_ready_us: Vec<u32>,
}

/// The `q`-quantile (0..=1) of a list of latencies, in microseconds.
pub fn quantile(values: &[u32], q: f64) -> Option<u32> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

fn push_bounded(list: &mut Vec<u32>, value: u32) {
    if list.len() >= LATENCY_HISTORY {
        list.drain(..LATENCY_HISTORY / 2);
    }
    list.push(value);
}

/// Wall-clock now, microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A video chunk's end, which the audio track cuts against.
#[derive(Clone, Copy, Debug)]
struct Boundary {
    sequence: u64,
    end_sample: i64,
    flags: ChunkFlags,
}

/// The encoder's pipeline for one epoch.
pub struct Pipeline {
    key: ChannelKey,
    epoch: u64,
    cadence: Cadence,
    /// The H.264 encoder; `None` when the input's video is copied.
    video: Option<VideoEncoder>,
    audio: AudioEncoder,
    /// The video muxer; in copy mode created when the input's parameters are known.
    vmux: Option<TrackMuxer>,
    amux: TrackMuxer,
    config: OutputConfig,
    cutter: Cutter,
    publisher: Box<dyn Publisher + Send>,
    /// The next video frame's slot (time stamp in frames).
    slot: i64,
    /// The open video chunk: sequence, first slot, flags.
    chunk: Option<(u64, i64, ChunkFlags)>,
    next_sequence: u64,
    boundaries: VecDeque<Boundary>,
    audio_pending: VecDeque<Packet>,
    audio_written: usize,
    last_audio_capture_us: u64,
    /// The source delivers audio; otherwise silence keeps the audio track going.
    audio_source: bool,
    /// The source was lost: realign audio and video at the next frame.
    realign: bool,
    stats: Stats,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("epoch", &self.epoch)
            .field("slot", &self.slot)
            .field("next_sequence", &self.next_sequence)
            .finish()
    }
}

impl Pipeline {
    /// Opens the encoders and muxers and publishes the signed manifest. The epoch is the
    /// current wall-clock time in microseconds, so a restarted encoder has a larger one.
    pub fn new(
        key: ChannelKey,
        config: &OutputConfig,
        publisher: Box<dyn Publisher + Send>,
    ) -> Result<Self, PipelineError> {
        let cadence = config.cadence;
        let video = VideoEncoder::new(&VideoSettings {
            width: config.width,
            height: config.height,
            fps: cadence.fps,
            bitrate: config.video_bitrate,
            preset: config.preset.clone(),
            keyint: cadence.frames_per_group(),
            cbr: config.cbr,
        })?;
        let vmux = TrackMuxer::new(video.parameters(), ffmpeg_next::Rational::new(1, 90_000))?;
        let mut p = Self::build(key, config, publisher, Some(video))?;
        p.start_video(vmux)?;
        Ok(p)
    }

    /// A pipeline that copies the input's H.264 video instead of encoding it (audio is still
    /// encoded). Nothing is published until [`Pipeline::set_copy_input`] gives the input's
    /// video parameters; groups then start at the input's key frames.
    pub fn new_copy(
        key: ChannelKey,
        config: &OutputConfig,
        publisher: Box<dyn Publisher + Send>,
    ) -> Result<Self, PipelineError> {
        Self::build(key, config, publisher, None)
    }

    fn build(
        key: ChannelKey,
        config: &OutputConfig,
        publisher: Box<dyn Publisher + Send>,
        video: Option<VideoEncoder>,
    ) -> Result<Self, PipelineError> {
        let cadence = config.cadence;
        let audio = AudioEncoder::new(config.audio_bitrate)?;
        let amux = TrackMuxer::new(audio.parameters(), audio.time_base())?;
        let now = wall_us();
        Ok(Self {
            key,
            epoch: now,
            cadence,
            video,
            audio,
            vmux: None,
            amux,
            config: config.clone(),
            cutter: Cutter::new(cadence),
            publisher,
            slot: 0,
            chunk: None,
            next_sequence: 0,
            boundaries: VecDeque::new(),
            audio_pending: VecDeque::new(),
            audio_written: 0,
            last_audio_capture_us: now,
            audio_source: true,
            realign: false,
            stats: Stats::default(),
        })
    }

    /// Takes the video muxer and publishes the manifest that describes it.
    fn start_video(&mut self, vmux: TrackMuxer) -> Result<(), PipelineError> {
        let config = &self.config;
        let codec = cmaf::avc_codec_string(vmux.init_segment())
            .ok_or_else(|| MuxError::Boxes("init segment without avcC".into()))?;
        let content = ManifestContent {
            epoch: self.epoch,
            name: config.name.clone(),
            issued_at_us: wall_us(),
            chunk_duration_us: self.cadence.chunk_us(),
            group_duration_us: self.cadence.group_us(),
            target_latency_us: config.target_latency_us,
            tracks: vec![
                Track {
                    id: VIDEO_TRACK,
                    kind: TrackKind::Video,
                    codec,
                    timescale: vmux.time_base().denominator() as u32,
                    bitrate: config.video_bitrate,
                    init_segment: vmux.init_segment().clone(),
                },
                Track {
                    id: AUDIO_TRACK,
                    kind: TrackKind::Audio,
                    codec: "mp4a.40.2".into(),
                    timescale: self.amux.time_base().denominator() as u32,
                    bitrate: config.audio_bitrate,
                    init_segment: self.amux.init_segment().clone(),
                },
            ],
        };
        let manifest = self.key.sign_manifest(&content)?;
        self.publisher.manifest(&manifest)?;
        self.vmux = Some(vmux);
        Ok(())
    }

    /// Whether this pipeline copies the input's video.
    pub fn copies_video(&self) -> bool {
        self.video.is_none()
    }

    /// Gives a copying pipeline the input's video parameters. The first call fixes the
    /// channel's video (and publishes the manifest); a later input (a sender that came back)
    /// is accepted only with the same parameters, since the init segment viewers hold must
    /// stay valid. Returns whether the input is accepted.
    pub fn set_copy_input(
        &mut self,
        parameters: ffmpeg_next::codec::Parameters,
    ) -> Result<bool, PipelineError> {
        let vmux = TrackMuxer::new(parameters, ffmpeg_next::Rational::new(1, 90_000))?;
        match &self.vmux {
            None => {
                self.start_video(vmux)?;
                Ok(true)
            }
            Some(current) => Ok(current.init_segment() == vmux.init_segment()),
        }
    }

    /// The epoch: the wall-clock start of this pipeline.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cadence.
    pub fn cadence(&self) -> Cadence {
        self.cadence
    }

    /// The next video frame's slot, in frames since the start.
    pub fn next_slot(&self) -> i64 {
        self.slot
    }

    /// Counters and latencies so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where the next queued audio sample sits on the timeline, in samples since the start.
    pub fn audio_position(&self) -> i64 {
        self.audio.position()
    }

    /// Queues `n` samples of silence (a gap in the source's audio).
    pub fn push_silence(&mut self, n: usize) {
        self.audio.push_silence(n);
    }

    /// Counts an input frame dropped before encoding.
    pub fn count_dropped(&mut self, n: u64) {
        self.stats.dropped += n;
    }

    /// Whether the source delivers audio. Without it the pipeline adds silence with each
    /// video frame, so the channel always has both tracks.
    pub fn set_audio_source(&mut self, present: bool) {
        self.audio_source = present;
    }

    fn slot_samples(&self, slot: i64) -> i64 {
        slot * i64::from(AUDIO_RATE) / i64::from(self.cadence.fps)
    }

    /// Encodes a test-pattern picture (of the output size).
    pub fn push_picture(
        &mut self,
        picture: &Picture,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        let mut frame = frame::Video::new(
            ffmpeg_next::format::Pixel::YUV420P,
            picture.width as u32,
            picture.height as u32,
        );
        copy_plane(&picture.y, picture.width, &mut frame, 0);
        copy_plane(&picture.u, picture.width / 2, &mut frame, 1);
        copy_plane(&picture.v, picture.width / 2, &mut frame, 2);
        self.encode_video(frame, capture_us)
    }

    /// Encodes a decoded video frame of any size or format as the next frame.
    pub fn push_video(
        &mut self,
        input: &frame::Video,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        let video = self
            .video
            .as_mut()
            .ok_or(PipelineError::Mode("copies the input's video"))?;
        let frame = video.convert(input)?;
        self.encode_video(frame, capture_us)
    }

    /// After a loss the video goes on at the next slot, so its time stamps have no gap
    /// (players stall on gaps). Audio behind it is filled with silence; audio ahead of it (at
    /// most an AAC frame after the padding at the loss, or a source whose audio ran ahead)
    /// stays, and the source's next audio is placed by its time stamps.
    fn realign_audio(&mut self) {
        if self.realign {
            self.realign = false;
            let gap = self.slot_samples(self.slot) - self.audio.position();
            if gap > 0 {
                self.audio.push_silence(gap as usize);
            }
        }
    }

    /// Opens a chunk if this frame starts one.
    fn open_chunk(&mut self, role: crate::cadence::FrameRole) {
        if role.starts_chunk {
            let flags = if role.starts_group {
                ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT
            } else {
                ChunkFlags::empty()
            };
            self.chunk = Some((self.next_sequence, self.slot, flags));
            self.next_sequence += 1;
        }
    }

    /// After a video frame went into the muxer: advance the slot and keep audio in step.
    fn frame_written(&mut self, capture_us: u64) {
        self.slot += 1;
        self.stats.frames += 1;
        if !self.audio_source {
            let n = self.slot_samples(self.slot) - self.audio.position();
            if n > 0 {
                self.audio.push_silence(n as usize);
                self.last_audio_capture_us = capture_us;
            }
        } else {
            // A source whose audio stalls (or never comes) must not hold the audio track back
            // by more than a second: fill the gap with silence.
            let behind =
                self.slot_samples(self.slot) - i64::from(AUDIO_RATE) - self.audio.position();
            if behind > 0 {
                self.audio.push_silence(behind as usize);
            }
        }
    }

    fn encode_video(
        &mut self,
        mut frame: frame::Video,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        self.realign_audio();
        let role = self.cutter.next_frame();
        self.open_chunk(role);
        let (Some(video), Some(vmux)) = (self.video.as_mut(), self.vmux.as_mut()) else {
            return Err(PipelineError::Mode("copies the input's video"));
        };
        let tb = video.time_base();
        for mut packet in video.encode(&mut frame, self.slot, role.starts_group)? {
            vmux.write(&mut packet, tb)?;
        }
        self.frame_written(capture_us);
        if self.cutter.frame_done() {
            self.cut_video(capture_us)?;
        }
        self.pump_audio()
    }

    /// Copies one H.264 packet of the input as the next frame (copy mode). Packets before the
    /// first key frame (or the first after a loss) cannot be decoded and are dropped.
    pub fn push_video_packet(
        &mut self,
        packet: &Packet,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        if self.video.is_some() {
            return Err(PipelineError::Mode("encodes its video"));
        }
        if self.vmux.is_none() {
            return Err(PipelineError::Mode("has no input parameters yet"));
        }
        let Some((role, cut_before)) = self.cutter.next_copied_frame(packet.is_key()) else {
            self.stats.dropped += 1;
            return Ok(());
        };
        if cut_before {
            self.cut_video(capture_us)?;
        }
        self.realign_audio();
        self.open_chunk(role);
        let ticks = 90_000 / i64::from(self.cadence.fps);
        let mut out = packet.clone();
        out.set_pts(Some(self.slot * ticks));
        out.set_dts(Some(self.slot * ticks));
        out.set_duration(ticks);
        out.set_position(-1);
        let tb = ffmpeg_next::Rational::new(1, 90_000);
        self.vmux
            .as_mut()
            .expect("checked above")
            .write(&mut out, tb)?;
        self.frame_written(capture_us);
        if self.cutter.copied_frame_done() {
            self.cut_video(capture_us)?;
        }
        self.pump_audio()
    }

    fn cut_video(&mut self, capture_us: u64) -> Result<(), PipelineError> {
        let Some((sequence, first_slot, flags)) = self.chunk.take() else {
            return Ok(());
        };
        let Some(vmux) = self.vmux.as_mut() else {
            return Ok(());
        };
        let Some(payload) = vmux.cut()? else {
            return Ok(());
        };
        let timescale = i64::from(vmux.time_base().denominator());
        let fps = i64::from(self.cadence.fps);
        let start = first_slot * timescale / fps;
        let end = self.slot * timescale / fps;
        let timestamp = cmaf::base_decode_time(&payload).unwrap_or(start as u64);
        self.publish(
            VIDEO_TRACK,
            sequence,
            flags,
            timestamp,
            (end - start) as u32,
            payload,
        )?;
        let latency = wall_us().saturating_sub(capture_us);
        push_bounded(&mut self.stats.video_ready_us, latency as u32);
        self.boundaries.push_back(Boundary {
            sequence,
            end_sample: self.slot_samples(self.slot),
            flags,
        });
        Ok(())
    }

    /// Queues decoded audio of any format; it is encoded as the video allows it to be cut.
    pub fn push_audio_frame(
        &mut self,
        input: &frame::Audio,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        self.audio.push_frame(input)?;
        self.after_audio(capture_us)
    }

    /// Queues stereo samples at 48 kHz.
    pub fn push_audio(
        &mut self,
        left: &[f32],
        right: &[f32],
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        self.audio.push(left, right);
        self.after_audio(capture_us)
    }

    fn after_audio(&mut self, capture_us: u64) -> Result<(), PipelineError> {
        self.last_audio_capture_us = capture_us;
        // Audio running far ahead of the video (a source whose clocks drift, or video that
        // stalled) is trimmed rather than queued without bound.
        let ahead = self.audio.position() - self.slot_samples(self.slot) - i64::from(AUDIO_RATE);
        if ahead > 0 {
            self.audio.drop_queued(ahead as usize);
        }
        self.pump_audio()
    }

    fn pump_audio(&mut self) -> Result<(), PipelineError> {
        self.audio_pending.extend(self.audio.drain()?);
        let frame_size = self.audio.frame_size() as i64;
        let tb = self.audio.time_base();
        while let Some(boundary) = self.boundaries.front().copied() {
            let Some(mut packet) = self.audio_pending.pop_front() else {
                break;
            };
            // AAC's encoder delay (priming) makes its first packet start at -1024. CMAF
            // fragments written after an empty moov cannot carry the edit list that would
            // hide it, so the track starts at 0 and plays the priming: audio sits one AAC
            // frame (21 ms) late, well under what viewers notice (about 45 ms).
            let start = packet.pts().unwrap_or(0) + frame_size;
            packet.set_pts(Some(start));
            packet.set_dts(Some(start));
            self.amux.write(&mut packet, tb)?;
            self.audio_written += 1;
            if start + frame_size >= boundary.end_sample {
                self.boundaries.pop_front();
                self.cut_audio(boundary)?;
            }
        }
        Ok(())
    }

    fn cut_audio(&mut self, boundary: Boundary) -> Result<(), PipelineError> {
        let count = std::mem::take(&mut self.audio_written);
        let Some(payload) = self.amux.cut()? else {
            return Ok(());
        };
        let timestamp = cmaf::base_decode_time(&payload).unwrap_or(0);
        let duration = (count * self.audio.frame_size()) as u32;
        let flags = ChunkFlags::INDEPENDENT
            | if boundary.flags.contains(ChunkFlags::GROUP_START) {
                ChunkFlags::GROUP_START
            } else {
                ChunkFlags::empty()
            };
        self.publish(
            AUDIO_TRACK,
            boundary.sequence,
            flags,
            timestamp,
            duration,
            payload,
        )?;
        let latency = wall_us().saturating_sub(self.last_audio_capture_us);
        push_bounded(&mut self.stats.audio_ready_us, latency as u32);
        Ok(())
    }

    fn publish(
        &mut self,
        track: u8,
        sequence: u64,
        flags: ChunkFlags,
        timestamp: u64,
        duration: u32,
        payload: Bytes,
    ) -> Result<(), PipelineError> {
        let meta = ChunkMeta {
            epoch: self.epoch,
            track,
            sequence,
            flags,
            timestamp,
            duration,
            published_at_us: wall_us(),
        };
        let chunk = self.key.sign_chunk(&meta, &payload)?;
        self.stats.chunks += 1;
        self.stats.bytes += payload.len() as u64;
        self.publisher.chunk(&chunk)?;
        Ok(())
    }

    /// The source was lost: publishes what is open (short chunks) so viewers get everything up
    /// to the loss; the next frame starts a new group, continuing the time stamps.
    pub fn interrupt(&mut self) -> Result<(), PipelineError> {
        self.stats.interruptions += 1;
        if self.video.is_none() {
            self.cutter.wait_for_key();
        }
        if self.cutter.interrupt() {
            self.cut_video(wall_us())?;
        }
        self.flush_audio(false)?;
        self.realign = true;
        Ok(())
    }

    /// Gives every video chunk published so far its audio chunk now: pads the audio with
    /// silence up to the end of the video (never past it, so the time stamps stay
    /// continuous), and cuts with what the encoder has released. The AAC frames it still holds
    /// (its one-frame delay) open the next audio chunk; at the end (`last`) the encoder is
    /// drained too.
    fn flush_audio(&mut self, last: bool) -> Result<(), PipelineError> {
        let Some(end) = self.boundaries.back().map(|b| b.end_sample) else {
            return Ok(());
        };
        let need = end - self.audio.position();
        if need > 0 {
            self.audio.push_silence(need as usize);
        }
        self.pump_audio()?;
        if last {
            self.audio_pending.extend(self.audio.finish()?);
        }
        let frame_size = self.audio.frame_size() as i64;
        let tb = self.audio.time_base();
        while let Some(boundary) = self.boundaries.pop_front() {
            let is_last = self.boundaries.is_empty();
            if !last && self.audio_pending.is_empty() && self.audio_written == 0 {
                // The encoder still holds this chunk's audio (its one-frame delay): the chunk
                // is cut when the source comes back and pushes it out, so no sequence number
                // is skipped and the time stamps stay continuous.
                self.boundaries.push_front(boundary);
                break;
            }
            while let Some(mut packet) = self.audio_pending.pop_front() {
                let start = packet.pts().unwrap_or(0) + frame_size;
                if start >= boundary.end_sample && !(last && is_last) && self.audio_written > 0 {
                    self.audio_pending.push_front(packet);
                    break;
                }
                packet.set_pts(Some(start));
                packet.set_dts(Some(start));
                self.amux.write(&mut packet, tb)?;
                self.audio_written += 1;
            }
            self.cut_audio(boundary)?;
        }
        Ok(())
    }

    /// Ends the epoch: publishes the open chunks and returns the statistics.
    pub fn finish(mut self) -> Result<Stats, PipelineError> {
        if self.cutter.interrupt() {
            self.cut_video(wall_us())?;
        }
        self.flush_audio(true)?;
        Ok(self.stats)
    }
}

fn copy_plane(src: &[u8], width: usize, frame: &mut frame::Video, plane: usize) {
    let stride = frame.stride(plane);
    let dst = frame.data_mut(plane);
    for (row, line) in src.chunks_exact(width).enumerate() {
        dst[row * stride..row * stride + width].copy_from_slice(line);
    }
}
