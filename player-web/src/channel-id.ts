/**
 * Channel ids: the 32-byte Ed25519 public key of a channel, written as 52 characters of
 * lowercase RFC 4648 base32 without padding (the same text form as the Rust core). Parsing
 * accepts either case and rejects non-zero padding bits, so each id has one text form.
 */

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
const TEXT_LENGTH = 52;

/** Why a text is not a channel id. */
export class ChannelIdError extends Error {
  override name = "ChannelIdError";
}

/** Parses the text form of a channel id into the 32 bytes of its public key. */
export function parseChannelId(text: string): Uint8Array {
  const s = text.trim().toLowerCase();
  if (s.length !== TEXT_LENGTH) {
    throw new ChannelIdError(`a channel id has ${TEXT_LENGTH} characters, this has ${s.length}`);
  }
  const out = new Uint8Array(32);
  let acc = 0;
  let bits = 0;
  let i = 0;
  for (const c of s) {
    const v = ALPHABET.indexOf(c);
    if (v < 0) {
      throw new ChannelIdError(`${JSON.stringify(c)} is not a base32 character (a-z, 2-7)`);
    }
    acc = ((acc << 5) | v) & 0x1fff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[i++] = (acc >> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) {
    throw new ChannelIdError("the last character is not possible in a channel id (mistyped?)");
  }
  return out;
}

/** Writes 32 key bytes in the text form of a channel id. */
export function formatChannelId(key: Uint8Array): string {
  if (key.length !== 32) {
    throw new ChannelIdError(`a channel key has 32 bytes, not ${key.length}`);
  }
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of key) {
    acc = ((acc << 8) | b) & 0xfff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(acc >> bits) & 31];
    }
  }
  if (bits > 0) {
    out += ALPHABET[(acc << (5 - bits)) & 31];
  }
  return out;
}
