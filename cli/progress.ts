/**
 * Provisioning progress on stderr: on a terminal one live line (spinner,
 * phase, elapsed time) redrawn in place, with notes printed above it;
 * otherwise plain lines, one per phase change or note, so logs stay
 * readable.
 *
 * @module
 */
import { formatElapsed, type Style } from "./output.ts";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** Writes text (stderr). */
  write: (text: string) => void;
  /** Redraw one line in place (a terminal) instead of printing lines. */
  live: boolean;
  /** Colours. */
  style: Style;
  /** Clock; default `Date.now`. */
  now?: () => number;
  /** Redraw period in live mode; default 100 ms. */
  tickMs?: number;
}

/** Shows a task's phase and elapsed time. */
export class Progress {
  readonly #o: ProgressOptions;
  readonly #now: () => number;
  readonly #started: number;
  #label = "";
  #detail = "";
  #frame = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #drawn = false;

  /** Starts the clock (and, live, the redraw timer). */
  constructor(options: ProgressOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#started = this.#now();
    if (options.live) {
      this.#timer = setInterval(() => this.#draw(), options.tickMs ?? 100);
    }
  }

  /** Milliseconds since the start. */
  get elapsedMs(): number {
    return this.#now() - this.#started;
  }

  /** Sets the phase; plain mode prints a line only when it changed. */
  phase(label: string, detail = ""): void {
    const changed = label !== this.#label || detail !== this.#detail;
    this.#label = label;
    this.#detail = detail;
    if (!changed) return;
    if (this.#o.live) this.#draw();
    else this.#o.write(`${this.#stamp()} ${label}${detail ? ` (${detail})` : ""}\n`);
  }

  /** Prints a line (above the live line). */
  note(text: string): void {
    this.#clear();
    this.#o.write(`${this.#o.live ? "" : `${this.#stamp()} `}${text}\n`);
    if (this.#o.live) this.#draw();
  }

  /** Stops and prints a final line. */
  finish(text: string): void {
    this.stop();
    this.#o.write(`${text} ${this.#o.style.dim(`(${formatElapsed(this.elapsedMs)})`)}\n`);
  }

  /** Stops redrawing and removes the live line. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#clear();
  }

  #stamp(): string {
    return this.#o.style.dim(`[${formatElapsed(this.elapsedMs).padStart(6)}]`);
  }

  #clear(): void {
    if (this.#o.live && this.#drawn) {
      this.#o.write("\r\x1b[2K");
      this.#drawn = false;
    }
  }

  #draw(): void {
    if (!this.#o.live || this.#timer === undefined) return;
    const s = this.#o.style;
    const frame = s.cyan(FRAMES[this.#frame++ % FRAMES.length]);
    const detail = this.#detail ? `  ${s.dim(this.#detail)}` : "";
    this.#o.write(
      `\r\x1b[2K${frame} ${this.#label} ${s.dim(formatElapsed(this.elapsedMs))}${detail}`,
    );
    this.#drawn = true;
  }
}
