/**
 * The connection to a gateway: WebTransport with the certificate hash the gateway's node
 * publishes, one signed message (manifest or chunk) per incoming unidirectional stream.
 * Nothing here is trusted: messages are handed on as bytes, bounded in size, to be decoded
 * and verified.
 */

import { MAX_CHUNK_LENGTH, MAX_MANIFEST_LENGTH } from "./wire";

/** What `/gateway.json` says. */
export interface GatewayInfo {
  readonly port: number;
  readonly sha256: string;
  readonly not_after_us: number | null;
  readonly sessions: number;
  readonly max_sessions: number;
}

/** The largest message a stream may carry. */
const MAX_MESSAGE = Math.max(MAX_CHUNK_LENGTH, MAX_MANIFEST_LENGTH);

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/** Asks the page's own server where its gateway is and which certificate it has. */
export async function fetchGatewayInfo(base: string): Promise<GatewayInfo> {
  const response = await fetch(new URL("/gateway.json", base), { cache: "no-store" });
  if (!response.ok) {
    throw new Error(`the node has no gateway (HTTP ${response.status})`);
  }
  return (await response.json()) as GatewayInfo;
}

/** Reads one stream to its end, refusing more than `limit` bytes. */
async function readAll(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array> {
  const reader = stream.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      break;
    }
    total += value.length;
    if (total > limit) {
      await reader.cancel();
      throw new Error(`a message of more than ${limit} bytes`);
    }
    parts.push(value);
  }
  if (parts.length === 1 && parts[0] !== undefined) {
    return parts[0];
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** An open connection to a gateway. */
export interface Connection {
  readonly transport: WebTransport;
  /** Resolves when the connection ends, with the reason. */
  readonly closed: Promise<string>;
}

/**
 * Connects to the gateway on `host` and calls `onMessage` with each message's bytes, in the
 * order the streams complete (chunks may overtake each other).
 */
export async function connect(
  host: string,
  info: GatewayInfo,
  onMessage: (bytes: Uint8Array) => void,
): Promise<Connection> {
  const url = `https://${host}:${info.port}/fjord`;
  const transport = new WebTransport(url, {
    serverCertificateHashes: [{ algorithm: "sha-256", value: hexBytes(info.sha256) as Uint8Array<ArrayBuffer> }],
  });
  await transport.ready;
  const pump = (async () => {
    const streams = transport.incomingUnidirectionalStreams.getReader();
    for (;;) {
      const { value, done } = await streams.read();
      if (done) {
        return;
      }
      readAll(value as ReadableStream<Uint8Array>, MAX_MESSAGE).then(onMessage, () => {
        // A broken or oversized stream: nothing to hand on.
      });
    }
  })();
  const closed = Promise.allSettled([transport.closed, pump]).then(([t]) =>
    t.status === "fulfilled" ? `closed: ${t.value.reason || "by the gateway"}` : `failed: ${String(t.reason)}`,
  );
  return { transport, closed };
}
