/**
 * A VM's serial console as the driver handles it: the guest (hostile, maybe
 * root) writes whatever it likes to ttyS0, which qemu hands the driver on a
 * pipe. Everything it writes goes to `console.log`, rotated at
 * {@link CONSOLE_LOG_MAX_BYTES} (one older file kept); lines are cut at
 * `MAX_LINE_BYTES` with a marker and cleaned of terminal controls before
 * they become `console` platform events.
 *
 * @module
 */
import { MAX_LINE_BYTES, stripControls } from "../core/text.ts";

/** Size at which `console.log` is renamed to `console.log.1` (replacing it) and restarted. */
export const CONSOLE_LOG_MAX_BYTES = 4 * 1024 * 1024;

/** Options of {@link RotatingLog}. */
export interface RotatingLogOptions {
  /** Rotate before a write would take the file past this; default {@link CONSOLE_LOG_MAX_BYTES}. */
  maxBytes?: number;
}

/**
 * An append-only file that never grows past `maxBytes` (plus one write):
 * when the next write would pass it, the file becomes `<path>.1` (an older
 * `.1` goes) and a new one starts. At most twice `maxBytes` on disk.
 * Writes are applied in call order.
 */
export class RotatingLog {
  readonly #path: string;
  readonly #max: number;
  #file?: Deno.FsFile;
  #size = 0;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  /** Opens nothing yet; the first write creates (or appends to) `path`. */
  constructor(path: string, options: RotatingLogOptions = {}) {
    this.#path = path;
    this.#max = options.maxBytes ?? CONSOLE_LOG_MAX_BYTES;
  }

  /** Bytes in the current file. */
  get size(): number {
    return this.#size;
  }

  /** Appends `bytes`; resolves once written. Errors (the directory went away) are swallowed. */
  write(bytes: Uint8Array): Promise<void> {
    const run = this.#queue.then(() => this.#write(bytes)).catch(() => {});
    this.#queue = run;
    return run;
  }

  async #write(bytes: Uint8Array): Promise<void> {
    if (this.#closed || bytes.length === 0) return;
    if (!this.#file) {
      this.#file = await Deno.open(this.#path, { append: true, create: true, mode: 0o600 });
      this.#size = (await this.#file.stat()).size;
    }
    if (this.#size > 0 && this.#size + bytes.length > this.#max) {
      this.#file.close();
      this.#file = undefined;
      await Deno.rename(this.#path, `${this.#path}.1`);
      this.#file = await Deno.open(this.#path, { append: true, create: true, mode: 0o600 });
      this.#size = 0;
    }
    let off = 0;
    while (off < bytes.length) off += await this.#file.write(bytes.subarray(off));
    this.#size += bytes.length;
  }

  /** Waits for pending writes, then closes the file. */
  async close(): Promise<void> {
    await this.#queue;
    this.#closed = true;
    this.#file?.close();
    this.#file = undefined;
  }
}

const NEWLINE = 0x0a;
const decoder = new TextDecoder();

/** Length of `bytes` without a trailing incomplete UTF-8 character. */
function completeLength(bytes: Uint8Array): number {
  let start = bytes.length - 1;
  while (start > 0 && (bytes[start] & 0xc0) === 0x80) start--; // continuation bytes
  if (start < 0) return 0;
  const lead = bytes[start];
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return bytes.length - start < need ? start : bytes.length;
}

/**
 * Splits a byte stream into printable lines: at most `maxLineBytes` kept
 * per line (the rest counted and reported as `…[truncated N bytes]`),
 * escape sequences and control characters removed, blank lines skipped.
 * Holds at most `maxLineBytes` however long a line grows.
 */
export class LineSplitter {
  readonly #max: number;
  #kept: Uint8Array[] = [];
  #keptBytes = 0;
  #dropped = 0;

  /** `maxLineBytes` defaults to `MAX_LINE_BYTES` (8 KiB). */
  constructor(maxLineBytes: number = MAX_LINE_BYTES) {
    this.#max = maxLineBytes;
  }

  /** Feeds bytes; returns the lines they completed. */
  push(chunk: Uint8Array): string[] {
    const lines: string[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, start);
      const end = nl < 0 ? chunk.length : nl;
      this.#keep(chunk.subarray(start, end));
      if (nl < 0) break;
      const line = this.#take();
      if (line !== undefined) lines.push(line);
      start = nl + 1;
    }
    return lines;
  }

  /** The last line when the stream ended without a newline. */
  flush(): string[] {
    const line = this.#take();
    return line === undefined ? [] : [line];
  }

  #keep(part: Uint8Array): void {
    const room = this.#max - this.#keptBytes;
    if (part.length <= room) {
      if (part.length > 0) this.#kept.push(part.slice());
      this.#keptBytes += part.length;
      return;
    }
    if (room > 0) {
      this.#kept.push(part.slice(0, room));
      this.#keptBytes += room;
    }
    this.#dropped += part.length - Math.max(0, room);
  }

  #take(): string | undefined {
    const all = new Uint8Array(this.#keptBytes);
    let off = 0;
    for (const p of this.#kept) {
      all.set(p, off);
      off += p.length;
    }
    let dropped = this.#dropped;
    this.#kept = [];
    this.#keptBytes = 0;
    this.#dropped = 0;
    let bytes: Uint8Array = all;
    if (dropped > 0) {
      // the cap may have cut a character: its first bytes count as dropped too
      const whole = completeLength(all);
      dropped += all.length - whole;
      bytes = all.subarray(0, whole);
    }
    const text = stripControls(decoder.decode(bytes)).trimEnd();
    if (dropped > 0) return `${text}…[truncated ${dropped} bytes]`;
    return text.trim() === "" ? undefined : text;
  }
}
