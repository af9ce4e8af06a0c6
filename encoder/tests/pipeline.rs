//! The pipeline on the test pattern, decoded back through FFmpeg.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_core::wire::ChannelKey;
use fjord_encoder::cadence::Cadence;
use fjord_encoder::pattern::{Pattern, tone};
use fjord_encoder::pipeline::{OutputConfig, Pipeline};
use fjord_encoder::publish::Collector;

fn config(w: u32, h: u32) -> OutputConfig {
    OutputConfig {
        name: "test".into(),
        width: w,
        height: h,
        video_bitrate: 800_000,
        preset: "ultrafast".into(),
        cadence: Cadence::new(30, Duration::from_millis(200), Duration::from_millis(1000)).unwrap(),
        audio_bitrate: 96_000,
        target_latency_us: 3_000_000,
        cbr: false,
    }
}

fn init() {
    ffmpeg_next::init().unwrap();
    ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
}

fn feed(p: &mut Pipeline, pattern: &Pattern, frames: std::ops::Range<u64>, t0: u64) {
    for i in frames {
        let t = t0 + i * 1_000_000 / 30;
        p.push_picture(&pattern.render(i, t, 30), t).unwrap();
        let mut l = vec![0.0; 1600];
        let mut r = vec![0.0; 1600];
        tone(i * 1600, 48_000, &mut l, &mut r);
        p.push_audio(&l, &r, t).unwrap();
    }
}

#[test]
fn an_input_loss_cuts_short_and_starts_a_new_group_with_continuous_time() {
    init();
    let out = Arc::new(Mutex::new(Collector::default()));
    let key = ChannelKey::from_seed(&[8; 32]);
    let mut p = Pipeline::new(key, &config(320, 180), Box::new(out.clone())).unwrap();
    let pattern = Pattern::new(320, 180, "test");
    let t0 = 1_763_790_000_000_000u64;
    feed(&mut p, &pattern, 0..40, t0);
    p.interrupt().unwrap();
    feed(&mut p, &pattern, 40..95, t0 + 5_000_000);
    let stats = p.finish().unwrap();
    assert_eq!((stats.frames, stats.interruptions), (95, 1));
    let out = out.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::check_epoch(dir.path(), &out.manifests[0], &out.chunks, Some(95));
    // Frames 36..40 form a short chunk; frame 40 opens a group.
    let video: Vec<_> = out.chunks.iter().filter(|c| c.meta().track == 0).collect();
    assert_eq!(video[6].meta().duration, 4 * 3000);
    assert!(
        video[7]
            .meta()
            .flags
            .contains(fjord_core::wire::ChunkFlags::GROUP_START)
    );
}

#[test]
fn pattern_chunks_decode_back_exactly() {
    init();
    let out = Arc::new(Mutex::new(Collector::default()));
    let key = ChannelKey::from_seed(&[7; 32]);
    let mut p = Pipeline::new(key, &config(320, 180), Box::new(out.clone())).unwrap();
    let pattern = Pattern::new(320, 180, "test");
    let t0 = 1_763_790_000_000_000u64;
    let frames = 100; // 3 groups and a partial chunk
    for i in 0..frames {
        let t = t0 + i * 1_000_000 / 30;
        p.push_picture(&pattern.render(i, t, 30), t).unwrap();
        let mut l = vec![0.0; 1600];
        let mut r = vec![0.0; 1600];
        tone(i * 1600, 48_000, &mut l, &mut r);
        p.push_audio(&l, &r, t).unwrap();
    }
    let stats = p.finish().unwrap();
    assert_eq!(stats.frames, frames);
    let out = out.lock().unwrap();
    assert_eq!(out.manifests.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let decoded = common::check_epoch(
        dir.path(),
        &out.manifests[0],
        &out.chunks,
        Some(frames as usize),
    );
    // The burnt-in time code survives encoding: every frame carries its capture time.
    for (i, f) in decoded.iter().enumerate() {
        let t = t0 + i as u64 * 1_000_000 / 30;
        assert_eq!(f.time_code, Some(t / 1000), "frame {i}");
    }
}
