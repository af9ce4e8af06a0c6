import { describe, expect, it } from "vitest";
import { readTimeCode, timeCodeRow } from "./timecode";

/** The row of cells the encoder draws for a capture time (see encoder/src/pattern.rs). */
function cells(ms: number): boolean[] {
  const out = new Array<boolean>(64).fill(false);
  out[0] = true;
  for (let b = 0; b < 48; b++) {
    out[2 + b] = Math.floor(ms / 2 ** (47 - b)) % 2 === 1;
  }
  let check = 0;
  let rest = ms;
  for (let i = 0; i < 6; i++) {
    check = (check + (rest % 256)) % 256;
    rest = Math.floor(rest / 256);
  }
  for (let b = 0; b < 8; b++) {
    out[50 + b] = ((check >> (7 - b)) & 1) === 1;
  }
  out[63] = true;
  return out;
}

/** A row of RGBA pixels as a decoder would give it: white 235, black 16, some noise. */
function row(ms: number, width: number, noise = 0): Uint8ClampedArray {
  const c = cells(ms);
  const cellW = Math.floor(width / 64);
  const out = new Uint8ClampedArray(width * 4);
  for (let x = 0; x < width; x++) {
    const on = c[Math.min(63, Math.floor(x / cellW))] ?? false;
    const v = (on ? 235 : 16) + ((x * 37) % (2 * noise + 1)) - noise;
    out.set([v, v, v, 255], x * 4);
  }
  return out;
}

describe("time code", () => {
  it("reads what the encoder writes, at several sizes and times", () => {
    for (const width of [1280, 640, 320]) {
      for (const ms of [0, 1_763_790_000_123, 2 ** 47 - 1]) {
        expect(readTimeCode(row(ms, width, 20), width)).toBe(ms);
      }
    }
  });

  it("refuses a damaged or absent code", () => {
    const r = row(1_763_790_000_123, 640);
    // Flip a data cell: the checksum fails.
    for (let x = 10 * 10; x < 11 * 10; x++) {
      r.set([255 - (r[x * 4] ?? 0), 0, 0, 255], x * 4);
    }
    expect(readTimeCode(r, 640)).toBeNull();
    expect(readTimeCode(new Uint8ClampedArray(640 * 4), 640)).toBeNull();
    expect(readTimeCode(new Uint8ClampedArray(4), 1)).toBeNull();
  });

  it("reads the row the encoder draws", () => {
    expect(timeCodeRow(720)).toBe(10);
    expect(timeCodeRow(360)).toBe(5);
    expect(timeCodeRow(100)).toBe(2);
  });
});
