/**
 * The supervisor session registry: which sandbox has a live supervisor
 * session, and which relays are waiting for their supervisor to dial back.
 *
 * Pure bookkeeping with no gRPC in it. The gateway feeds it sessions (one
 * `ConnectSupervisor` stream each) and relay streams (one `RelayStream` each);
 * requesters (the SSH tunnel, exec) ask it for a relay and get the stream the
 * supervisor opened for them.
 *
 * Rules (design §4):
 * - one session per sandbox; a newer session supersedes the older one, which
 *   is told to stop, and relays still pending for that sandbox are offered
 *   again on the new session;
 * - `removeIfCurrent` only removes the session it names, so a superseded
 *   session's late cleanup never evicts its successor;
 * - a relay is recorded *before* `relay_open` goes out, under the caps of 256
 *   in flight overall and 32 per sandbox;
 * - a claim fails with NOT_FOUND (unknown), DEADLINE_EXCEEDED (older than
 *   10 s) or INTERNAL (the requester went away);
 * - observers hear "connected" and "disconnected" exactly once per real
 *   change, after the registry's state is consistent again.
 *
 * @module
 */
import { Backoff, sleep } from "./backoff.ts";
import type { GatewayMessage } from "./protocol.ts";
import { Code, StatusError } from "./status.ts";

/** Most relays in flight across all sandboxes. */
export const MAX_PENDING_RELAYS = 256;
/** Most relays in flight for one sandbox. */
export const MAX_PENDING_RELAYS_PER_SANDBOX = 32;
/** A pending relay older than this can no longer be claimed. */
export const RELAY_PENDING_TIMEOUT_MS = 10_000;
/** How often the reaper sweeps expired pending relays. */
export const RELAY_REAPER_INTERVAL_MS = 30_000;
/** First and largest step while waiting for a session to appear. */
export const SESSION_WAIT_BACKOFF = { initialMs: 100, maxMs: 2_000 } as const;

/** The gateway side of one supervisor session, as the registry sees it. */
export interface SessionSink {
  /** Queues a message to the supervisor; false when the session's stream is gone. */
  send(message: GatewayMessage): boolean;
  /** Tells the session to end (it has been superseded). */
  stop(): void;
}

/** Called after a sandbox gains its first session or loses its current one. */
export type SessionObserver = (sandboxId: string, connected: boolean) => void;

/** Options of {@link SessionRegistry}. */
export interface RegistryOptions {
  /** Clock in milliseconds; default `Date.now`. */
  now?: () => number;
  /** Global cap; default {@link MAX_PENDING_RELAYS}. */
  maxPendingRelays?: number;
  /** Per-sandbox cap; default {@link MAX_PENDING_RELAYS_PER_SANDBOX}. */
  maxPendingPerSandbox?: number;
  /** Claim deadline; default {@link RELAY_PENDING_TIMEOUT_MS}. */
  relayPendingTimeoutMs?: number;
  /** New channel ids; default `crypto.randomUUID`. */
  newChannelId?: () => string;
}

/** Options of {@link SessionRegistry.openRelay}. */
export interface OpenRelayOptions {
  /** How long to wait for a supervisor session (SSH connect 30 s, exec 15 s). */
  sessionWaitMs: number;
  /** How long the requester waits for the claim; default {@link RELAY_PENDING_TIMEOUT_MS}. */
  relayWaitMs?: number;
  /** Aborting gives up the wait and the relay. */
  signal?: AbortSignal;
}

/** A relay that has been requested from a supervisor. */
export interface PendingRelay<T> {
  /** The channel id sent in `relay_open`. */
  readonly channelId: string;
  /** The sandbox it was opened for. */
  readonly sandboxId: string;
  /**
   * Resolves with the stream the supervisor opened for this channel; rejects
   * with DEADLINE_EXCEEDED when it does not come in time, or CANCELLED.
   */
  readonly stream: Promise<T>;
  /** Gives up waiting; a later claim of this channel fails with INTERNAL. */
  cancel(): void;
}

interface SessionEntry {
  sessionId: string;
  sink: SessionSink;
  connectedAt: number;
}

interface PendingEntry<T> {
  sandboxId: string;
  createdAt: number;
  /** The requester stopped waiting (cancelled or timed out). */
  dropped: boolean;
  deliver(stream: T): void;
  fail(err: StatusError): void;
}

/** Sessions by sandbox id and pending relays by channel id; `T` is the relay stream type. */
export class SessionRegistry<T> {
  readonly #sessions = new Map<string, SessionEntry>();
  readonly #pending = new Map<string, PendingEntry<T>>();
  readonly #sessionWaiters = new Map<string, Set<() => void>>();
  readonly #observers = new Set<SessionObserver>();
  readonly #now: () => number;
  readonly #maxPending: number;
  readonly #maxPerSandbox: number;
  readonly #pendingTimeoutMs: number;
  readonly #newChannelId: () => string;
  #reaper: ReturnType<typeof setInterval> | undefined;

  /** Creates an empty registry. */
  constructor(options: RegistryOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxPending = options.maxPendingRelays ?? MAX_PENDING_RELAYS;
    this.#maxPerSandbox = options.maxPendingPerSandbox ?? MAX_PENDING_RELAYS_PER_SANDBOX;
    this.#pendingTimeoutMs = options.relayPendingTimeoutMs ?? RELAY_PENDING_TIMEOUT_MS;
    this.#newChannelId = options.newChannelId ?? (() => crypto.randomUUID());
  }

  /** Adds an observer of connect/disconnect changes; returns a function that removes it. */
  observe(observer: SessionObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /**
   * Makes `sessionId` the session of `sandboxId`. When another session was
   * current it is told to stop, the sandbox's pending relays are re-sent on
   * the new session, and the result is true (superseded).
   */
  register(sandboxId: string, sessionId: string, sink: SessionSink): boolean {
    const previous = this.#sessions.get(sandboxId);
    this.#sessions.set(sandboxId, { sessionId, sink, connectedAt: this.#now() });
    if (previous) {
      safely(() => previous.sink.stop());
      this.#replayPending(sandboxId, sink);
    }
    const waiters = this.#sessionWaiters.get(sandboxId);
    if (waiters) { for (const wake of [...waiters]) wake(); }
    if (!previous) this.#notify(sandboxId, true);
    return previous !== undefined;
  }

  /** Removes the session of `sandboxId` only if it is still `sessionId`; true when removed. */
  removeIfCurrent(sandboxId: string, sessionId: string): boolean {
    const current = this.#sessions.get(sandboxId);
    if (!current || current.sessionId !== sessionId) return false;
    this.#sessions.delete(sandboxId);
    this.#notify(sandboxId, false);
    return true;
  }

  /**
   * Ends the current session of `sandboxId` (e.g. the sandbox was deleted):
   * it is told to stop and removed; true when there was one.
   */
  endSession(sandboxId: string): boolean {
    const current = this.#sessions.get(sandboxId);
    if (!current) return false;
    safely(() => current.sink.stop());
    return this.removeIfCurrent(sandboxId, current.sessionId);
  }

  /** Whether `sandboxId` has a live session. */
  hasSession(sandboxId: string): boolean {
    return this.#sessions.has(sandboxId);
  }

  /** The current session id of `sandboxId`, if any. */
  currentSessionId(sandboxId: string): string | undefined {
    return this.#sessions.get(sandboxId)?.sessionId;
  }

  /** Number of sandboxes with a live session. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Relays in flight (not yet claimed, requester still waiting), overall or for one sandbox. */
  pendingCount(sandboxId?: string): number {
    let n = 0;
    for (const entry of this.#pending.values()) {
      if (!entry.dropped && (sandboxId === undefined || entry.sandboxId === sandboxId)) n++;
    }
    return n;
  }

  /** The sandbox a pending relay was opened for (undefined when unknown). */
  pendingSandboxId(channelId: string): string | undefined {
    return this.#pending.get(channelId)?.sandboxId;
  }

  /** Entries in the pending table, including those whose requester left. */
  get pendingEntries(): number {
    return this.#pending.size;
  }

  /**
   * Asks the supervisor of `sandboxId` to open a relay. Waits up to
   * `sessionWaitMs` for a session (UNAVAILABLE after that), enforces the
   * caps (RESOURCE_EXHAUSTED), records the relay, then sends `relay_open`
   * (UNAVAILABLE if the session's stream is gone, with nothing left behind).
   */
  async openRelay(sandboxId: string, options: OpenRelayOptions): Promise<PendingRelay<T>> {
    await this.#waitForSession(sandboxId, options.sessionWaitMs, options.signal);
    const session = this.#sessions.get(sandboxId);
    if (!session) throw new StatusError(Code.UNAVAILABLE, "supervisor session not connected");

    if (this.pendingCount() >= this.#maxPending) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `gateway relay capacity reached (${this.#maxPending} in flight)`,
      );
    }
    if (this.pendingCount(sandboxId) >= this.#maxPerSandbox) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `per-sandbox relay limit reached (${this.#maxPerSandbox} in flight for ${sandboxId})`,
      );
    }

    const channelId = this.#newChannelId();
    const relay = this.#insertPending(channelId, sandboxId, options);
    const sent = safely(() =>
      session.sink.send({ payload: "relay_open", relay_open: { channel_id: channelId } })
    );
    if (!sent) {
      this.#pending.get(channelId)?.fail(
        new StatusError(Code.UNAVAILABLE, "supervisor session disconnected"),
      );
      this.#pending.delete(channelId);
      await relay.stream.catch(() => {});
      throw new StatusError(Code.UNAVAILABLE, "supervisor session disconnected");
    }
    return relay;
  }

  /**
   * Hands `stream` (opened by the supervisor for `channelId`) to the
   * requester. Throws NOT_FOUND for an unknown channel, DEADLINE_EXCEEDED
   * when the entry is older than the claim deadline, INTERNAL when the
   * requester is gone. The entry is consumed in every case.
   */
  claimRelay(channelId: string, stream: T): void {
    const entry = this.#pending.get(channelId);
    if (!entry) throw new StatusError(Code.NOT_FOUND, "unknown or expired relay channel");
    this.#pending.delete(channelId);
    if (this.#now() - entry.createdAt > this.#pendingTimeoutMs) {
      entry.fail(new StatusError(Code.DEADLINE_EXCEEDED, "relay open timed out"));
      throw new StatusError(Code.DEADLINE_EXCEEDED, "relay channel timed out");
    }
    if (entry.dropped) throw new StatusError(Code.INTERNAL, "relay requester dropped");
    entry.deliver(stream);
  }

  /** Removes pending relays older than the claim deadline; returns how many. */
  reapExpired(): number {
    const now = this.#now();
    let removed = 0;
    for (const [channelId, entry] of this.#pending) {
      if (now - entry.createdAt > this.#pendingTimeoutMs) {
        this.#pending.delete(channelId);
        entry.fail(new StatusError(Code.DEADLINE_EXCEEDED, "relay open timed out"));
        removed++;
      }
    }
    return removed;
  }

  /** Sweeps expired relays every `intervalMs` until {@link close}. */
  startReaper(intervalMs: number = RELAY_REAPER_INTERVAL_MS): void {
    if (this.#reaper !== undefined) return;
    this.#reaper = setInterval(() => this.reapExpired(), intervalMs);
  }

  /** Stops the reaper and fails every waiting requester with UNAVAILABLE. */
  close(): void {
    if (this.#reaper !== undefined) clearInterval(this.#reaper);
    this.#reaper = undefined;
    for (const entry of this.#pending.values()) {
      entry.fail(new StatusError(Code.UNAVAILABLE, "gateway shutting down"));
    }
    this.#pending.clear();
    for (const waiters of this.#sessionWaiters.values()) for (const wake of [...waiters]) wake();
  }

  #insertPending(channelId: string, sandboxId: string, options: OpenRelayOptions): PendingRelay<T> {
    let settle!: { resolve: (s: T) => void; reject: (e: unknown) => void };
    const stream = new Promise<T>((resolve, reject) => settle = { resolve, reject });
    stream.catch(() => {}); // the requester may have left; never an unhandled rejection
    let done = false;
    const finish = () => {
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    };
    const entry: PendingEntry<T> = {
      sandboxId,
      createdAt: this.#now(),
      dropped: false,
      deliver: (s) => {
        if (done) return;
        finish();
        settle.resolve(s);
      },
      fail: (err) => {
        if (done) return;
        entry.dropped = true;
        finish();
        settle.reject(err);
      },
    };
    const drop = (err: StatusError) => entry.fail(err);
    const timer = setTimeout(
      () => drop(new StatusError(Code.DEADLINE_EXCEEDED, "relay open timed out")),
      options.relayWaitMs ?? this.#pendingTimeoutMs,
    );
    const onAbort = () => drop(new StatusError(Code.CANCELLED, "relay request cancelled"));
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.#pending.set(channelId, entry);
    return {
      channelId,
      sandboxId,
      stream,
      cancel: () => drop(new StatusError(Code.CANCELLED, "relay request cancelled")),
    };
  }

  #replayPending(sandboxId: string, sink: SessionSink): void {
    for (const [channelId, entry] of this.#pending) {
      if (entry.sandboxId !== sandboxId || entry.dropped) continue;
      safely(() => sink.send({ payload: "relay_open", relay_open: { channel_id: channelId } }));
    }
  }

  async #waitForSession(sandboxId: string, waitMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = this.#now() + waitMs;
    const backoff = new Backoff(SESSION_WAIT_BACKOFF);
    while (!this.#sessions.has(sandboxId)) {
      if (signal?.aborted) throw new StatusError(Code.CANCELLED, "relay request cancelled");
      const remaining = deadline - this.#now();
      if (remaining <= 0) {
        throw new StatusError(Code.UNAVAILABLE, "supervisor session not connected");
      }
      await this.#sleepUntilRegistered(sandboxId, Math.min(backoff.next(), remaining), signal);
    }
  }

  /** Sleeps `ms`, waking early when `sandboxId` registers or `signal` aborts. */
  async #sleepUntilRegistered(sandboxId: string, ms: number, signal?: AbortSignal): Promise<void> {
    const wake = new AbortController();
    const waiters = this.#sessionWaiters.get(sandboxId) ?? new Set();
    this.#sessionWaiters.set(sandboxId, waiters);
    const onWake = () => wake.abort();
    waiters.add(onWake);
    const onAbort = () => wake.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await sleep(ms, wake.signal).catch(() => {});
    } finally {
      waiters.delete(onWake);
      if (waiters.size === 0) this.#sessionWaiters.delete(sandboxId);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  #notify(sandboxId: string, connected: boolean): void {
    for (const observer of [...this.#observers]) safely(() => observer(sandboxId, connected));
  }
}

/** Runs `fn`; a throw counts as a falsy result instead of escaping into registry state. */
function safely<R>(fn: () => R): R | false {
  try {
    return fn();
  } catch {
    return false;
  }
}
