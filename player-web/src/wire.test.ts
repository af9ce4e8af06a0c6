import { describe, expect, it } from "vitest";
import { type Chunk, type Manifest, WireError, decodeChunk, decodeManifest } from "./wire";
import { toHex, vector, vectors } from "./test-vectors";

function decode(kind: "chunk" | "manifest", bytes: Uint8Array): Chunk | Manifest {
  return kind === "chunk" ? decodeChunk(bytes) : decodeManifest(bytes);
}

describe("wire decoding against the Rust core's vectors", () => {
  for (const v of vectors) {
    it(`${v.name}: ${v.expect === "decode" ? "fails to decode" : "decodes"}`, () => {
      if (v.expect === "decode") {
        expect(() => decode(v.kind, v.bytes)).toThrow(WireError);
      } else {
        expect(() => decode(v.kind, v.bytes)).not.toThrow();
      }
    });
  }

  it("reads every chunk field exactly, u64 included", () => {
    const v = vector("chunk");
    const c = decodeChunk(v.bytes);
    const f = v.fields!;
    expect(c.epoch).toBe(BigInt(f.epoch as string));
    expect(c.track).toBe(f.track);
    expect(c.sequence).toBe(BigInt(f.sequence as string));
    expect(c.sequence).toBe(9007199254740993n);
    expect(c.flags).toBe(f.flags);
    expect(c.timestamp).toBe(BigInt(f.timestamp as string));
    expect(c.duration).toBe(f.duration);
    expect(c.publishedAtUs).toBe(BigInt(f.publishedAtUs as string));
    expect(toHex(c.payload)).toBe(f.payloadHex);
    expect(c.signed.length + c.signature.length).toBe(v.bytes.length);
  });

  it("reads every manifest field exactly", () => {
    const v = vector("manifest");
    const m = decodeManifest(v.bytes);
    const f = v.fields!;
    expect(m.epoch).toBe(BigInt(f.epoch as string));
    expect(m.name).toBe(f.name);
    expect(m.issuedAtUs).toBe(BigInt(f.issuedAtUs as string));
    expect(m.chunkDurationUs).toBe(f.chunkDurationUs);
    expect(m.groupDurationUs).toBe(f.groupDurationUs);
    expect(m.targetLatencyUs).toBe(f.targetLatencyUs);
    const tracks = f.tracks as { id: number; kind: string; codec: string; initHex: string }[];
    expect(m.tracks.map((t) => [t.id, t.kind, t.codec, toHex(t.initSegment)])).toEqual(
      tracks.map((t) => [t.id, t.kind, t.codec, t.initHex]),
    );
  });
});

describe("untrusted input", () => {
  it("fails every truncation with a WireError", () => {
    for (const name of ["chunk", "manifest"]) {
      const v = vector(name);
      for (let len = 0; len < v.bytes.length; len++) {
        expect(() => decode(v.kind, v.bytes.subarray(0, len))).toThrow(WireError);
      }
    }
  });

  it("refuses a payload length over the limit before reading it", () => {
    const bytes = vector("chunk").bytes.slice(0, 78);
    new DataView(bytes.buffer).setUint32(74, 4 * 1024 * 1024 + 1);
    expect(() => decodeChunk(bytes)).toThrow(/more than the limit/);
  });

  it("only ever throws WireError on random mutations", () => {
    // A fixed-seed generator, so a failure reproduces.
    let state = 0x2545f491;
    const next = (): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return state >>> 0;
    };
    for (const name of ["chunk", "manifest"]) {
      const base = vector(name);
      for (let round = 0; round < 2000; round++) {
        const bytes = base.bytes.slice();
        const edits = 1 + (next() % 4);
        for (let e = 0; e < edits; e++) {
          bytes[next() % bytes.length] = next() & 0xff;
        }
        try {
          decode(base.kind, bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
        }
      }
    }
  });
});
