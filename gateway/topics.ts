/**
 * Per-sandbox publish/subscribe with an optional replay buffer: status
 * change signals, log lines and platform events all flow through one of
 * these to `WatchSandbox` streams and `GetSandboxLogs`.
 *
 * @module
 */

/** A subscriber of one sandbox's topic. */
export interface Subscriber<T> {
  /** A new item. */
  next(item: T): void;
  /** The sandbox is gone: no more items will come. */
  end(): void;
}

/** Options of {@link SandboxTopics} beyond the item count. */
export interface TopicOptions<T> {
  /** Bytes kept per sandbox for replay, as `sizeOf` counts them (default: no byte bound). */
  maxBytes?: number;
  /** Size of one item in bytes; required with `maxBytes`. */
  sizeOf?: (item: T) => number;
}

/**
 * Per-sandbox topics holding the last `capacity` items of each, and at most
 * `maxBytes` of them: the oldest go first when either bound is passed.
 */
export class SandboxTopics<T> {
  readonly #capacity: number;
  readonly #maxBytes: number;
  readonly #sizeOf?: (item: T) => number;
  readonly #buffers = new Map<string, { items: T[]; sizes: number[]; bytes: number }>();
  readonly #totals = new Map<string, number>();
  readonly #subscribers = new Map<string, Set<Subscriber<T>>>();

  /** `capacity` = items kept per sandbox for replay (0 = none). */
  constructor(capacity: number, options: TopicOptions<T> = {}) {
    this.#capacity = capacity;
    this.#maxBytes = options.maxBytes ?? Infinity;
    this.#sizeOf = options.sizeOf;
    if (options.maxBytes !== undefined && !options.sizeOf) {
      throw new Error("SandboxTopics: maxBytes needs sizeOf");
    }
  }

  /** Records `item` for `sandboxId` and hands it to every subscriber. */
  publish(sandboxId: string, item: T): void {
    if (this.#capacity > 0) {
      const size = this.#sizeOf ? this.#sizeOf(item) : 0;
      const buf = this.#buffers.get(sandboxId) ?? { items: [], sizes: [], bytes: 0 };
      buf.items.push(item);
      buf.sizes.push(size);
      buf.bytes += size;
      // oldest first: past the item count, then until the bytes fit
      let cut = 0;
      let bytes = buf.bytes;
      while (
        cut < buf.items.length &&
        (buf.items.length - cut > this.#capacity || bytes > this.#maxBytes)
      ) {
        bytes -= buf.sizes[cut];
        cut++;
      }
      if (cut > 0) {
        buf.items.splice(0, cut);
        buf.sizes.splice(0, cut);
        buf.bytes = bytes;
      }
      this.#buffers.set(sandboxId, buf);
    }
    this.#totals.set(sandboxId, (this.#totals.get(sandboxId) ?? 0) + 1);
    for (const s of [...(this.#subscribers.get(sandboxId) ?? [])]) {
      try {
        s.next(item);
      } catch {
        // a broken subscriber must not stop the others
      }
    }
  }

  /** The buffered items of `sandboxId`, oldest first. */
  buffered(sandboxId: string): T[] {
    return [...(this.#buffers.get(sandboxId)?.items ?? [])];
  }

  /** Bytes buffered for `sandboxId`, as `sizeOf` counts them. */
  bufferedBytes(sandboxId: string): number {
    return this.#buffers.get(sandboxId)?.bytes ?? 0;
  }

  /** Bytes buffered for every sandbox together. */
  totalBufferedBytes(): number {
    let n = 0;
    for (const b of this.#buffers.values()) n += b.bytes;
    return n;
  }

  /** How many items were ever published for `sandboxId`. */
  total(sandboxId: string): number {
    return this.#totals.get(sandboxId) ?? 0;
  }

  /** Subscribes to `sandboxId`; returns the unsubscribe function. */
  subscribe(sandboxId: string, subscriber: Subscriber<T>): () => void {
    const set = this.#subscribers.get(sandboxId) ?? new Set();
    set.add(subscriber);
    this.#subscribers.set(sandboxId, set);
    return () => {
      set.delete(subscriber);
      if (set.size === 0 && this.#subscribers.get(sandboxId) === set) {
        this.#subscribers.delete(sandboxId);
      }
    };
  }

  /** Number of live subscribers of `sandboxId`. */
  subscriberCount(sandboxId: string): number {
    return this.#subscribers.get(sandboxId)?.size ?? 0;
  }

  /** Forgets `sandboxId` and tells its subscribers it ended. */
  drop(sandboxId: string): void {
    this.#buffers.delete(sandboxId);
    this.#totals.delete(sandboxId);
    const set = this.#subscribers.get(sandboxId);
    this.#subscribers.delete(sandboxId);
    for (const s of [...(set ?? [])]) {
      try {
        s.end();
      } catch {
        // ignore
      }
    }
  }

  /** Ends every subscription (shutdown). */
  close(): void {
    for (const id of [...this.#subscribers.keys()]) this.drop(id);
    this.#buffers.clear();
  }
}
