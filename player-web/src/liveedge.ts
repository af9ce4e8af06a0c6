/**
 * Live-edge control: how fast to play so that the picture stays close to the newest media the
 * page has, without stalling. A pure function of the playback state, called a few times a
 * second.
 *
 * The "edge" is the end of what is buffered (the newest chunk appended). Playing at the edge
 * would stall at every chunk boundary, so the player aims a little behind it
 * ({@link LiveEdgePolicy.targetLagS}); further behind it speeds up gently (a rate change of a
 * few percent is not noticeable), much further behind it jumps, and too close it slows down.
 */

/** Tunables of the controller. */
export interface LiveEdgePolicy {
  /** Lag behind the buffered end to aim at, seconds. */
  readonly targetLagS: number;
  /** Lag beyond which the player jumps instead of catching up, seconds. */
  readonly jumpLagS: number;
  /** Fastest catch-up rate. */
  readonly maxRate: number;
  /** Slowest rate, when the buffer runs low. */
  readonly minRate: number;
  /** Lag deviation (s) that earns the full rate change. */
  readonly rateSpanS: number;
}

/** The defaults: 0.3 s behind the edge, a jump beyond 2 s. */
export const DEFAULT_POLICY: LiveEdgePolicy = {
  targetLagS: 0.3,
  jumpLagS: 2.0,
  maxRate: 1.08,
  minRate: 0.95,
  rateSpanS: 0.6,
};

/** What to do now. */
export type LiveEdgeAction =
  | { readonly kind: "wait" }
  | { readonly kind: "rate"; readonly rate: number }
  | { readonly kind: "seek"; readonly to: number };

/**
 * Decides the playback rate (or a jump) from the current time and the buffered end.
 * `bufferedEnd` is `null` while nothing is buffered.
 */
export function liveEdge(
  currentTime: number,
  bufferedEnd: number | null,
  policy: LiveEdgePolicy = DEFAULT_POLICY,
): LiveEdgeAction {
  if (bufferedEnd === null) {
    return { kind: "wait" };
  }
  const lag = bufferedEnd - currentTime;
  if (lag > policy.jumpLagS || lag < 0) {
    return { kind: "seek", to: Math.max(0, bufferedEnd - policy.targetLagS) };
  }
  const deviation = lag - policy.targetLagS;
  const share = Math.max(-1, Math.min(1, deviation / policy.rateSpanS));
  const rate =
    share >= 0 ? 1 + share * (policy.maxRate - 1) : 1 + share * (1 - policy.minRate);
  // Round so that tiny wobbles do not reset the media pipeline's rate every tick.
  return { kind: "rate", rate: Math.round(rate * 100) / 100 };
}
