/**
 * Reads the machine-readable time code that Fjord's test pattern burns into the top of every
 * frame (see `encoder/src/pattern.rs`): 64 cells across the picture, a white start cell, a
 * black cell, 48 bits of capture time in milliseconds since the Unix epoch (white = 1), an
 * 8-bit checksum (the six bytes summed) and a white end cell. With it the page measures true
 * glass-to-glass latency: the capture time of the frame on screen against the clock.
 */

const CELLS = 64;
const BITS = 48;

/** Height of the code row for a picture of this height (as the encoder draws it). */
function codeHeight(height: number): number {
  return Math.max(Math.floor(height / 36), 4) & ~1;
}

/**
 * The capture time (ms) in a frame's pixels: `rgba` is one row of `width` RGBA pixels taken at
 * {@link timeCodeRow}. `null` if the row carries no valid code.
 */
export function readTimeCode(rgba: Uint8ClampedArray | Uint8Array, width: number): number | null {
  const cellW = Math.floor(width / CELLS);
  if (cellW === 0 || rgba.length < width * 4) {
    return null;
  }
  const cells: boolean[] = [];
  for (let i = 0; i < CELLS; i++) {
    // The middle half of each cell, away from edges that compression smears.
    const x0 = i * cellW + Math.floor(cellW / 4);
    const x1 = Math.max(i * cellW + Math.floor((3 * cellW) / 4), x0 + 1);
    let sum = 0;
    for (let x = x0; x < x1; x++) {
      const p = x * 4;
      sum += ((rgba[p] ?? 0) + (rgba[p + 1] ?? 0) + (rgba[p + 2] ?? 0)) / 3;
    }
    cells.push(sum / (x1 - x0) > 128);
  }
  if (!cells[0] || cells[1] || !cells[CELLS - 1]) {
    return null;
  }
  let ms = 0;
  for (let b = 0; b < BITS; b++) {
    ms = ms * 2 + (cells[2 + b] ? 1 : 0);
  }
  let sum = 0;
  for (let b = 0; b < 8; b++) {
    sum = (sum << 1) | (cells[2 + BITS + b] ? 1 : 0);
  }
  let check = 0;
  let rest = ms;
  for (let i = 0; i < 6; i++) {
    check = (check + (rest % 256)) % 256;
    rest = Math.floor(rest / 256);
  }
  return check === sum ? ms : null;
}

/** The pixel row to read, for a picture of this height. */
export function timeCodeRow(height: number): number {
  return Math.floor(codeHeight(height) / 2);
}
