/**
 * Playback through Media Source Extensions: one SourceBuffer per track, fed with the
 * manifest's init segments and then the verified chunks' CMAF fragments.
 *
 * MSE rather than WebCodecs: the encoder already writes strict CMAF, which MSE takes as it is,
 * and the browser then does decoding, audio/video sync, frame pacing and dropping, and audio
 * output; with WebCodecs the page would have to rebuild all of that (and a jitter buffer) in
 * script. MSE's buffer is also where the live-edge policy acts (`liveedge.ts`, `buffer.ts`).
 */

import { admit, evictable, gapJump, newCursor, skip, type Range, type TrackCursor } from "./buffer";
import { liveEdge } from "./liveedge";
import { FLAG_GROUP_START, type Chunk, type Manifest } from "./wire";

/** Seconds of media kept behind the playhead. */
const BACK_BUFFER_S = 10;
/** Chunks remembered for the latency estimate. */
const TIMING_HISTORY = 256;

interface TrackState {
  readonly id: number;
  readonly video: boolean;
  readonly timescale: number;
  readonly buffer: SourceBuffer;
  readonly queue: Uint8Array[];
  cursor: TrackCursor;
}

/** When the media of a video chunk was captured: its media range and publication time. */
interface Timing {
  readonly start: number;
  readonly end: number;
  readonly publishedMs: number;
}

/** Feeds a video element from a channel. */
export class Playback {
  private media: MediaSource | null = null;
  private tracks: TrackState[] = [];
  private epoch: bigint | null = null;
  private timings: Timing[] = [];
  private started = false;
  /** Errors from the media pipeline, for the overlay. */
  lastError: string | null = null;

  constructor(private readonly video: HTMLVideoElement) {}

  /** The channel's manifest: (re)creates the media pipeline for a new epoch. */
  async setManifest(manifest: Manifest): Promise<void> {
    if (this.epoch === manifest.epoch) {
      return;
    }
    this.epoch = manifest.epoch;
    this.started = false;
    this.timings = [];
    const media = new MediaSource();
    this.media = media;
    const opened = new Promise<void>((resolve) => media.addEventListener("sourceopen", () => resolve(), { once: true }));
    this.video.src = URL.createObjectURL(media);
    await opened;
    this.tracks = manifest.tracks.map((t) => {
      const type = `${t.kind}/mp4; codecs="${t.codec}"`;
      if (!MediaSource.isTypeSupported(type)) {
        throw new Error(`this browser cannot play ${type}`);
      }
      const buffer = media.addSourceBuffer(type);
      const track: TrackState = {
        id: t.id,
        video: t.kind === "video",
        timescale: t.timescale,
        buffer,
        queue: [new Uint8Array(t.initSegment)],
        cursor: newCursor(t.kind === "video"),
      };
      buffer.addEventListener("updateend", () => this.pump(track));
      buffer.addEventListener("error", () => {
        this.lastError = `media error on the ${t.kind} track`;
      });
      this.pump(track);
      return track;
    });
  }

  /** A verified chunk. Returns whether it was appended. */
  push(chunk: Chunk): boolean {
    if (chunk.epoch !== this.epoch) {
      return false;
    }
    const track = this.tracks.find((t) => t.id === chunk.track);
    if (track === undefined) {
      return false;
    }
    const sequence = Number(chunk.sequence);
    const { append, cursor } = admit(track.cursor, {
      sequence,
      groupStart: (chunk.flags & FLAG_GROUP_START) !== 0,
      video: track.video,
    });
    track.cursor = cursor;
    if (!append) {
      return false;
    }
    if (track.video) {
      const start = Number(chunk.timestamp) / track.timescale;
      this.timings.push({
        start,
        end: start + chunk.duration / track.timescale,
        publishedMs: Number(chunk.publishedAtUs) / 1000,
      });
      if (this.timings.length > TIMING_HISTORY) {
        this.timings.shift();
      }
    }
    // Copy: the payload is a view into a larger buffer, and MSE takes ownership of nothing.
    track.queue.push(new Uint8Array(chunk.payload));
    this.pump(track);
    return true;
  }

  /** A chunk of this track and sequence was rejected: what depends on it is not appended. */
  rejected(trackId: number, sequence: number): void {
    const track = this.tracks.find((t) => t.id === trackId);
    if (track !== undefined) {
      track.cursor = skip(track.cursor, sequence, track.video);
    }
  }

  private pump(track: TrackState): void {
    if (track.buffer.updating || this.media?.readyState !== "open") {
      return;
    }
    const next = track.queue.shift();
    if (next === undefined) {
      return;
    }
    try {
      track.buffer.appendBuffer(next as Uint8Array<ArrayBuffer>);
    } catch (e) {
      // QuotaExceeded and the like: drop this piece, the next group recovers.
      this.lastError = String(e);
      track.cursor = { next: track.cursor.next, needGroup: track.video };
    }
  }

  /** The buffered ranges playback can use (all tracks). */
  ranges(): Range[] {
    const out: Range[] = [];
    const b = this.video.buffered;
    for (let i = 0; i < b.length; i++) {
      out.push({ start: b.start(i), end: b.end(i) });
    }
    return out;
  }

  /** Live-edge control, hole jumping and eviction; call a few times a second. */
  tick(): void {
    const ranges = this.ranges();
    const last = ranges[ranges.length - 1];
    if (last === undefined) {
      return;
    }
    if (!this.started) {
      this.started = true;
      this.video.currentTime = Math.max(last.start, last.end - 0.3);
      void this.video.play().catch((e: unknown) => {
        this.lastError = `cannot start playback: ${String(e)}`;
      });
      return;
    }
    const jump = gapJump(ranges, this.video.currentTime);
    if (jump !== null) {
      this.video.currentTime = jump;
    }
    const action = liveEdge(this.video.currentTime, last.end);
    if (action.kind === "seek") {
      this.video.currentTime = action.to;
    } else if (action.kind === "rate" && this.video.playbackRate !== action.rate) {
      this.video.playbackRate = action.rate;
    }
    for (const t of this.tracks) {
      const b = t.buffer.buffered;
      const r: Range[] = [];
      for (let i = 0; i < b.length; i++) {
        r.push({ start: b.start(i), end: b.end(i) });
      }
      const old = evictable(r, this.video.currentTime, BACK_BUFFER_S);
      if (old !== null && !t.buffer.updating && t.queue.length === 0) {
        t.buffer.remove(old.start, old.end);
      }
    }
  }

  /** Seconds buffered ahead of the playhead. */
  bufferAhead(): number {
    const t = this.video.currentTime;
    const r = this.ranges().find((x) => t >= x.start && t <= x.end);
    return r === undefined ? 0 : r.end - t;
  }

  /**
   * Estimated latency of the frame on screen: now against when it was captured, taking the
   * capture of a chunk's last frame to be its publication (the encoder signs within a few ms).
   */
  latencyMs(nowMs: number): number | null {
    const t = this.video.currentTime;
    const timing = this.timings.find((x) => t >= x.start && t < x.end);
    if (timing === undefined) {
      return null;
    }
    const captured = timing.publishedMs - (timing.end - t) * 1000;
    return nowMs - captured;
  }
}
