/**
 * One timer for the heartbeats of every supervisor session instead of one
 * `setInterval` each.
 *
 * At 10,000 idle sessions a timer per session cost the gateway about 3 KiB
 * of RSS per session and about 8 µs of CPU per firing in Deno 2.9 (one
 * timer per session against one shared timer, 10,000 timers: see
 * docs/benchmarks.md, "Idle supervisor sessions"). The wheel keeps the
 * sessions' heartbeats spread as their timers were: a session joins the
 * slot that comes round one period after it joined, and each tick runs one
 * slot, so a tick beats about `sessions × tick / period` sessions (about 33
 * of 10,000 at the defaults), never all of them at once.
 *
 * @module
 */

/** Resolution of the heartbeat wheel: each beat comes at most this much late. */
export const HEARTBEAT_TICK_MS = 50;

/** Starts calling `fn` every `ms`; returns the function that stops it. */
export type RepeatTimer = (fn: () => void, ms: number) => () => void;

/** Options of {@link HeartbeatWheel}. */
export interface HeartbeatWheelOptions {
  /** Time between two beats of one member (rounded up to whole ticks). */
  periodMs: number;
  /** Time between two ticks; default {@link HEARTBEAT_TICK_MS} (at most `periodMs`). */
  tickMs?: number;
  /** The repeating timer; default `setInterval` (tests drive ticks by hand). */
  every?: RepeatTimer;
}

const realTimer: RepeatTimer = (fn, ms) => {
  const id = setInterval(fn, ms);
  return () => clearInterval(id);
};

/**
 * Calls each member's beat once per period, all from one repeating timer
 * that runs only while the wheel has members.
 */
export class HeartbeatWheel {
  readonly #slots: Set<() => void>[];
  readonly #tickMs: number;
  readonly #every: RepeatTimer;
  /** The slot the next tick runs. */
  #cursor = 0;
  #size = 0;
  #stop: (() => void) | undefined;

  /** Creates an empty wheel (no timer runs yet). */
  constructor(options: HeartbeatWheelOptions) {
    const period = Math.max(1, options.periodMs);
    this.#tickMs = Math.min(Math.max(1, options.tickMs ?? HEARTBEAT_TICK_MS), period);
    this.#slots = Array.from({ length: Math.ceil(period / this.#tickMs) }, () => new Set());
    this.#every = options.every ?? realTimer;
  }

  /** Members now. */
  get size(): number {
    return this.#size;
  }

  /** The period as the wheel runs it: whole ticks, at least the one asked for. */
  get periodMs(): number {
    return this.#slots.length * this.#tickMs;
  }

  /** Whether the wheel's timer is running (only while it has members). */
  get running(): boolean {
    return this.#stop !== undefined;
  }

  /**
   * Calls `beat` once per period, the first time about one period from now,
   * until the returned function is called (calling it again does nothing).
   */
  add(beat: () => void): () => void {
    // The slot just behind the cursor comes round last: after a whole period.
    const slot = this.#slots[(this.#cursor + this.#slots.length - 1) % this.#slots.length];
    slot.add(beat);
    this.#size++;
    this.#stop ??= this.#every(() => this.tick(), this.#tickMs);
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      slot.delete(beat);
      if (--this.#size === 0) {
        this.#stop?.();
        this.#stop = undefined;
      }
    };
  }

  /**
   * Runs the members of the current slot and moves on to the next (the
   * timer calls this). A member removed by an earlier beat of the same tick
   * is skipped; a member added during a tick first beats a period later. A
   * beat that throws does not stop the others.
   */
  tick(): void {
    const slot = this.#slots[this.#cursor];
    this.#cursor = (this.#cursor + 1) % this.#slots.length;
    if (slot.size === 0) return;
    for (const beat of [...slot]) {
      if (!slot.has(beat)) continue;
      try {
        beat();
      } catch {
        // one member's failure is its own
      }
    }
  }
}
