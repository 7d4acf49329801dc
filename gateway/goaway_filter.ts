/**
 * Keeps client GOAWAY frames away from the gateway's HTTP/2 stack.
 *
 * Why: with Deno 2.9.6 a `node:http2` server (and so grpc-js's) can abort
 * the whole process inside nghttp2 (`find_stream_on_goaway_func: Assertion
 * 'stream->closed_next == NULL'`, exit 134, or a silent exit 139) when a
 * client sends GOAWAY after streaming (denoland/deno#36788). No JavaScript
 * handler can catch it, so any client could kill the gateway by closing its
 * channel politely. The gateway's connection plumbing sees every byte a
 * client sends; this parser walks the HTTP/2 frame headers of the
 * client→server direction and removes GOAWAY frames (type 0x7), so a
 * graceful close reaches nghttp2 as a plain end of stream. Nothing else is
 * changed: the client closes its socket after its GOAWAY anyway.
 *
 * Pure and incremental: feed chunks as they arrive, write what comes back.
 *
 * @module
 */

/** The client connection preface every HTTP/2 connection starts with. */
export const H2_PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** HTTP/2 frame type of GOAWAY. */
export const FRAME_GOAWAY = 0x7;
const HEADER_BYTES = 9;

/** Removes GOAWAY frames from a client→server HTTP/2 byte stream. */
export class GoawayFilter {
  #prefaceLeft = H2_PREFACE.length;
  readonly #header = new Uint8Array(HEADER_BYTES);
  #headerFill = 0;
  #payloadLeft = 0;
  #dropping = false;
  #dropped = 0;

  /** How many GOAWAY frames were removed so far. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Takes the next chunk and returns the bytes to forward. When the chunk
   * needs no change the same chunk is returned (no copy); a partial frame
   * header at the end of a chunk is held back until it is complete.
   */
  push(chunk: Uint8Array): Uint8Array {
    const out: Uint8Array[] = [];
    let passStart = 0; // start of the current run of bytes forwarded as they are
    let i = 0;
    const flushRun = (end: number) => {
      if (end > passStart) out.push(chunk.subarray(passStart, end));
    };
    while (i < chunk.length) {
      if (this.#prefaceLeft > 0) {
        const n = Math.min(this.#prefaceLeft, chunk.length - i);
        this.#prefaceLeft -= n;
        i += n;
        continue;
      }
      if (this.#payloadLeft > 0) {
        const n = Math.min(this.#payloadLeft, chunk.length - i);
        if (this.#dropping) {
          flushRun(i);
          passStart = i + n;
        }
        this.#payloadLeft -= n;
        i += n;
        continue;
      }
      // A frame header starts (or continues) here.
      if (this.#headerFill === 0 && chunk.length - i >= HEADER_BYTES) {
        // Fast path: the whole header is inside this chunk.
        const length = (chunk[i] << 16) | (chunk[i + 1] << 8) | chunk[i + 2];
        this.#startFrame(length, chunk[i + 3]);
        if (this.#dropping) {
          flushRun(i);
          passStart = i + HEADER_BYTES;
        }
        i += HEADER_BYTES;
        continue;
      }
      // Slow path: collect the header across chunks; it is held back.
      flushRun(i);
      const n = Math.min(HEADER_BYTES - this.#headerFill, chunk.length - i);
      this.#header.set(chunk.subarray(i, i + n), this.#headerFill);
      this.#headerFill += n;
      i += n;
      passStart = i;
      if (this.#headerFill === HEADER_BYTES) {
        this.#headerFill = 0;
        const h = this.#header;
        this.#startFrame((h[0] << 16) | (h[1] << 8) | h[2], h[3]);
        if (!this.#dropping) out.push(h.slice());
      }
    }
    if (out.length === 0 && passStart === 0) return chunk;
    flushRun(chunk.length);
    if (out.length === 1) return out[0];
    return concat(out);
  }

  #startFrame(length: number, type: number): void {
    this.#payloadLeft = length;
    this.#dropping = type === FRAME_GOAWAY;
    if (this.#dropping) this.#dropped++;
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Whether `bytes` (the first bytes of a connection) start like the HTTP/2 preface. */
export function looksLikeH2(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, H2_PREFACE.length);
  if (n === 0) return false;
  for (let i = 0; i < n; i++) if (bytes[i] !== H2_PREFACE[i]) return false;
  return true;
}
