/**
 * Connection events: each decision becomes an `EgressEvent` carrying one
 * OCSF Network Activity line, rate-limited per sandbox (a guest opening
 * connections in a loop costs dropped events, counted in the next event's
 * `dropped`), fanned out to a bounded number of subscribers (the gateway's
 * WatchEvents streams).
 *
 * @module
 */
import { egressDecision, type EgressDecisionInfo } from "../core/ocsf.ts";
import type { EgressEvent } from "../core/protocol.ts";
import { TokenBucket } from "../core/rate_limit.ts";
import { VERSION } from "../core/version.ts";
import { DEFAULT_EVENTS_PER_SEC } from "./config.ts";

/** Most sandboxes whose rate state is kept (oldest forgotten first). */
export const MAX_RATE_STATES = 8192;
/** Most subscribers at once. */
export const MAX_SUBSCRIBERS = 16;

/** Receives events; returns false while it cannot take more (it is then skipped and counted). */
export type EventSink = (event: EgressEvent) => boolean;

/** A subscription: `ready()` after the sink drained; `close()` ends it. */
export interface Subscription {
  ready(): void;
  close(): void;
}

interface RateState {
  bucket: TokenBucket;
  dropped: number;
}

interface Subscriber {
  sink: EventSink;
  blocked: boolean;
  /** Events skipped while blocked, by sandbox (added to that sandbox's next event). */
  skipped: Map<string, number>;
}

/** Options of {@link EventHub}. */
export interface EventHubOptions {
  /** Events per second per sandbox (also the burst); default 100. */
  perSecond?: number;
  /** Millisecond clock; default `Date.now`. */
  now?: () => number;
  /** Version put in the OCSF metadata; default this build's. */
  productVersion?: string;
}

/** Counters of an {@link EventHub}. */
export interface EventHubStats {
  published: number;
  dropped: number;
  subscribers: number;
}

/** Rate-limits and fans out events. */
export class EventHub {
  readonly #rate: number;
  readonly #now: () => number;
  readonly #version: string;
  readonly #states = new Map<string, RateState>();
  readonly #subs = new Set<Subscriber>();
  #published = 0;
  #dropped = 0;

  /** Creates a hub with no subscribers. */
  constructor(options: EventHubOptions = {}) {
    this.#rate = options.perSecond ?? DEFAULT_EVENTS_PER_SEC;
    this.#now = options.now ?? Date.now;
    this.#version = options.productVersion ?? VERSION;
  }

  /** Counters. */
  get stats(): EventHubStats {
    return { published: this.#published, dropped: this.#dropped, subscribers: this.#subs.size };
  }

  /** Publishes one decision; false when the sandbox's rate limit dropped it. */
  publish(info: EgressDecisionInfo): boolean {
    let state = this.#states.get(info.sandboxId);
    if (!state) {
      if (this.#states.size >= MAX_RATE_STATES) {
        this.#states.delete(this.#states.keys().next().value!);
      }
      state = { bucket: new TokenBucket(this.#rate, this.#rate, this.#now), dropped: 0 };
      this.#states.set(info.sandboxId, state);
    }
    if (!state.bucket.take()) {
      state.dropped++;
      this.#dropped++;
      return false;
    }
    const dropped = state.dropped;
    state.dropped = 0;
    this.#published++;
    const ocsf = egressDecision({ productVersion: this.#version, now: this.#now }, info);
    const event: EgressEvent = {
      sandbox_id: info.sandboxId,
      time_ms: ocsf.time,
      decision: info.decision,
      host: info.host,
      port: info.port,
      policy_name: info.rule ?? "",
      ocsf_json: JSON.stringify(ocsf),
      dropped,
    };
    for (const sub of this.#subs) {
      const skipped = sub.skipped.get(info.sandboxId) ?? 0;
      if (sub.blocked) {
        sub.skipped.set(info.sandboxId, skipped + 1);
        continue;
      }
      if (skipped) sub.skipped.delete(info.sandboxId);
      const ok = sub.sink(skipped ? { ...event, dropped: dropped + skipped } : event);
      if (!ok) sub.blocked = true;
    }
    return true;
  }

  /** Forgets a sandbox's rate state (it was removed). */
  forget(sandboxId: string): void {
    this.#states.delete(sandboxId);
    for (const sub of this.#subs) sub.skipped.delete(sandboxId);
  }

  /**
   * Adds a subscriber; undefined when {@link MAX_SUBSCRIBERS} are there. When
   * `sink` returns false it gets nothing until `ready()`; what it missed is
   * counted per sandbox into that sandbox's next event.
   */
  subscribe(sink: EventSink): Subscription | undefined {
    if (this.#subs.size >= MAX_SUBSCRIBERS) return undefined;
    const sub: Subscriber = { sink, blocked: false, skipped: new Map() };
    this.#subs.add(sub);
    return {
      ready: () => sub.blocked = false,
      close: () => this.#subs.delete(sub),
    };
  }
}
