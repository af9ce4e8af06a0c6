/**
 * The page: reads the channel id from its URL (`?channel=<id>`), asks its own server for the
 * gateway, connects, verifies every message against that channel id, plays, reconnects on its
 * own and shows what it is doing. Everything it measures is also on `window.__fjord` for
 * tests and for the curious.
 */

import { ChannelIdError } from "./channel-id";
import { Playback } from "./playback";
import { readTimeCode, timeCodeRow } from "./timecode";
import { connect, fetchGatewayInfo } from "./transport";
import { channelVerifier, isAuthentic, type ChannelVerifier } from "./verify";
import { decodeChunk, decodeManifest, WireError } from "./wire";

/** What the page measured, as exposed on `window.__fjord`. */
export interface PlayerStats {
  state: string;
  channel: string;
  received: number;
  rejected: number;
  appended: number;
  reconnects: number;
  latencyMs: number | null;
  /** Glass-to-glass latency read from the test pattern's burnt-in time code, when present. */
  glassMs: number | null;
  glassSamples: number[];
  bufferS: number;
  currentTime: number;
  decodedFrames: number;
  droppedFrames: number;
  error: string | null;
}

declare global {
  interface Window {
    __fjord: PlayerStats;
  }
}

const stats: PlayerStats = {
  state: "starting",
  channel: "",
  received: 0,
  rejected: 0,
  appended: 0,
  reconnects: 0,
  latencyMs: null,
  glassMs: null,
  glassSamples: [],
  bufferS: 0,
  currentTime: 0,
  decodedFrames: 0,
  droppedFrames: 0,
  error: null,
};
window.__fjord = stats;

const MANIFEST_KIND = 1;
const CHUNK_KIND = 2;
const MAX_GLASS_SAMPLES = 600;

function element<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) {
    throw new Error(`the page lacks #${id}`);
  }
  return e as T;
}

function show(): void {
  const fmt = (v: number | null, unit: string) => (v === null ? "–" : `${v.toFixed(0)} ${unit}`);
  element("stats").textContent = [
    `state      ${stats.state}`,
    `latency    ${fmt(stats.latencyMs, "ms")}${stats.glassMs === null ? "" : `  (glass-to-glass ${stats.glassMs.toFixed(0)} ms)`}`,
    `buffer     ${stats.bufferS.toFixed(2)} s`,
    `chunks     ${stats.received} received, ${stats.rejected} rejected`,
    `frames     ${stats.decodedFrames} decoded, ${stats.droppedFrames} dropped`,
    stats.error === null ? "" : `error      ${stats.error}`,
  ]
    .filter((l) => l !== "")
    .join("\n");
}

async function handle(bytes: Uint8Array, verifier: ChannelVerifier, playback: Playback): Promise<void> {
  const kind = bytes.length > 3 ? bytes[3] : undefined;
  try {
    if (kind === MANIFEST_KIND) {
      const manifest = decodeManifest(bytes);
      if (!(await isAuthentic(verifier, manifest))) {
        stats.rejected++;
        return;
      }
      await playback.setManifest(manifest);
      element("title").textContent = manifest.name;
    } else if (kind === CHUNK_KIND) {
      stats.received++;
      const chunk = decodeChunk(bytes);
      if (!(await isAuthentic(verifier, chunk))) {
        stats.rejected++;
        // Its header is not to be trusted, but is all we have to know what is now missing.
        playback.rejected(chunk.track, Number(chunk.sequence));
        return;
      }
      if (playback.push(chunk)) {
        stats.appended++;
      }
    } else {
      stats.rejected++;
    }
  } catch (e) {
    stats.rejected++;
    if (!(e instanceof WireError)) {
      stats.error = String(e);
    }
  }
}

/** Reads the burnt-in time code of the frame being presented, if the stream has one. */
function watchTimeCode(video: HTMLVideoElement): void {
  if (!("requestVideoFrameCallback" in video)) {
    return;
  }
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const onFrame = (_now: number, meta: VideoFrameCallbackMetadata) => {
    if (ctx !== null && video.videoWidth > 0) {
      const row = timeCodeRow(video.videoHeight);
      canvas.width = video.videoWidth;
      canvas.height = row + 1;
      ctx.drawImage(video, 0, 0, video.videoWidth, row + 1, 0, 0, video.videoWidth, row + 1);
      const pixels = ctx.getImageData(0, row, video.videoWidth, 1).data;
      const captured = readTimeCode(pixels, video.videoWidth);
      if (captured !== null) {
        // When this frame reaches the screen, on the wall clock.
        const shownAt = performance.timeOrigin + meta.expectedDisplayTime;
        stats.glassMs = shownAt - captured;
        stats.glassSamples.push(stats.glassMs);
        if (stats.glassSamples.length > MAX_GLASS_SAMPLES) {
          stats.glassSamples.shift();
        }
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function run(): Promise<void> {
  const video = element<HTMLVideoElement>("video");
  const params = new URLSearchParams(location.search);
  const channel = params.get("channel") ?? "";
  stats.channel = channel;
  let verifier: ChannelVerifier;
  try {
    verifier = await channelVerifier(channel);
  } catch (e) {
    stats.state = "no channel";
    stats.error =
      e instanceof ChannelIdError ? `the page URL needs ?channel=<channel id>: ${e.message}` : String(e);
    show();
    return;
  }
  const playback = new Playback(video);
  watchTimeCode(video);
  setInterval(() => {
    playback.tick();
    const q = video.getVideoPlaybackQuality();
    stats.decodedFrames = q.totalVideoFrames;
    stats.droppedFrames = q.droppedVideoFrames;
    stats.bufferS = playback.bufferAhead();
    stats.currentTime = video.currentTime;
    stats.latencyMs = playback.latencyMs(Date.now());
    stats.error = playback.lastError ?? stats.error;
    show();
  }, 250);
  const unmute = element<HTMLButtonElement>("unmute");
  unmute.addEventListener("click", () => {
    video.muted = false;
    unmute.hidden = true;
  });
  let delay = 500;
  for (;;) {
    try {
      stats.state = "connecting";
      const info = await fetchGatewayInfo(location.href);
      if (info.sessions >= info.max_sessions) {
        throw new Error(`the gateway is full (${info.max_sessions} viewers); trying again`);
      }
      const conn = await connect(location.hostname, info, (bytes) => void handle(bytes, verifier, playback)).catch(
        async (e: unknown) => {
          // The gateway refuses sessions beyond its limit (HTTP 503): say so rather than fail.
          const now = await fetchGatewayInfo(location.href).catch(() => info);
          throw now.sessions >= now.max_sessions
            ? new Error(`the gateway is full (${now.max_sessions} viewers); trying again`)
            : e;
        },
      );
      stats.state = "connected";
      delay = 500;
      const why = await conn.closed;
      stats.state = `disconnected (${why})`;
    } catch (e) {
      stats.state = "disconnected";
      stats.error = String(e);
    }
    show();
    // Reconnect on our own, backing off to 5 s.
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
    stats.reconnects++;
  }
}

void run();
