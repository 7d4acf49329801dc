/**
 * A log file with a size cap, for a role that runs in the background
 * (`openshell gateway start` starts the gateway with `--log-file`): lines
 * are appended to FILE; when the next line would take it past the cap, FILE
 * becomes FILE.1 (replacing the previous one) and a new FILE is started.
 * The two files together never hold more than twice the cap, whatever a
 * client or a guest makes the gateway log.
 *
 * Writes are synchronous (a log line is never lost to a crash right after
 * it) and never throw: a full disk or a removed directory drops lines.
 *
 * @module
 */

/** Default cap of one file: 10 MiB. */
export const LOG_FILE_MAX_BYTES = 10 * 1024 * 1024;

/** Longest line written, in bytes; longer ones are cut with a marker. */
export const LOG_LINE_MAX_BYTES = 64 * 1024;

/** Options of {@link RotatingLogFile}. */
export interface RotatingLogFileOptions {
  /** The file (created 0600 when missing). */
  path: string;
  /** Largest size of one file in bytes; default {@link LOG_FILE_MAX_BYTES}. */
  maxBytes?: number;
}

const encoder = new TextEncoder();

/** An append-only log file rotated at a size cap. */
export class RotatingLogFile {
  readonly path: string;
  readonly maxBytes: number;
  #file: Deno.FsFile | undefined;
  #size = 0;

  /** Opens (or creates) the file; throws when it cannot. */
  constructor(options: RotatingLogFileOptions) {
    this.path = options.path;
    this.maxBytes = Math.max(1024, options.maxBytes ?? LOG_FILE_MAX_BYTES);
    this.#open();
  }

  #open(): void {
    this.#file = Deno.openSync(this.path, { append: true, create: true, mode: 0o600 });
    this.#size = this.#file.statSync().size;
  }

  #rotate(): void {
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = undefined;
    try {
      Deno.renameSync(this.path, `${this.path}.1`);
    } catch { /* gone: start afresh */ }
    this.#open();
  }

  /** Appends one line (a newline is added). */
  write(line: string): void {
    let bytes = encoder.encode(line + "\n");
    if (bytes.length > LOG_LINE_MAX_BYTES) {
      const cut = encoder.encode(` …[line cut at ${LOG_LINE_MAX_BYTES} bytes]\n`);
      const head = bytes.subarray(0, LOG_LINE_MAX_BYTES - cut.length);
      bytes = new Uint8Array(head.length + cut.length);
      bytes.set(head);
      bytes.set(cut, head.length);
    }
    try {
      if (!this.#file) this.#open();
      if (this.#size > 0 && this.#size + bytes.length > this.maxBytes) this.#rotate();
      let off = 0;
      while (off < bytes.length) off += this.#file!.writeSync(bytes.subarray(off));
      this.#size += bytes.length;
    } catch {
      // Disk full or file gone: drop the line; the next one tries again.
      try {
        this.#file?.close();
      } catch { /* closed */ }
      this.#file = undefined;
    }
  }

  /** Closes the file. */
  close(): void {
    try {
      this.#file?.close();
    } catch { /* closed */ }
    this.#file = undefined;
  }
}
