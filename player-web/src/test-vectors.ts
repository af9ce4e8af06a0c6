/** Typed access to the golden vectors that the Rust core writes (`node/core/tests/vectors.rs`). */

import raw from "./wire-vectors.json";

export interface Vector {
  readonly name: string;
  readonly kind: "chunk" | "manifest";
  readonly expect: "ok" | "decode" | "verify";
  readonly bytes: Uint8Array;
  readonly fields?: Record<string, unknown>;
}

export function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export const channel: string = raw.channel;

export const vectors: readonly Vector[] = raw.vectors.map((v) => ({
  name: v.name,
  kind: v.kind as Vector["kind"],
  expect: v.expect as Vector["expect"],
  bytes: fromHex(v.hex),
  ...("fields" in v ? { fields: v.fields as Record<string, unknown> } : {}),
}));

export function vector(name: string): Vector {
  const v = vectors.find((x) => x.name === name);
  if (!v) throw new Error(`no vector ${name}`);
  return v;
}
