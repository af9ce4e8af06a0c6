import { describe, expect, it } from "vitest";
import { ChannelIdError, formatChannelId, parseChannelId } from "./channel-id";
import { fromHex } from "./test-vectors";

// RFC 8032 test 1 public key; its text form is checked on the Rust side too (identity.rs).
const RFC_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC_ID = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena";

describe("channel ids", () => {
  it("match the Rust core's text form", () => {
    expect(formatChannelId(fromHex(RFC_KEY))).toBe(RFC_ID);
    expect(parseChannelId(RFC_ID)).toEqual(fromHex(RFC_KEY));
  });

  it("round-trip every byte value and accept upper case", () => {
    for (let b = 0; b < 256; b++) {
      const key = new Uint8Array(32).map((_, i) => (b * 7 + i * 13) & 0xff);
      const text = formatChannelId(key);
      expect(text).toHaveLength(52);
      expect(parseChannelId(text)).toEqual(key);
      expect(parseChannelId(text.toUpperCase())).toEqual(key);
    }
  });

  it("reject wrong lengths, characters and padding", () => {
    expect(() => parseChannelId(RFC_ID.slice(1))).toThrow(ChannelIdError);
    expect(() => parseChannelId(RFC_ID.replace("2", "1"))).toThrow(/not a base32 character/);
    // 'a' -> 'b' in the last place sets one of the four padding bits.
    expect(() => parseChannelId(RFC_ID.slice(0, 51) + "b")).toThrow(/not possible/);
  });
});
