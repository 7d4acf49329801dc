/**
 * Keeps client GOAWAY frames away from our HTTP/2 servers, and reads the
 * frame headers that tell which streams are open.
 *
 * Why: with Deno 2.9.6 a `node:http2` server (and so grpc-js's) can abort
 * the whole process inside nghttp2 (`find_stream_on_goaway_func: Assertion
 * 'stream->closed_next == NULL'`, exit 134, or a silent exit 139) when a
 * client sends GOAWAY after streaming (denoland/deno#36788). No JavaScript
 * handler can catch it, so any client could kill the server by closing its
 * channel politely. Every grpc-js server we run sits behind our own
 * forwarding listener (`core/h2_forward.ts`), which sees every byte a client
 * sends; this parser walks the HTTP/2 frame headers of the client→server
 * direction and removes GOAWAY frames (type 0x7), so a graceful close
 * reaches nghttp2 as a plain end of stream. Nothing else is changed: the
 * client closes its socket after its GOAWAY anyway.
 *
 * The same walk over both directions reports each frame's type, flags and
 * stream id, which is all {@link H2StreamTracker} needs to know whether a
 * connection has open streams (the listener's idle timeout and eviction).
 *
 * Pure and incremental: feed chunks as they arrive, write what comes back.
 *
 * @module
 */

/** The client connection preface every HTTP/2 connection starts with. */
export const H2_PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** HTTP/2 frame type of DATA. */
export const FRAME_DATA = 0x0;
/** HTTP/2 frame type of HEADERS. */
export const FRAME_HEADERS = 0x1;
/** HTTP/2 frame type of RST_STREAM. */
export const FRAME_RST_STREAM = 0x3;
/** HTTP/2 frame type of GOAWAY. */
export const FRAME_GOAWAY = 0x7;
/** The END_STREAM flag of DATA and HEADERS frames. */
export const FLAG_END_STREAM = 0x1;
const HEADER_BYTES = 9;

/** Called with each frame header as it passes (dropped GOAWAYs included). */
export type FrameListener = (type: number, flags: number, streamId: number) => void;

/** Options of {@link H2FrameScanner}. */
export interface H2FrameScannerOptions {
  /** The stream starts with the 24-byte client preface (client→server); default false. */
  preface?: boolean;
  /** Remove GOAWAY frames; default false. */
  dropGoaway?: boolean;
  onFrame?: FrameListener;
}

/** Walks the frame headers of one direction of an HTTP/2 connection. */
export class H2FrameScanner {
  #prefaceLeft: number;
  readonly #drop: boolean;
  readonly #onFrame?: FrameListener;
  readonly #header = new Uint8Array(HEADER_BYTES);
  #headerFill = 0;
  #payloadLeft = 0;
  #dropping = false;
  #dropped = 0;

  /** A scanner at the start of a connection. */
  constructor(options: H2FrameScannerOptions = {}) {
    this.#prefaceLeft = options.preface ? H2_PREFACE.length : 0;
    this.#drop = options.dropGoaway ?? false;
    this.#onFrame = options.onFrame;
  }

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
        this.#startFrame(chunk, i);
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
        this.#startFrame(this.#header, 0);
        if (!this.#dropping) out.push(this.#header.slice());
      }
    }
    if (out.length === 0 && passStart === 0) return chunk;
    flushRun(chunk.length);
    if (out.length === 1) return out[0];
    return concat(out);
  }

  #startFrame(h: Uint8Array, at: number): void {
    this.#payloadLeft = (h[at] << 16) | (h[at + 1] << 8) | h[at + 2];
    const type = h[at + 3];
    this.#dropping = this.#drop && type === FRAME_GOAWAY;
    if (this.#dropping) this.#dropped++;
    if (this.#onFrame) {
      const streamId = ((h[at + 5] & 0x7f) << 24 | (h[at + 6] << 16) | (h[at + 7] << 8) |
        h[at + 8]) >>> 0;
      this.#onFrame(type, h[at + 4], streamId);
    }
  }
}

/** Removes GOAWAY frames from a client→server HTTP/2 byte stream (preface first). */
export class GoawayFilter extends H2FrameScanner {
  /** A filter at the start of a client connection; `onFrame` sees every frame header. */
  constructor(onFrame?: FrameListener) {
    super({ preface: true, dropGoaway: true, onFrame });
  }
}

/** Most streams a tracker records per connection (a hostile client cannot grow it further). */
export const MAX_TRACKED_STREAMS = 4096;

/**
 * Counts the open streams of one HTTP/2 connection from its frame headers.
 * A stream opens with the client's HEADERS and ends with the server's
 * END_STREAM (gRPC: its trailers) or a RST_STREAM from either side.
 */
export class H2StreamTracker {
  readonly #open = new Set<number>();
  readonly #onChange?: (open: number) => void;

  /** `onChange` is called whenever the count of open streams changes. */
  constructor(onChange?: (open: number) => void) {
    this.#onChange = onChange;
  }

  /** Open streams now. */
  get open(): number {
    return this.#open.size;
  }

  /** Feed with the client→server frame headers. */
  readonly client: FrameListener = (type, _flags, streamId) => {
    if (streamId === 0) return;
    if (type === FRAME_HEADERS) {
      if (this.#open.has(streamId) || this.#open.size >= MAX_TRACKED_STREAMS) return;
      this.#open.add(streamId);
      this.#onChange?.(this.#open.size);
    } else if (type === FRAME_RST_STREAM) this.#close(streamId);
  };

  /** Feed with the server→client frame headers. */
  readonly server: FrameListener = (type, flags, streamId) => {
    if (streamId === 0) return;
    if (
      type === FRAME_RST_STREAM ||
      ((type === FRAME_HEADERS || type === FRAME_DATA) && (flags & FLAG_END_STREAM) !== 0)
    ) this.#close(streamId);
  };

  #close(streamId: number): void {
    if (this.#open.delete(streamId)) this.#onChange?.(this.#open.size);
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
