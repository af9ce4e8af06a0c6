/**
 * Decoder of Fjord's signed wire format (version 1), mirroring `fjord-core`'s `wire` module.
 *
 * Every message starts with "FJ", a version byte and a kind byte (1 manifest, 2 chunk) and ends
 * with a 64-byte Ed25519 signature over everything before it. Integers are big-endian. Decoding
 * checks structure and the same limits as the Rust core and throws a {@link WireError}; it never
 * reads past the input and never copies payloads (they are views into the input). Checking the
 * signature is a separate step (see `verify.ts`).
 *
 * 64-bit fields are `bigint` so that no value is rounded.
 */

/** Limits, equal to `fjord_core::wire::limits`. */
export const LIMITS = {
  maxChunkPayload: 4 * 1024 * 1024,
  maxNameLength: 256,
  maxCodecLength: 64,
  maxTracks: 8,
  maxInitSegment: 64 * 1024,
} as const;

export const CHUNK_HEADER_LENGTH = 78;
export const SIGNATURE_LENGTH = 64;
const MANIFEST_FIXED_LENGTH = 4 + 32 + 8 + 8 + 2 + 4 + 4 + 4 + 1 + SIGNATURE_LENGTH;
const TRACK_FIXED_LENGTH = 1 + 1 + 1 + 4 + 4 + 4;
export const MAX_CHUNK_LENGTH = CHUNK_HEADER_LENGTH + LIMITS.maxChunkPayload + SIGNATURE_LENGTH;
export const MAX_MANIFEST_LENGTH =
  MANIFEST_FIXED_LENGTH +
  LIMITS.maxNameLength +
  LIMITS.maxTracks * (TRACK_FIXED_LENGTH + LIMITS.maxCodecLength + LIMITS.maxInitSegment);

/** Chunk flag: the chunk starts a group (a player may join here). */
export const FLAG_GROUP_START = 0b01;
/** Chunk flag: the chunk decodes without earlier chunks. */
export const FLAG_INDEPENDENT = 0b10;

/** What went wrong while decoding. */
export type WireErrorKind =
  | "truncated"
  | "trailing"
  | "bad-magic"
  | "version"
  | "kind"
  | "too-large"
  | "field";

/** Bytes that are not a well-formed message. */
export class WireError extends Error {
  override name = "WireError";
  constructor(
    readonly kind: WireErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** A decoded chunk. Unauthenticated until its signature is checked. */
export interface Chunk {
  readonly channel: Uint8Array;
  readonly epoch: bigint;
  readonly track: number;
  readonly sequence: bigint;
  readonly flags: number;
  /** Media time stamp in the track's timescale. */
  readonly timestamp: bigint;
  /** Media duration in the track's timescale. */
  readonly duration: number;
  /** Wall-clock publication time, microseconds since the Unix epoch. */
  readonly publishedAtUs: bigint;
  /** The CMAF fragment: a view into the encoded bytes. */
  readonly payload: Uint8Array;
  /** The bytes the signature covers. */
  readonly signed: Uint8Array;
  readonly signature: Uint8Array;
}

/** One track of a channel. */
export interface Track {
  readonly id: number;
  readonly kind: "video" | "audio";
  /** Codec string as MSE and WebCodecs spell it. */
  readonly codec: string;
  readonly timescale: number;
  /** Nominal bit rate in bit/s. */
  readonly bitrate: number;
  readonly initSegment: Uint8Array;
}

/** A decoded manifest. Unauthenticated until its signature is checked. */
export interface Manifest {
  readonly channel: Uint8Array;
  readonly epoch: bigint;
  readonly name: string;
  readonly issuedAtUs: bigint;
  readonly chunkDurationUs: number;
  readonly groupDurationUs: number;
  readonly targetLatencyUs: number;
  readonly tracks: readonly Track[];
  readonly signed: Uint8Array;
  readonly signature: Uint8Array;
}

class Reader {
  private pos = 0;
  private readonly view: DataView;
  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get position(): number {
    return this.pos;
  }
  get remaining(): number {
    return this.bytes.length - this.pos;
  }
  private need(n: number, field: string): number {
    if (this.remaining < n) {
      throw new WireError("truncated", `truncated: the message ends inside ${field}`);
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }
  take(n: number, field: string): Uint8Array {
    const at = this.need(n, field);
    return this.bytes.subarray(at, at + n);
  }
  u8(field: string): number {
    return this.view.getUint8(this.need(1, field));
  }
  u16(field: string): number {
    return this.view.getUint16(this.need(2, field));
  }
  u32(field: string): number {
    return this.view.getUint32(this.need(4, field));
  }
  u64(field: string): bigint {
    return this.view.getBigUint64(this.need(8, field));
  }
}

function preamble(r: Reader, expected: 1 | 2): void {
  const magic = r.take(2, "magic");
  if (magic[0] !== 0x46 || magic[1] !== 0x4a) {
    throw new WireError("bad-magic", "not a Fjord message (bad magic)");
  }
  const version = r.u8("version");
  if (version !== 1) {
    throw new WireError("version", `unsupported format version ${version}`);
  }
  const kind = r.u8("kind");
  if (kind !== expected) {
    throw new WireError("kind", `expected message kind ${expected}, found ${kind}`);
  }
}

function tooLong(field: string, length: number, max: number): WireError {
  return new WireError("field", `${field} is ${length} bytes, more than the limit of ${max}`);
}

function finish(r: Reader, bytes: Uint8Array): { signed: Uint8Array; signature: Uint8Array } {
  const signedLength = r.position;
  const signature = r.take(SIGNATURE_LENGTH, "signature");
  if (r.remaining !== 0) {
    throw new WireError("trailing", `${r.remaining} unexpected bytes after the end of the message`);
  }
  return { signed: bytes.subarray(0, signedLength), signature };
}

/** Decodes an encoded chunk. Throws {@link WireError} when malformed. */
export function decodeChunk(bytes: Uint8Array): Chunk {
  const r = new Reader(bytes);
  preamble(r, 2);
  if (bytes.length > MAX_CHUNK_LENGTH) {
    throw new WireError("too-large", `chunk of ${bytes.length} bytes exceeds the limit`);
  }
  const channel = r.take(32, "channel");
  const epoch = r.u64("epoch");
  const track = r.u8("track");
  const sequence = r.u64("sequence");
  const flags = r.u8("flags");
  if ((flags & ~(FLAG_GROUP_START | FLAG_INDEPENDENT)) !== 0) {
    throw new WireError("field", `unknown chunk flag bits ${flags}`);
  }
  const timestamp = r.u64("timestamp");
  const duration = r.u32("duration");
  const publishedAtUs = r.u64("published_at");
  const payloadLength = r.u32("payload length");
  if (payloadLength > LIMITS.maxChunkPayload) {
    throw tooLong("payload", payloadLength, LIMITS.maxChunkPayload);
  }
  const payload = r.take(payloadLength, "payload");
  return {
    channel,
    epoch,
    track,
    sequence,
    flags,
    timestamp,
    duration,
    publishedAtUs,
    payload,
    ...finish(r, bytes),
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Decodes an encoded manifest and checks its rules. Throws {@link WireError} when malformed. */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const r = new Reader(bytes);
  preamble(r, 1);
  if (bytes.length > MAX_MANIFEST_LENGTH) {
    throw new WireError("too-large", `manifest of ${bytes.length} bytes exceeds the limit`);
  }
  const channel = r.take(32, "channel");
  const epoch = r.u64("epoch");
  const issuedAtUs = r.u64("issued_at");
  const nameLength = r.u16("name length");
  if (nameLength > LIMITS.maxNameLength) {
    throw tooLong("name", nameLength, LIMITS.maxNameLength);
  }
  let name: string;
  try {
    name = utf8.decode(r.take(nameLength, "name"));
  } catch (e) {
    if (e instanceof WireError) throw e;
    throw new WireError("field", "the channel name is not valid UTF-8");
  }
  const chunkDurationUs = r.u32("chunk duration");
  const groupDurationUs = r.u32("group duration");
  const targetLatencyUs = r.u32("target latency");
  const trackCount = r.u8("track count");
  if (trackCount > LIMITS.maxTracks) {
    throw new WireError("field", `${trackCount} tracks, more than the limit of ${LIMITS.maxTracks}`);
  }
  const tracks: Track[] = [];
  for (let i = 0; i < trackCount; i++) {
    tracks.push(decodeTrack(r));
  }
  const tail = finish(r, bytes);
  const manifest: Manifest = {
    channel,
    epoch,
    name,
    issuedAtUs,
    chunkDurationUs,
    groupDurationUs,
    targetLatencyUs,
    tracks,
    ...tail,
  };
  validateManifest(manifest);
  return manifest;
}

function decodeTrack(r: Reader): Track {
  const id = r.u8("track id");
  const kindByte = r.u8("track kind");
  if (kindByte !== 1 && kindByte !== 2) {
    throw new WireError("field", `unknown track kind ${kindByte}`);
  }
  const codecLength = r.u8("codec length");
  if (codecLength > LIMITS.maxCodecLength) {
    throw tooLong("codec", codecLength, LIMITS.maxCodecLength);
  }
  const codecBytes = r.take(codecLength, "codec");
  if (!codecBytes.every((b) => b >= 0x21 && b <= 0x7e)) {
    throw new WireError("field", "the codec string holds characters other than printable ASCII");
  }
  const codec = String.fromCharCode(...codecBytes);
  const timescale = r.u32("timescale");
  const bitrate = r.u32("bit rate");
  const initLength = r.u32("init segment length");
  if (initLength > LIMITS.maxInitSegment) {
    throw tooLong("init segment", initLength, LIMITS.maxInitSegment);
  }
  const initSegment = r.take(initLength, "init segment");
  return { id, kind: kindByte === 1 ? "video" : "audio", codec, timescale, bitrate, initSegment };
}

/** The rules of `ManifestContent::validate` in the Rust core. */
function validateManifest(m: Manifest): void {
  const fail = (message: string): never => {
    throw new WireError("field", message);
  };
  if (m.chunkDurationUs === 0) fail("chunk duration must not be zero");
  if (m.groupDurationUs === 0) fail("group duration must not be zero");
  if (m.targetLatencyUs === 0) fail("target latency must not be zero");
  if (m.groupDurationUs < m.chunkDurationUs) {
    fail("the group duration is shorter than the chunk duration");
  }
  if (m.tracks.length === 0) fail("a manifest needs at least one track");
  const seen = new Set<number>();
  for (const t of m.tracks) {
    if (seen.has(t.id)) fail(`track id ${t.id} appears twice`);
    seen.add(t.id);
    if (t.codec.length === 0) fail("codec must not be empty");
    if (t.timescale === 0) fail("timescale must not be zero");
    if (t.initSegment.length === 0) fail("init segment must not be empty");
  }
}
