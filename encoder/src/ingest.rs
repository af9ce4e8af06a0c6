//! Sources: the built-in test pattern, a media file played out at real time (optionally
//! looped), and live listeners that OBS or ffmpeg push to (SRT, RTMP, UDP MPEG-TS).
//!
//! Files and live inputs are read on their own thread, which opens the input, sends the
//! stream parameters and then packets over a bounded channel, and for live inputs listens
//! again whenever the sender goes away or sends something unreadable. The pipeline thread
//! decodes, maps input time stamps to output frame slots (constant frame rate: late frames
//! dropped, gaps filled by repeating a frame), paces files to real time, and cuts the open
//! chunks short when the input falls silent, so a broken live input never stops the channel:
//! when the sender comes back, the channel goes on with a new group.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use ffmpeg_next::{
    self as ffmpeg, Dictionary, Packet, Rational, codec, decoder, format, frame, media,
};
use tracing::{debug, info, warn};

use crate::encode::AUDIO_RATE;
use crate::pattern::{Pattern, tone};
use crate::pipeline::{Pipeline, PipelineError, wall_us};

/// Packets the reader may queue ahead of the pipeline.
const PACKET_QUEUE: usize = 512;
/// Silence after which the open chunks are published short and the next frame starts a group.
const STALL: Duration = Duration::from_millis(1000);

/// What can stop a source for good.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input file does not exist or cannot be read.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The input has no stream we can decode.
    #[error("{input}: {reason}")]
    Unsupported {
        /// The input.
        input: String,
        /// What is missing or unsupported.
        reason: String,
    },
    /// A live URL we do not listen on.
    #[error(
        "unsupported input URL {0}: use srt://HOST:PORT, rtmp://HOST:PORT/APP/KEY or udp://HOST:PORT"
    )]
    Url(String),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Where the pictures and sound come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in test pattern and tone.
    Pattern,
    /// A media file, played out at real time.
    File {
        /// The file.
        path: PathBuf,
        /// Start again at the end.
        looped: bool,
    },
    /// A live listener: the sender connects to us.
    Live {
        /// `srt://`, `rtmp://` or `udp://` URL to listen on.
        url: String,
    },
}

impl Source {
    /// Parses `pattern`, a live URL, or a file path (which must exist).
    pub fn parse(spec: &str, looped: bool) -> Result<Self, IngestError> {
        if spec == "pattern" {
            return Ok(Self::Pattern);
        }
        if let Some((scheme, _)) = spec.split_once("://") {
            return match scheme {
                "srt" | "rtmp" | "udp" => Ok(Self::Live {
                    url: spec.to_owned(),
                }),
                _ => Err(IngestError::Url(spec.to_owned())),
            };
        }
        let path = Path::new(spec);
        std::fs::File::open(path).map_err(|e| IngestError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::File {
            path: path.to_owned(),
            looped,
        })
    }
}

/// The URL and options FFmpeg needs to listen (rather than call out) on a live URL.
pub fn listen_options(url: &str) -> Result<(String, Dictionary<'static>), IngestError> {
    let mut options = Dictionary::new();
    // Start fast: a second of probing is plenty for H.264/AAC in TS or FLV.
    options.set("analyzeduration", "1000000");
    options.set("probesize", "1000000");
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "srt" => {
            let mut url = url.to_owned();
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("mode=listener");
            }
            Ok((url, options))
        }
        "rtmp" => {
            options.set("listen", "1");
            Ok((url.to_owned(), options))
        }
        "udp" => {
            options.set("overrun_nonfatal", "1");
            options.set("fifo_size", "1000000");
            Ok((url.to_owned(), options))
        }
        _ => Err(IngestError::Url(url.to_owned())),
    }
}

/// How a run ends and reports.
#[derive(Clone, Debug)]
pub struct Control {
    /// Set to stop (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Stop after this much media (pattern, file) or wall-clock time (live).
    pub duration: Option<Duration>,
    /// A live sender silent this long is dropped and the listener reopened.
    pub input_timeout: Duration,
}

/// How many times to encode a frame whose time (seconds since the anchor) maps to
/// `target` slot when the next free slot is `next`: 0 drops a late frame, 1 is the normal
/// case, more repeats it to fill a gap. `None` means the jump is too large (over a second):
/// re-anchor instead.
pub fn copies(target: i64, next: i64, fps: u32) -> Option<u64> {
    if target < next {
        return Some(0);
    }
    let n = (target - next + 1) as u64;
    (n <= u64::from(fps)).then_some(n)
}

/// Runs the test pattern at real time until stopped or the duration is reached.
pub fn run_pattern(
    pipeline: &mut Pipeline,
    name: &str,
    (width, height): (u32, u32),
    control: &Control,
    status: &mut dyn FnMut(&Pipeline),
) -> Result<(), IngestError> {
    let cadence = pipeline.cadence();
    let fps = i64::from(cadence.fps);
    let spf = (AUDIO_RATE / cadence.fps) as usize;
    let pattern = Pattern::new(width as usize, height as usize, name);
    let start = Instant::now();
    let start_wall = wall_us();
    let limit = control
        .duration
        .map(|d| (d.as_secs_f64() * fps as f64).round() as i64);
    let mut last_status = Instant::now();
    let (mut left, mut right) = (vec![0.0; spf], vec![0.0; spf]);
    let mut slot0 = pipeline.next_slot();
    let mut produced = 0i64;
    while !control.stop.load(Ordering::Relaxed) && limit.is_none_or(|l| produced < l) {
        let slot = pipeline.next_slot();
        let due = Duration::from_micros(((slot - slot0) * 1_000_000 / fps) as u64);
        let elapsed = start.elapsed();
        if due > elapsed {
            thread::sleep(due - elapsed);
        } else if elapsed - due > Duration::from_secs(1) {
            // More than a second behind real time (an overloaded machine): skip ahead and
            // start a new group rather than publish ever staler frames.
            let behind = ((elapsed - due).as_micros() as i64 * fps / 1_000_000) as u64;
            warn!(
                frames = behind,
                "encoder more than 1 s behind real time; skipping ahead"
            );
            pipeline.count_dropped(behind);
            pipeline.interrupt()?;
            slot0 -= behind as i64;
        }
        let capture = start_wall + due.as_micros() as u64;
        pipeline.push_picture(&pattern.render(slot as u64, capture, cadence.fps), capture)?;
        tone(slot as u64 * spf as u64, AUDIO_RATE, &mut left, &mut right);
        pipeline.push_audio(&left, &right, capture)?;
        produced += 1;
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            status(pipeline);
        }
    }
    Ok(())
}

/// Stream parameters of an opened input.
struct StreamInfo {
    index: usize,
    parameters: codec::Parameters,
    time_base: Rational,
    frame_rate: Rational,
}

/// What the reader thread tells the pipeline thread.
enum Event {
    /// An input was opened (a file, or a sender connected).
    Opened {
        description: String,
        video: Option<StreamInfo>,
        audio: Option<StreamInfo>,
    },
    /// A packet of the opened input.
    Packet(Packet),
    /// A file looped back to its start.
    Restart,
    /// The input ended or broke; for live inputs the listener is reopened.
    Closed(String),
    /// The input cannot be used and will not be retried (files).
    Fatal(IngestError),
}

fn describe(ictx: &format::context::Input) -> String {
    ictx.streams()
        .map(|s| {
            let p = s.parameters();
            format!("{:?} {:?}", p.medium(), p.id())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn stream_info(ictx: &format::context::Input, kind: media::Type) -> Option<StreamInfo> {
    ictx.streams().best(kind).map(|s| StreamInfo {
        index: s.index(),
        parameters: s.parameters(),
        time_base: s.time_base(),
        frame_rate: s.avg_frame_rate(),
    })
}

/// A clock for the interrupt callback: milliseconds since `base`.
fn millis_since(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

/// Reads an input on its own thread. Files end (or loop); live inputs listen again after
/// every loss until stopped.
fn reader(source: Source, control: Control, tx: SyncSender<Event>) {
    let base = Instant::now();
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    let (url, options, live) = match &source {
        Source::File { path, .. } => (path.display().to_string(), Dictionary::new(), false),
        Source::Live { url } => match listen_options(url) {
            Ok((u, o)) => (u, o, true),
            Err(e) => {
                let _ = tx.send(Event::Fatal(e));
                return;
            }
        },
        Source::Pattern => return,
    };
    let looped = matches!(source, Source::File { looped: true, .. });
    while !control.stop.load(Ordering::Relaxed) {
        if live {
            info!(url = %url, "waiting for a sender");
        }
        deadline.store(u64::MAX, Ordering::Relaxed);
        let interrupt = {
            let stop = control.stop.clone();
            let deadline = deadline.clone();
            move || {
                stop.load(Ordering::Relaxed)
                    || millis_since(base) > deadline.load(Ordering::Relaxed)
            }
        };
        let mut ictx = match format::input_with_interrupt_and_dictionary(
            &url,
            interrupt,
            options.clone(),
        ) {
            Ok(ictx) => ictx,
            Err(e) => {
                if !live {
                    let _ = tx.send(Event::Fatal(IngestError::File {
                        path: PathBuf::from(&url),
                        reason: format!("not a media file FFmpeg can read ({e})"),
                    }));
                    return;
                }
                if !control.stop.load(Ordering::Relaxed) {
                    warn!(url = %url, error = %e, "could not understand what arrived; listening again");
                    thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let video = stream_info(&ictx, media::Type::Video);
        let audio = stream_info(&ictx, media::Type::Audio);
        let description = describe(&ictx);
        if tx
            .send(Event::Opened {
                description,
                video,
                audio,
            })
            .is_err()
        {
            return;
        }
        let reason = loop {
            if control.stop.load(Ordering::Relaxed) {
                break "stopped".to_owned();
            }
            deadline.store(
                millis_since(base) + control.input_timeout.as_millis() as u64,
                Ordering::Relaxed,
            );
            let mut packet = Packet::empty();
            match packet.read(&mut ictx) {
                Ok(()) => {
                    if tx.send(Event::Packet(packet)).is_err() {
                        return;
                    }
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(ffmpeg::Error::Eof) if looped => {
                    if let Err(e) = ictx.seek(0, ..) {
                        break format!("cannot loop: {e}");
                    }
                    if tx.send(Event::Restart).is_err() {
                        return;
                    }
                }
                Err(ffmpeg::Error::Eof) => break "end of input".to_owned(),
                Err(ffmpeg::Error::Exit) => {
                    break format!("no data for {:?}", control.input_timeout);
                }
                Err(e) => break format!("read error: {e}"),
            }
        };
        if tx.send(Event::Closed(reason)).is_err() || !live {
            return;
        }
    }
}

/// Decoders and time mapping for one opened input.
struct Decoding {
    video: Option<(usize, decoder::Video, Rational)>,
    /// Copy mode: the input's video packets go to the pipeline as they are.
    copy: bool,
    audio: Option<(usize, decoder::Audio, Rational)>,
    /// Input time (seconds) and output slot of the segment's first frame.
    anchor: Option<(f64, i64)>,
}

/// Checks that an input's video can be copied into the channel: H.264 at the channel's frame
/// rate, with the same parameters as an earlier input of this run.
fn accept_copy(
    pipeline: &mut Pipeline,
    description: &str,
    video: &StreamInfo,
) -> Result<(), IngestError> {
    let unsupported = |reason: String| IngestError::Unsupported {
        input: description.to_owned(),
        reason,
    };
    if video.parameters.id() != codec::Id::H264 {
        return Err(unsupported(format!(
            "--video-copy needs H.264 video, this is {:?}; drop --video-copy to re-encode",
            video.parameters.id()
        )));
    }
    let fps = pipeline.cadence().fps;
    let rate = video.frame_rate;
    if rate.denominator() == 0
        || (f64::from(rate.numerator()) / f64::from(rate.denominator()) - f64::from(fps)).abs()
            > 0.01
    {
        return Err(unsupported(format!(
            "--video-copy needs the input at the channel's {fps} fps, this runs at {}/{}; \
             set --fps or drop --video-copy",
            rate.numerator(),
            rate.denominator()
        )));
    }
    if !pipeline.set_copy_input(video.parameters.clone())? {
        return Err(unsupported(
            "its H.264 parameters differ from the channel's (a copied channel keeps one init \
             segment); restart the encoder for a new one"
                .into(),
        ));
    }
    Ok(())
}

fn open_decoders(
    description: &str,
    video: Option<StreamInfo>,
    audio: Option<StreamInfo>,
) -> Result<Decoding, IngestError> {
    let unsupported = |reason: String| IngestError::Unsupported {
        input: description.to_owned(),
        reason,
    };
    let video = video.ok_or_else(|| unsupported("no video stream".into()))?;
    let id = video.parameters.id();
    let vdec = codec::context::Context::from_parameters(video.parameters)
        .and_then(|c| c.decoder().video())
        .map_err(|e| unsupported(format!("cannot decode video codec {id:?}: {e}")))?;
    let adec = match audio {
        Some(a) => {
            let id = a.parameters.id();
            match codec::context::Context::from_parameters(a.parameters)
                .and_then(|c| c.decoder().audio())
            {
                Ok(d) => Some((a.index, d, a.time_base)),
                Err(e) => {
                    warn!(codec = ?id, error = %e, "cannot decode the audio; sending silence");
                    None
                }
            }
        }
        None => None,
    };
    Ok(Decoding {
        video: Some((video.index, vdec, video.time_base)),
        copy: false,
        audio: adec,
        anchor: None,
    })
}

/// Runs a file or live source until stopped, the duration is reached, or a file ends.
pub fn run_input(
    pipeline: &mut Pipeline,
    source: Source,
    control: &Control,
    status: &mut dyn FnMut(&Pipeline),
) -> Result<(), IngestError> {
    let live = matches!(source, Source::Live { .. });
    let (tx, rx) = sync_channel(PACKET_QUEUE);
    let reader_control = control.clone();
    let reader = thread::Builder::new()
        .name("ingest".into())
        .spawn(move || reader(source, reader_control, tx))
        .expect("spawn the ingest thread");
    let result = drive(pipeline, &rx, live, control, status);
    // Tell the reader to stop and let it see the closed channel.
    control.stop.store(true, Ordering::Relaxed);
    drop(rx);
    let _ = reader.join();
    result
}

fn drive(
    pipeline: &mut Pipeline,
    rx: &Receiver<Event>,
    live: bool,
    control: &Control,
    status: &mut dyn FnMut(&Pipeline),
) -> Result<(), IngestError> {
    let fps = pipeline.cadence().fps;
    let started = Instant::now();
    let media_limit = control
        .duration
        .map(|d| (d.as_secs_f64() * f64::from(fps)).round() as u64);
    let frames_at_start = pipeline.stats().frames;
    let mut decoding: Option<Decoding> = None;
    let mut last_status = Instant::now();
    let mut interrupted = true;
    // Real-time pacing of files: wall clock and slot of the first frame.
    let mut pace: Option<(Instant, i64)> = None;
    loop {
        if control.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(limit) = control.duration {
            let done = if live {
                started.elapsed() >= limit
            } else {
                media_limit.is_some_and(|m| pipeline.stats().frames - frames_at_start >= m)
            };
            if done {
                return Ok(());
            }
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            status(pipeline);
        }
        let event = match rx.recv_timeout(if interrupted {
            Duration::from_millis(200)
        } else {
            STALL
        }) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                if !interrupted {
                    info!("input silent for {STALL:?}; publishing what is open");
                    pipeline.interrupt()?;
                    interrupted = true;
                    if let Some(d) = &mut decoding {
                        d.anchor = None;
                    }
                    pace = None;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        match event {
            Event::Opened {
                description,
                video,
                audio,
            } => {
                info!(streams = %description, "input opened");
                let copy = pipeline.copies_video();
                let checked = match (&video, copy) {
                    (Some(v), true) => accept_copy(pipeline, &description, v),
                    _ => Ok(()),
                };
                match checked.and_then(|()| open_decoders(&description, video, audio)) {
                    Ok(mut d) => {
                        d.copy = copy;
                        pipeline.set_audio_source(d.audio.is_some());
                        decoding = Some(d);
                    }
                    Err(e) if live => {
                        warn!(error = %e, "ignoring this sender");
                        decoding = None;
                    }
                    Err(e) => return Err(e),
                }
            }
            Event::Packet(packet) => {
                let Some(d) = &mut decoding else { continue };
                let fed = match feed(pipeline, d, &packet, &mut pace, live) {
                    Ok(fed) => fed,
                    Err(e @ IngestError::Unsupported { .. }) if live => {
                        warn!(error = %e, "ignoring this sender");
                        decoding = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if fed && interrupted {
                    interrupted = false;
                }
            }
            Event::Restart => {
                if let Some(d) = &mut decoding {
                    // Continue the output timeline across the loop.
                    d.anchor = None;
                    if let Some((_, v, _)) = &mut d.video {
                        v.flush();
                    }
                }
                pace = None;
            }
            Event::Closed(reason) => {
                if live {
                    warn!(%reason, "sender lost; the channel goes on when it comes back");
                } else {
                    info!(%reason, "input ended");
                }
                if let Some(d) = &mut decoding {
                    drain_decoder(pipeline, d, &mut pace, live)?;
                }
                decoding = None;
                if !interrupted {
                    pipeline.interrupt()?;
                    interrupted = true;
                }
                pace = None;
                if !live {
                    return Ok(());
                }
            }
            Event::Fatal(e) => return Err(e),
        }
    }
}

/// Decodes a packet and feeds the frames to the pipeline. Returns whether a video frame went
/// in. Undecodable packets (garbage, a broken stream) are logged and skipped.
fn feed(
    pipeline: &mut Pipeline,
    d: &mut Decoding,
    packet: &Packet,
    pace: &mut Option<(Instant, i64)>,
    live: bool,
) -> Result<bool, IngestError> {
    let index = packet.stream();
    let mut fed = false;
    if d.copy
        && let Some((vi, _, tb)) = &d.video
        && *vi == index
    {
        return copy_packet(pipeline, d, *tb, packet, pace, live);
    }
    if let Some((vi, dec, _)) = &mut d.video
        && *vi == index
    {
        if let Err(e) = dec.send_packet(packet) {
            debug!(error = %e, "undecodable video packet skipped");
            return Ok(false);
        }
        fed = receive_video(pipeline, d, pace, live)?;
    } else if let Some((ai, dec, tb)) = &mut d.audio
        && *ai == index
    {
        if let Err(e) = dec.send_packet(packet) {
            debug!(error = %e, "undecodable audio packet skipped");
            return Ok(false);
        }
        let tb = *tb;
        let mut frame = frame::Audio::empty();
        while dec.receive_frame(&mut frame).is_ok() {
            push_audio(pipeline, d.anchor, &frame, tb)?;
        }
    }
    Ok(fed)
}

/// Copy mode: one input packet is one frame of the channel, at the channel's rate (checked
/// when the input opened). Packets cannot be dropped or repeated without breaking the decode,
/// so only the first one anchors the timeline; files are paced to real time.
fn copy_packet(
    pipeline: &mut Pipeline,
    d: &mut Decoding,
    tb: Rational,
    packet: &Packet,
    pace: &mut Option<(Instant, i64)>,
    live: bool,
) -> Result<bool, IngestError> {
    if packet
        .pts()
        .is_some_and(|p| packet.dts().is_some_and(|q| p != q))
    {
        return Err(IngestError::Unsupported {
            input: "the input's video".into(),
            reason: "it has B-frames (presentation differs from decode order); --video-copy \
                     needs none: drop --video-copy to re-encode"
                .into(),
        });
    }
    let t = packet.pts().map_or(0.0, |ts| ts as f64 * f64::from(tb));
    d.anchor.get_or_insert((t, pipeline.next_slot()));
    let capture = pace_slot(pipeline, pace, live);
    pipeline.push_video_packet(packet, capture)?;
    Ok(true)
}

/// The capture time of the next slot: now for live inputs; for files, waits until the slot is
/// due at real time.
fn pace_slot(pipeline: &Pipeline, pace: &mut Option<(Instant, i64)>, live: bool) -> u64 {
    let slot = pipeline.next_slot();
    let fps = i64::from(pipeline.cadence().fps);
    match (live, &*pace) {
        (true, _) => wall_us(),
        (false, None) => {
            *pace = Some((Instant::now(), slot));
            wall_us()
        }
        (false, Some((start, slot_start))) => {
            let due =
                *start + Duration::from_micros(((slot - slot_start) * 1_000_000 / fps) as u64);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            wall_us()
        }
    }
}

fn drain_decoder(
    pipeline: &mut Pipeline,
    d: &mut Decoding,
    pace: &mut Option<(Instant, i64)>,
    live: bool,
) -> Result<(), IngestError> {
    if d.copy {
        return Ok(());
    }
    if let Some((_, dec, _)) = &mut d.video {
        let _ = dec.send_eof();
        receive_video(pipeline, d, pace, live)?;
    }
    Ok(())
}

fn receive_video(
    pipeline: &mut Pipeline,
    d: &mut Decoding,
    pace: &mut Option<(Instant, i64)>,
    live: bool,
) -> Result<bool, IngestError> {
    let fps = pipeline.cadence().fps;
    let mut fed = false;
    let Some((_, dec, tb)) = &mut d.video else {
        return Ok(false);
    };
    let tb = *tb;
    let mut frame = frame::Video::empty();
    while dec.receive_frame(&mut frame).is_ok() {
        let t = frame
            .timestamp()
            .map_or(0.0, |ts| ts as f64 * f64::from(tb));
        let (t0, slot0) = *d.anchor.get_or_insert((t, pipeline.next_slot()));
        let target = slot0 + ((t - t0) * f64::from(fps)).round() as i64;
        let n = match copies(target, pipeline.next_slot(), fps) {
            Some(n) => n,
            None => {
                // A jump of over a second in the input's time stamps: start again from here.
                debug!(jump_s = t - t0, "input time stamps jumped; re-anchoring");
                d.anchor = Some((t, pipeline.next_slot()));
                1
            }
        };
        if n == 0 {
            pipeline.count_dropped(1);
            continue;
        }
        for _ in 0..n {
            let capture = pace_slot(pipeline, pace, live);
            pipeline.push_video(&frame, capture)?;
            fed = true;
        }
    }
    Ok(fed)
}

fn push_audio(
    pipeline: &mut Pipeline,
    anchor: Option<(f64, i64)>,
    frame: &frame::Audio,
    tb: Rational,
) -> Result<(), IngestError> {
    // Audio before the first video frame of a segment has no place on the timeline yet.
    let Some((t0, slot0)) = anchor else {
        return Ok(());
    };
    let fps = i64::from(pipeline.cadence().fps);
    let t = frame
        .timestamp()
        .map_or(0.0, |ts| ts as f64 * f64::from(tb));
    let expected = slot0 * i64::from(AUDIO_RATE) / fps + ((t - t0) * f64::from(AUDIO_RATE)) as i64;
    let gap = expected - pipeline.audio_position();
    if gap > 1024 {
        pipeline.push_silence(gap as usize);
    } else if gap < -4800 {
        // This audio belongs to time already covered: skip it.
        return Ok(());
    }
    pipeline.push_audio_frame(frame, wall_us())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_mapping() {
        assert_eq!(copies(10, 10, 30), Some(1));
        assert_eq!(copies(9, 10, 30), Some(0), "late: dropped");
        assert_eq!(copies(12, 10, 30), Some(3), "gap: repeated");
        assert_eq!(copies(10 + 31, 10, 30), None, "over a second: re-anchor");
    }

    #[test]
    fn sources_parse_with_clear_errors() {
        assert_eq!(Source::parse("pattern", false).unwrap(), Source::Pattern);
        assert!(matches!(
            Source::parse("srt://0.0.0.0:9000", false),
            Ok(Source::Live { .. })
        ));
        assert!(matches!(
            Source::parse("http://x", false),
            Err(IngestError::Url(_))
        ));
        let e = Source::parse("/no/such/file.mp4", false).unwrap_err();
        assert!(e.to_string().contains("/no/such/file.mp4"), "{e}");
        let (url, _) = listen_options("srt://127.0.0.1:9000").unwrap();
        assert_eq!(url, "srt://127.0.0.1:9000?mode=listener");
        let (_, opts) = listen_options("rtmp://127.0.0.1:1935/live/x").unwrap();
        assert_eq!(opts.get("listen"), Some("1"));
    }
}
