/**
 * Token buckets, and the per-sandbox log rate limit built from two of them
 * (lines and bytes): a guest that floods its console loses lines instead of
 * costing the gateway CPU, memory and every watcher's bandwidth, and the log
 * says how many were lost.
 *
 * @module
 */

/** Sustained log lines per second per sandbox. */
export const LOG_LINES_PER_SEC = 200;
/** Lines a sandbox may log at once before the rate applies (a boot, a burst). */
export const LOG_LINE_BURST = 2_000;
/** Sustained log bytes per second per sandbox. */
export const LOG_BYTES_PER_SEC = 256 * 1024;
/** Bytes a sandbox may log at once. */
export const LOG_BYTE_BURST = 2 * 1024 * 1024;

/** A bucket of `burst` tokens refilled at `ratePerSec`. */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;

  /** Starts full. `now` is a millisecond clock (default `Date.now`). */
  constructor(ratePerSec: number, burst: number, now: () => number = Date.now) {
    this.#rate = ratePerSec;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#last = now();
  }

  /** Tokens available now. */
  available(): number {
    const t = this.#now();
    if (t > this.#last) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((t - this.#last) / 1000) * this.#rate);
    }
    this.#last = Math.max(this.#last, t);
    return this.#tokens;
  }

  /** Takes `n` tokens if there are that many; false (nothing taken) otherwise. */
  take(n = 1): boolean {
    if (this.available() < n) return false;
    this.#tokens -= n;
    return true;
  }
}

/** Options of {@link LogRateLimiter}; every field has the `LOG_*` default. */
export interface LogRateOptions {
  linesPerSec?: number;
  lineBurst?: number;
  bytesPerSec?: number;
  byteBurst?: number;
  /** Millisecond clock; default `Date.now`. */
  now?: () => number;
}

/** What {@link LogRateLimiter.admit} decided about one line. */
export interface Admission {
  /** Keep the line. */
  admit: boolean;
  /**
   * With `admit`: lines dropped since the last admitted one; the caller logs
   * one "N lines dropped" marker before this line when it is not 0.
   */
  dropped: number;
}

/**
 * Lines and bytes per second for one source. Once it starts dropping it
 * resumes only after a second's worth of both budgets has come back, so a
 * steady flood yields about one "dropped" marker per second, not one per
 * admitted line.
 */
export class LogRateLimiter {
  readonly #lines: TokenBucket;
  readonly #bytes: TokenBucket;
  readonly #resumeLines: number;
  readonly #resumeBytes: number;
  readonly #linesPerSec: number;
  readonly #bytesPerSec: number;
  #dropped = 0;

  /** Creates a limiter with a full budget. */
  constructor(options: LogRateOptions = {}) {
    const now = options.now ?? Date.now;
    const linesPerSec = options.linesPerSec ?? LOG_LINES_PER_SEC;
    const lineBurst = options.lineBurst ?? LOG_LINE_BURST;
    const bytesPerSec = options.bytesPerSec ?? LOG_BYTES_PER_SEC;
    const byteBurst = options.byteBurst ?? LOG_BYTE_BURST;
    this.#lines = new TokenBucket(linesPerSec, lineBurst, now);
    this.#bytes = new TokenBucket(bytesPerSec, byteBurst, now);
    this.#resumeLines = Math.min(linesPerSec, lineBurst);
    this.#resumeBytes = Math.min(bytesPerSec, byteBurst);
    this.#linesPerSec = linesPerSec;
    this.#bytesPerSec = bytesPerSec;
  }

  /** The marker text for `n` dropped lines, e.g. `12 console lines dropped: more than …`. */
  droppedMessage(n: number, what = "log lines"): string {
    return `${n} ${what} dropped: more than ${this.#linesPerSec} lines or ${
      Math.round(this.#bytesPerSec / 1024)
    } KiB per second`;
  }

  /** Lines dropped since the last admitted one. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Decides on one line of `bytes` bytes. */
  admit(bytes: number): Admission {
    if (
      this.#dropped > 0 &&
      (this.#lines.available() < this.#resumeLines ||
        this.#bytes.available() < Math.max(this.#resumeBytes, bytes))
    ) {
      this.#dropped++;
      return { admit: false, dropped: 0 };
    }
    if (this.#lines.available() < 1 || this.#bytes.available() < bytes) {
      this.#dropped++;
      return { admit: false, dropped: 0 };
    }
    this.#lines.take(1);
    this.#bytes.take(bytes);
    const dropped = this.#dropped;
    this.#dropped = 0;
    return { admit: true, dropped };
  }
}
