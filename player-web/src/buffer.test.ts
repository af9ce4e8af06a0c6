import { describe, expect, it } from "vitest";
import { admit, evictable, gapJump, newCursor, skip, type TrackCursor } from "./buffer";

const v = (sequence: number, groupStart = sequence % 5 === 0) => ({ sequence, groupStart, video: true });
const a = (sequence: number) => ({ sequence, groupStart: sequence % 5 === 0, video: false });

function run(cursor: TrackCursor, chunks: ReturnType<typeof v>[]): number[] {
  const appended: number[] = [];
  for (const c of chunks) {
    const r = admit(cursor, c);
    cursor = r.cursor;
    if (r.append) {
      appended.push(c.sequence);
    }
  }
  return appended;
}

describe("buffer policy", () => {
  it("video starts at a group start and resumes at the next one after a hole", () => {
    expect(run(newCursor(true), [v(3), v(4), v(5), v(6), v(8), v(9), v(10), v(11)])).toEqual([5, 6, 10, 11]);
  });

  it("audio starts anywhere and goes on over holes", () => {
    expect(run(newCursor(false), [a(3), a(4), a(6), a(7)])).toEqual([3, 4, 6, 7]);
  });

  it("duplicates and stragglers are not appended", () => {
    expect(run(newCursor(true), [v(5), v(6), v(6), v(4), v(7)])).toEqual([5, 6, 7]);
  });

  it("a rejected video chunk makes video wait for the next group", () => {
    let c = admit(newCursor(true), v(5)).cursor;
    c = skip(c, 6, true);
    expect(run(c, [v(7), v(8), v(9), v(10)])).toEqual([10]);
    const audio = skip(admit(newCursor(false), a(5)).cursor, 6, false);
    expect(run(audio, [a(7)])).toEqual([7]);
  });

  it("jumps over holes in the buffered ranges", () => {
    const ranges = [
      { start: 0, end: 4 },
      { start: 5, end: 9 },
    ];
    expect(gapJump(ranges, 2)).toBeNull();
    expect(gapJump(ranges, 3.9)).toBe(5);
    expect(gapJump(ranges, 4.5)).toBe(5);
    expect(gapJump(ranges, 8.95)).toBeNull();
    expect(gapJump([], 1)).toBeNull();
  });

  it("evicts what is older than the back buffer", () => {
    expect(evictable([{ start: 0, end: 30 }], 25, 10)).toEqual({ start: 0, end: 15 });
    expect(evictable([{ start: 20, end: 30 }], 25, 10)).toBeNull();
    expect(evictable([], 25, 10)).toBeNull();
  });
});
