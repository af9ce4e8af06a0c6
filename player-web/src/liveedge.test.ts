import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY, liveEdge } from "./liveedge";

describe("live-edge control", () => {
  it("waits for media", () => {
    expect(liveEdge(0, null)).toEqual({ kind: "wait" });
  });

  it("plays at normal speed at the target lag", () => {
    expect(liveEdge(10, 10 + DEFAULT_POLICY.targetLagS)).toEqual({ kind: "rate", rate: 1 });
  });

  it("speeds up gently behind, slows down close to the edge, within bounds", () => {
    const behind = liveEdge(10, 10.6);
    const far = liveEdge(10, 11.9);
    const close = liveEdge(10, 10.05);
    expect(behind.kind === "rate" && behind.rate > 1 && behind.rate <= DEFAULT_POLICY.maxRate).toBe(true);
    expect(far).toEqual({ kind: "rate", rate: DEFAULT_POLICY.maxRate });
    expect(close.kind === "rate" && close.rate < 1 && close.rate >= DEFAULT_POLICY.minRate).toBe(true);
  });

  it("jumps when far behind or past the buffered end", () => {
    expect(liveEdge(10, 12.5)).toEqual({ kind: "seek", to: 12.2 });
    expect(liveEdge(13, 12.5)).toEqual({ kind: "seek", to: 12.2 });
  });
});
