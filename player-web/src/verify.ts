/**
 * Signature checks with WebCrypto's Ed25519, against the channel id the viewer asked for (from
 * the page URL), never against the key a message names about itself.
 */

import { parseChannelId } from "./channel-id";
import type { Chunk, Manifest } from "./wire";

/** A channel's public key, imported once and reused for every check. */
export interface ChannelVerifier {
  readonly channel: Uint8Array;
  readonly key: CryptoKey;
}

/** Imports the channel's public key from its text id. */
export async function channelVerifier(channelId: string): Promise<ChannelVerifier> {
  const channel = parseChannelId(channelId);
  const key = await crypto.subtle.importKey(
    "raw",
    channel as Uint8Array<ArrayBuffer>,
    { name: "Ed25519" },
    false,
    ["verify"],
  );
  return { channel, key };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * True when the message belongs to the verifier's channel and its signature verifies. A
 * message of another channel is refused before any cryptography.
 */
export async function isAuthentic(
  verifier: ChannelVerifier,
  message: Chunk | Manifest,
): Promise<boolean> {
  if (!sameBytes(message.channel, verifier.channel)) {
    return false;
  }
  return crypto.subtle.verify(
    { name: "Ed25519" },
    verifier.key,
    message.signature as Uint8Array<ArrayBuffer>,
    message.signed as Uint8Array<ArrayBuffer>,
  );
}
