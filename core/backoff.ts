/**
 * Exponential backoff with an optional jitter, an abortable sleep, and
 * {@link retryWhile}, the one retry-while-not-ready loop.
 *
 * Used by the session registry (100 ms → 2 s while waiting for a supervisor),
 * the supervisor's reconnect loop (1 s → 30 s with jitter, reset after a
 * healthy session) and the CLI's `ssh-proxy` retries (a 412 from the tunnel,
 * FAILED_PRECONDITION from CreateSshSession, while the sandbox is not ready).
 *
 * @module
 */

/** How a {@link Backoff} grows. */
export interface BackoffOptions {
  /** First delay in milliseconds. */
  initialMs: number;
  /** Largest delay in milliseconds (before jitter). */
  maxMs: number;
  /** Growth factor per step; default 2. */
  factor?: number;
  /**
   * Fraction of the delay that is randomised, 0..1; default 0. With 0.2 a
   * 10 s step becomes a uniformly random delay in [8 s, 12 s].
   */
  jitter?: number;
  /** Random source in [0, 1); default `Math.random`. Tests pass a fixed one. */
  random?: () => number;
}

/** A sequence of growing delays. */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #factor: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #current: number;
  #attempts = 0;

  /** Creates a backoff at its first step. */
  constructor(options: BackoffOptions) {
    if (!(options.initialMs > 0) || !(options.maxMs >= options.initialMs)) {
      throw new RangeError("backoff needs 0 < initialMs <= maxMs");
    }
    const jitter = options.jitter ?? 0;
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError("backoff jitter must be within 0..1");
    this.#initial = options.initialMs;
    this.#max = options.maxMs;
    this.#factor = options.factor ?? 2;
    this.#jitter = jitter;
    this.#random = options.random ?? Math.random;
    this.#current = this.#initial;
  }

  /** How many delays have been handed out since the last reset. */
  get attempts(): number {
    return this.#attempts;
  }

  /** The next un-jittered step, without advancing. */
  peek(): number {
    return this.#current;
  }

  /** Returns the next delay in milliseconds and advances. */
  next(): number {
    const base = this.#current;
    this.#current = Math.min(this.#max, this.#current * this.#factor);
    this.#attempts++;
    if (this.#jitter === 0) return base;
    const spread = base * this.#jitter;
    return Math.max(0, Math.round(base - spread + this.#random() * 2 * spread));
  }

  /** Back to the first step (e.g. after a session that stayed healthy). */
  reset(): void {
    this.#current = this.#initial;
    this.#attempts = 0;
  }
}

/**
 * Resolves after `ms` milliseconds, or rejects with the signal's reason as
 * soon as `signal` aborts. The timer never outlives the promise.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Options of {@link retryWhile}: the backoff between attempts and when to stop. */
export interface RetryOptions extends BackoffOptions {
  /** Whether a failure is worth another attempt (others are thrown at once). */
  retryable: (err: unknown) => boolean;
  /**
   * Longest total wait, from the first attempt: a retryable failure whose
   * next delay would end past it is thrown as it is.
   */
  maxWaitMs: number;
  /** Told before each wait, with the delay and the number of the retry (1 = first). */
  onRetry?: (delayMs: number, retry: number) => void;
  /** Stops waiting: the wait rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Clock in milliseconds; default `Date.now`. */
  now?: () => number;
}

/**
 * Calls `attempt` until it resolves, waiting with backoff after each
 * failure that `retryable` accepts, for at most `maxWaitMs` in total (e.g.
 * while a sandbox is not ready yet). Rejects with the last failure.
 */
export async function retryWhile<T>(
  attempt: () => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const backoff = new Backoff(options);
  const now = options.now ?? Date.now;
  const started = now();
  while (true) {
    try {
      return await attempt();
    } catch (err) {
      if (!options.retryable(err)) throw err;
      const delay = backoff.next();
      if (now() - started + delay > options.maxWaitMs) throw err;
      options.onRetry?.(delay, backoff.attempts);
      await sleep(delay, options.signal);
    }
  }
}
