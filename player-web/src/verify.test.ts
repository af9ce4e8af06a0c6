import { describe, expect, it } from "vitest";
import { channelVerifier, isAuthentic } from "./verify";
import { decodeChunk, decodeManifest } from "./wire";
import { channel, vectors } from "./test-vectors";

describe("WebCrypto Ed25519 verification against the Rust core's vectors", () => {
  for (const v of vectors.filter((x) => x.expect !== "decode")) {
    it(`${v.name}: ${v.expect === "ok" ? "authentic" : "rejected"}`, async () => {
      const verifier = await channelVerifier(channel);
      const message = v.kind === "chunk" ? decodeChunk(v.bytes) : decodeManifest(v.bytes);
      expect(await isAuthentic(verifier, message)).toBe(v.expect === "ok");
    });
  }

  it("rejects every single-bit change of a valid chunk", async () => {
    const verifier = await channelVerifier(channel);
    const good = vectors.find((x) => x.name === "chunk")!.bytes;
    let accepted = 0;
    for (let i = 0; i < good.length; i++) {
      const bytes = good.slice();
      bytes[i]! ^= 1 << (i % 8);
      try {
        if (await isAuthentic(verifier, decodeChunk(bytes))) accepted++;
      } catch {
        // A decode error is a rejection too.
      }
    }
    expect(accepted).toBe(0);
  });
});
