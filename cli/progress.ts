/**
 * Provisioning progress on stderr: on a terminal one live line (spinner,
 * phase, elapsed time) redrawn in place, with notes printed above it;
 * otherwise plain lines, one per phase change or note, so logs stay
 * readable, and a `still …` line after each {@link QUIET_MS} without one,
 * so a pipe or a CI log never sits silent while a VM boots.
 *
 * @module
 */
import { formatElapsed, type Style } from "./output.ts";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Plain mode: longest silence before a `still …` line. */
export const QUIET_MS = 5_000;

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
  /** Timer period: redraws (live, default 100 ms), silence checks (plain, default 1 s); 0: none. */
  tickMs?: number;
  /** Plain mode: silence before a `still …` line; default {@link QUIET_MS}. */
  quietMs?: number;
}

/** Shows a task's phase and elapsed time. */
export class Progress {
  readonly #o: ProgressOptions;
  readonly #now: () => number;
  readonly #started: number;
  #label = "";
  #detail = "";
  #frame = 0;
  #key = "";
  #timer: ReturnType<typeof setInterval> | undefined;
  #drawn = false;
  #stopped = false;
  /** Plain mode: when the last line was printed. */
  #printed: number;

  /** Starts the clock and the timer (live: redraws; plain: silence checks). */
  constructor(options: ProgressOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#started = this.#now();
    this.#printed = this.#started;
    const tickMs = options.tickMs ?? (options.live ? 100 : 1000);
    if (tickMs > 0) this.#timer = setInterval(() => this.tick(), tickMs);
  }

  /** Milliseconds since the start. */
  get elapsedMs(): number {
    return this.#now() - this.#started;
  }

  /**
   * Sets the phase. The live line shows it at once; plain mode prints a
   * line only when `key` (default: label and detail) changed, so a detail
   * that only gains precision (`VM is starting` → `VM is starting (accel
   * tcg)`) is not printed twice.
   */
  phase(label: string, detail = "", key = `${label}\n${detail}`): void {
    const changed = label !== this.#label || detail !== this.#detail;
    const keyChanged = key !== this.#key;
    this.#label = label;
    this.#detail = detail;
    this.#key = key;
    if (this.#o.live) {
      if (changed) this.#draw();
    } else if (keyChanged) {
      this.#print(this.#phaseText());
    }
  }

  /** Prints a line (above the live line). */
  note(text: string): void {
    this.#clear();
    if (this.#o.live) {
      this.#o.write(`${text}\n`);
      this.#draw();
    } else {
      this.#print(text);
    }
  }

  /**
   * What the timer does: live, redraw the line; plain, print `still
   * <phase>` when nothing was printed for the quiet period.
   */
  tick(): void {
    if (this.#stopped) return;
    if (this.#o.live) return this.#draw();
    if (!this.#label) return;
    if (this.#now() - this.#printed >= (this.#o.quietMs ?? QUIET_MS)) {
      this.#print(`still ${this.#phaseText()}`);
    }
  }

  /** Stops and prints a final line. */
  finish(text: string): void {
    this.stop();
    this.#o.write(`${text} ${this.#o.style.dim(`(${formatElapsed(this.elapsedMs)})`)}\n`);
  }

  /** Stops the timer and removes the live line. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#clear();
  }

  #phaseText(): string {
    return `${this.#label}${this.#detail ? ` (${this.#detail})` : ""}`;
  }

  /** Plain mode: one line with the elapsed time in front. */
  #print(text: string): void {
    this.#printed = this.#now();
    this.#o.write(`${this.#stamp()} ${text}\n`);
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
    if (!this.#o.live || this.#stopped) return;
    const s = this.#o.style;
    const frame = s.cyan(FRAMES[this.#frame++ % FRAMES.length]);
    const detail = this.#detail ? `  ${s.dim(this.#detail)}` : "";
    this.#o.write(
      `\r\x1b[2K${frame} ${this.#label} ${s.dim(formatElapsed(this.elapsedMs))}${detail}`,
    );
    this.#drawn = true;
  }
}
