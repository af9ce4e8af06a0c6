/**
 * Buffer policy: which arriving chunks to append, where playback must jump over a hole, and
 * what old media to drop. Pure functions over plain data; `playback.ts` applies them to MSE.
 *
 * Chunks of a track are appended in sequence order. Video chunks depend on the previous ones
 * of their group, so after a missing (or rejected) video chunk nothing more of that group is
 * appended: video resumes at the next group start. Audio chunks stand alone. A hole leaves a
 * gap in the buffered ranges, where a media element stops; {@link gapJump} tells where to go.
 */

/** One chunk as the buffer policy sees it. */
export interface ChunkInfo {
  readonly sequence: number;
  readonly groupStart: boolean;
  readonly video: boolean;
}

/** Per-track state of what was appended. */
export interface TrackCursor {
  /** The sequence expected next, once started. */
  readonly next: number | null;
  /** Video: waiting for a group start (at the start, or after a hole). */
  readonly needGroup: boolean;
}

/** A fresh cursor: video waits for a group start, audio takes the first chunk. */
export function newCursor(video: boolean): TrackCursor {
  return { next: null, needGroup: video };
}

/** Whether to append `chunk`, and the cursor after it. */
export function admit(
  cursor: TrackCursor,
  chunk: ChunkInfo,
): { readonly append: boolean; readonly cursor: TrackCursor } {
  if (cursor.next !== null && chunk.sequence < cursor.next) {
    // Older than what is already appended: a duplicate or a straggler.
    return { append: false, cursor };
  }
  const hole = cursor.next !== null && chunk.sequence > cursor.next;
  if (chunk.video && (cursor.needGroup || hole) && !chunk.groupStart) {
    return { append: false, cursor: { next: cursor.next, needGroup: true } };
  }
  return { append: true, cursor: { next: chunk.sequence + 1, needGroup: false } };
}

/** After a chunk of this sequence failed (rejected, or not decodable): skip past it. */
export function skip(cursor: TrackCursor, sequence: number, video: boolean): TrackCursor {
  const next = Math.max(cursor.next ?? 0, sequence + 1);
  return { next, needGroup: video ? true : cursor.needGroup };
}

/** A buffered time range, seconds. */
export interface Range {
  readonly start: number;
  readonly end: number;
}

/**
 * Where to jump when playback sits at (or within `slack` of) the end of a buffered range and a
 * later range exists; `null` when no jump is needed.
 */
export function gapJump(
  ranges: readonly Range[],
  currentTime: number,
  slack = 0.15,
): number | null {
  const inside = ranges.findIndex((r) => currentTime >= r.start - 1e-3 && currentTime < r.end);
  if (inside >= 0) {
    const r = ranges[inside];
    const next = ranges[inside + 1];
    if (r !== undefined && next !== undefined && r.end - currentTime <= slack) {
      return next.start;
    }
    return null;
  }
  // Outside every range: go to the first one that starts later.
  const later = ranges.find((r) => r.start > currentTime);
  return later === undefined ? null : later.start;
}

/** The range to remove from a buffer so that at most `keepS` seconds stay behind `currentTime`. */
export function evictable(ranges: readonly Range[], currentTime: number, keepS: number): Range | null {
  const first = ranges[0];
  const cut = currentTime - keepS;
  if (first === undefined || first.start >= cut) {
    return null;
  }
  return { start: first.start, end: cut };
}
