// End-to-end: the encoder's test pattern -> its origin -> relay node 1 -> relay node 2 (the
// gateway) -> Debian's Chromium, headless, driven by playwright-core. Asserts that the video
// plays at least 10 s with currentTime advancing, that frames decode with under 5% dropped,
// that latency stays under 1.5 s, and that a tampered chunk (the gateway corrupts one in
// TAMPER_EVERY on purpose) is rejected while playback goes on. Saves a screenshot.
//
// Usage: node e2e/e2e.mjs  (after `cargo build -p fjord-encoder -p fjord-node` and
// `npm run build`; `make test-e2e` does all three). FJORD_BIN_DIR names the folder of the binaries (default:
// $CARGO_TARGET_DIR/debug, or ~/.cache/fjord/target/debug); E2E_OUT the output folder;
// E2E_TAMPER how many chunks the gateway sends per tampered one (41); E2E_TRACE=1 prints the
// player's currentTime / rejected count at every sample.

import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir, homedir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "..");
const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/fjord/target");
const bin = process.env.FJORD_BIN_DIR ?? join(target, "debug");
const out = process.env.E2E_OUT ?? join(here, "out");
const TAMPER_EVERY = Number(process.env.E2E_TAMPER ?? 41);
// As a benchmark: FJORD_E2E_SIZE=1280x720 FJORD_E2E_BITRATE=2500k FJORD_E2E_SECONDS=30.
const SIZE = process.env.FJORD_E2E_SIZE ?? "640x360";
const BITRATE = process.env.FJORD_E2E_BITRATE ?? "800k";
const PLAY_S = Number(process.env.FJORD_E2E_SECONDS ?? 12);

const children = [];
const work = mkdtempSync(join(tmpdir(), "fjord-e2e-"));

function fail(message) {
  console.error(`e2e: FAILED: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

/** Starts a process; resolves with the first value `pick` finds in its stdout lines. */
function start(name, cmd, args, picks) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  children.push(child);
  child.stderr.on("data", (d) => process.stderr.write(`[${name}] ${d}`));
  const found = {};
  return new Promise((resolvePick, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} printed no ${Object.keys(picks).join(", ")} in 60 s`)), 60_000);
    child.on("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      for (const [key, prefix] of Object.entries(picks)) {
        if (found[key] === undefined && line.startsWith(prefix)) {
          found[key] = line.slice(prefix.length).trim();
        }
      }
      if (Object.keys(picks).every((k) => found[k] !== undefined)) {
        clearTimeout(timer);
        resolvePick(found);
      }
    });
  });
}

function percentile(values, q) {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.round((v.length - 1) * q)];
}

async function until(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  mkdirSync(out, { recursive: true });
  const enc = join(bin, "fjord-encoder");
  const node = join(bin, "fjord-node");
  const key = join(work, "channel.key");
  const keygen = spawnSync(enc, ["keygen", "--out", key], { encoding: "utf8" });
  if (keygen.status !== 0) fail(`keygen: ${keygen.stderr}`);
  const loop = "/ip4/127.0.0.1/udp/0/quic-v1";
  const origin = await start("encoder", enc, [
    "run", "--key", key, "--size", SIZE, "--preset", "ultrafast", "--video-bitrate", BITRATE,
    "--listen", loop, "--no-mdns", "--http", "127.0.0.1:0",
  ], { channel: "channel: ", addr: "origin: " });
  const relay1 = await start("relay1", node, [
    "watch", origin.channel, "--bootstrap", origin.addr, "--static", "--listen", loop,
    "--http", "127.0.0.1:0", "--status-interval", "0",
  ], { addr: "listening: " });
  const relay2 = await start("relay2", node, [
    "watch", origin.channel, "--bootstrap", relay1.addr, "--static", "--listen", loop,
    "--http", "127.0.0.1:0", "--status-interval", "0", "--gateway", "127.0.0.1:0",
    "--player", join(web, "dist"), "--test-tamper-every", String(TAMPER_EVERY),
  ], { page: "page: ", status: "status: " });
  console.log(`e2e: page ${relay2.page}`);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
    page.on("console", (m) => {
      if (m.type() === "error") console.error(`[page] ${m.text()}`);
    });
    await page.goto(relay2.page);
    const stats = () => page.evaluate(() => window.__fjord);
    await until("playback to start", 45_000, async () => {
      const s = await stats();
      return s.currentTime > 0.5 && s.decodedFrames > 0 ? s : null;
    });
    const first = await stats();
    const samples = [];
    const started = Date.now();
    let rejectedAt = null;
    let afterReject = null;
    while (Date.now() - started < PLAY_S * 1000) {
      await new Promise((r) => setTimeout(r, 500));
      const s = await stats();
      samples.push(s);
      if (rejectedAt === null && s.rejected > 0) rejectedAt = s.currentTime;
      if (rejectedAt !== null) afterReject = s.currentTime;
    }
    // Wait (bounded) for a tampered chunk if none came yet.
    if (rejectedAt === null) {
      const s = await until("a tampered chunk to be rejected", 20_000, async () => {
        const s = await stats();
        return s.rejected > 0 ? s : null;
      });
      rejectedAt = s.currentTime;
    }
    await until("playback to go on after the rejection", 10_000, async () => {
      const s = await stats();
      afterReject = s.currentTime;
      return s.currentTime > rejectedAt + 2 ? s : null;
    });
    const last = await stats();
    await page.screenshot({ path: join(out, "player.png") });
    const played = last.currentTime - first.currentTime;
    const latency = samples.map((s) => s.latencyMs).filter((v) => v !== null);
    const glass = last.glassSamples;
    const dropped = last.droppedFrames / Math.max(1, last.decodedFrames);
    console.log(
      `e2e: played ${played.toFixed(1)} s in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
        `frames ${last.decodedFrames} decoded, ${last.droppedFrames} dropped (${(dropped * 100).toFixed(2)}%); ` +
        `chunks ${last.received} received, ${last.rejected} rejected; reconnects ${last.reconnects}`,
    );
    console.log(
      `e2e: latency (overlay, publish clock to display) p50 ${percentile(latency, 0.5).toFixed(0)} ms, ` +
        `p95 ${percentile(latency, 0.95).toFixed(0)} ms; glass-to-glass (burnt-in clock to presentation) ` +
        `p50 ${percentile(glass, 0.5).toFixed(0)} ms, p95 ${percentile(glass, 0.95).toFixed(0)} ms over ${glass.length} frames`,
    );
    const shown = (list) => list.map((s) => `${s.currentTime.toFixed(2)}/${s.rejected}`).join(" ");
    if (process.env.E2E_TRACE) console.log(`e2e: trace ${shown(samples)}`);
    console.log(`e2e: screenshot ${join(out, "player.png")}`);
    if (played < 10) fail(`played only ${played.toFixed(1)} s`);
    // currentTime advances all along: by more than 1 s in every 2 s window. A rejected video
    // chunk is the exception: what follows it in its group cannot be decoded, so playback waits
    // at the hole for the next group (the encoder's default is 1 s groups of 200 ms chunks)
    // while it arrives, then jumps. A rejected group start thus freezes the picture for about a
    // group, plus the delivery delay of the next group's first chunk minus the buffer ahead.
    // Near a rejection every 3 s window must still advance by more than 1.5 s: a freeze longer
    // than 1.5 s fails.
    const around = (i) => shown(samples.slice(Math.max(0, i - 8), i + 3));
    for (let i = 4; i < samples.length; i++) {
      const moved = samples[i].currentTime - samples[i - 4].currentTime;
      const rejectedNearby = samples[i].rejected > samples[Math.max(0, i - 8)].rejected;
      if (!rejectedNearby && !(moved > 1)) {
        fail(`currentTime advanced only ${moved.toFixed(2)} s in 2 s (samples ${i - 4}..${i}; currentTime/rejected ${around(i)})`);
      }
    }
    for (let i = 6; i < samples.length; i++) {
      const moved = samples[i].currentTime - samples[i - 6].currentTime;
      if (!(moved > 1.5)) {
        fail(`currentTime advanced only ${moved.toFixed(2)} s in 3 s (samples ${i - 6}..${i}; currentTime/rejected ${around(i)})`);
      }
    }
    if (last.decodedFrames <= 0) fail("no frame decoded");
    if (dropped >= 0.05) fail(`dropped ${(dropped * 100).toFixed(1)}% of frames`);
    if (glass.length < 100) fail(`only ${glass.length} frames carried a readable time code`);
    if (percentile(glass, 0.5) >= 1500) fail(`glass-to-glass latency p50 ${percentile(glass, 0.5)} ms`);
    if (percentile(latency, 0.5) >= 1500) fail(`latency p50 ${percentile(latency, 0.5)} ms`);
    if (last.rejected < 1) fail("no tampered chunk was rejected");
    if (afterReject <= rejectedAt) fail("playback stopped after the rejection");
    if (last.error !== null && last.error !== undefined) console.log(`e2e: note: the page reported ${last.error}`);
    console.log("e2e: ok");
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (e) {
  if (process.exitCode !== 1) {
    console.error(`e2e: FAILED: ${e.stack ?? e}`);
    process.exitCode = 1;
  }
} finally {
  for (const c of children) c.kill("SIGINT");
  rmSync(work, { recursive: true, force: true });
}
