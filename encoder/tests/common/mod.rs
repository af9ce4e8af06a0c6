//! Helpers shared by the encoder's integration tests: decode signed output back through
//! FFmpeg and check it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::Path;

use ffmpeg_next::{self as ffmpeg, format, media};
use fjord_core::wire::{Chunk, ChunkFlags, Manifest};

/// One decoded video frame: time stamp (in the stream's time base), key flag, and the
/// time code the test pattern burnt in (if any).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub pts: i64,
    pub key: bool,
    pub time_code: Option<u64>,
    pub width: u32,
}

/// Writes init + payloads of `chunks` (one track, in order) to a file and decodes it,
/// returning the video frames (or the number of audio samples for an audio track).
pub fn decode_track(dir: &Path, name: &str, init: &[u8], chunks: &[&Chunk]) -> (Vec<Decoded>, u64) {
    let path = dir.join(name);
    let mut bytes = init.to_vec();
    for c in chunks {
        bytes.extend_from_slice(&c.payload());
    }
    std::fs::write(&path, &bytes).unwrap();
    let mut ictx = format::input(&path).unwrap();
    let stream = ictx.streams().next().unwrap();
    let index = stream.index();
    let params = stream.parameters();
    let mut frames = Vec::new();
    let mut samples = 0u64;
    match params.medium() {
        media::Type::Video => {
            let mut dec = ffmpeg::codec::context::Context::from_parameters(params)
                .unwrap()
                .decoder()
                .video()
                .unwrap();
            let mut frame = ffmpeg::frame::Video::empty();
            let mut take = |dec: &mut ffmpeg::decoder::Video, frames: &mut Vec<Decoded>| {
                while dec.receive_frame(&mut frame).is_ok() {
                    let time_code = if frame.format() == format::Pixel::YUV420P {
                        fjord_encoder::pattern::read_time_code(
                            frame.data(0),
                            frame.stride(0),
                            frame.width() as usize,
                            frame.height() as usize,
                        )
                    } else {
                        None
                    };
                    frames.push(Decoded {
                        pts: frame.pts().unwrap_or(i64::MIN),
                        key: frame.is_key(),
                        time_code,
                        width: frame.width(),
                    });
                }
            };
            for (s, packet) in ictx.packets() {
                if s.index() == index {
                    dec.send_packet(&packet).unwrap();
                    take(&mut dec, &mut frames);
                }
            }
            dec.send_eof().unwrap();
            take(&mut dec, &mut frames);
        }
        media::Type::Audio => {
            let mut dec = ffmpeg::codec::context::Context::from_parameters(params)
                .unwrap()
                .decoder()
                .audio()
                .unwrap();
            let mut frame = ffmpeg::frame::Audio::empty();
            for (s, packet) in ictx.packets() {
                if s.index() == index {
                    dec.send_packet(&packet).unwrap();
                    while dec.receive_frame(&mut frame).is_ok() {
                        samples += frame.samples() as u64;
                    }
                }
            }
            dec.send_eof().unwrap();
            while dec.receive_frame(&mut frame).is_ok() {
                samples += frame.samples() as u64;
            }
        }
        other => panic!("unexpected medium {other:?}"),
    }
    (frames, samples)
}

/// Checks a recorded epoch: every chunk verifies, sequences are dense per track, video
/// decodes to `expect_frames` frames (when given) with continuous time stamps, each group
/// starts with a key frame, and decoding from every group start works. Returns the video
/// frames.
pub fn check_epoch(
    dir: &Path,
    manifest: &Manifest,
    chunks: &[Chunk],
    expect_frames: Option<usize>,
) -> Vec<Decoded> {
    let content = manifest.content();
    let video_track = &content.tracks[0];
    let audio_track = &content.tracks[1];
    for c in chunks {
        let again = fjord_core::wire::UnverifiedChunk::decode(c.encoded().clone()).unwrap();
        again
            .verify(manifest.channel())
            .expect("every chunk verifies");
        assert_eq!(c.meta().epoch, content.epoch);
    }
    let video: Vec<&Chunk> = chunks.iter().filter(|c| c.meta().track == 0).collect();
    let audio: Vec<&Chunk> = chunks.iter().filter(|c| c.meta().track == 1).collect();
    for (track, list) in [(0, &video), (1, &audio)] {
        for (i, c) in list.iter().enumerate() {
            assert_eq!(
                c.meta().sequence,
                i as u64,
                "track {track}: dense sequences"
            );
        }
    }
    assert!(!video.is_empty() && !audio.is_empty());
    assert!(
        video.len() - audio.len() <= 1,
        "audio keeps up: {} video, {} audio chunks",
        video.len(),
        audio.len()
    );

    let (frames, _) = decode_track(dir, "all.mp4", &video_track.init_segment, &video);
    if let Some(n) = expect_frames {
        assert_eq!(frames.len(), n, "every frame decodes");
    }
    // Time stamps: continuous, one frame apart.
    let step = frames[1].pts - frames[0].pts;
    assert!(step > 0);
    for w in frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, step, "continuous time stamps");
    }
    // Chunk headers agree with the media: time stamps continuous, durations as configured.
    let ts = video_track.timescale as u64;
    let chunk_ticks = u64::from(content.chunk_duration_us) * ts / 1_000_000;
    for w in video.windows(2) {
        let (a, b) = (w[0].meta(), w[1].meta());
        assert_eq!(a.timestamp + u64::from(a.duration), b.timestamp);
    }
    // Every chunk has the configured duration, except the last and one cut short by an input
    // loss, after which a new group starts.
    for w in video.windows(2) {
        let d = i64::from(w[0].meta().duration);
        let short_before_group =
            d < chunk_ticks as i64 && w[1].meta().flags.contains(ChunkFlags::GROUP_START);
        assert!(
            (d - chunk_ticks as i64).abs() <= 1 || short_before_group,
            "chunk {} duration {d} vs {chunk_ticks}",
            w[0].meta().sequence
        );
    }
    // Groups: start with a key frame; nothing else is a key frame.
    let frames_per_chunk = (chunk_ticks / step as u64) as usize;
    let mut index = 0;
    for c in &video {
        let n = (c.meta().duration as u64 / step as u64) as usize;
        let first = &frames[index];
        assert_eq!(
            first.key,
            c.meta().flags.contains(ChunkFlags::GROUP_START),
            "chunk {}: key frame exactly at group starts",
            c.meta().sequence
        );
        assert!(frames[index + 1..index + n].iter().all(|f| !f.key));
        index += n;
        assert!(n <= frames_per_chunk);
    }
    assert_eq!(index, frames.len());
    // Joining at any group start decodes: init + that chunk onwards.
    let starts: Vec<usize> = (0..video.len())
        .filter(|&i| video[i].meta().flags.contains(ChunkFlags::GROUP_START))
        .collect();
    assert!(starts.len() >= 2);
    for &s in &starts[1..] {
        let tail = &video[s..];
        let expected: u64 = tail
            .iter()
            .map(|c| c.meta().duration as u64 / step as u64)
            .sum();
        let (joined, _) = decode_track(dir, "join.mp4", &video_track.init_segment, tail);
        assert_eq!(
            joined.len() as u64,
            expected,
            "join at chunk {s} decodes every frame"
        );
        assert!(joined[0].key);
    }
    // Audio decodes, and covers about as much time as the video.
    let (_, samples) = decode_track(dir, "audio.mp4", &audio_track.init_segment, &audio);
    let video_secs = frames.len() as f64 * step as f64 / ts as f64;
    let audio_secs = samples as f64 / 48_000.0;
    assert!(
        (audio_secs - video_secs).abs() < 0.3,
        "audio {audio_secs:.3} s vs video {video_secs:.3} s"
    );
    frames
}
