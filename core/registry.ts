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
 * - a relay is recorded *before* `relay_open` goes out, under the caps
 *   below, and counts until it is claimed, refused by the supervisor or
 *   reaped (10 s), even when its requester has gone: the supervisor was
 *   already asked, and the cap is what keeps the table bounded. Nothing is
 *   recorded before a session exists, and an entry is recorded and its
 *   `relay_open` sent in one synchronous step (a failed send removes it at
 *   once), so there is no entry that was never sent;
 * - caps with a fair share: each sandbox may have 32 relays in flight; its
 *   first 16 are its own reserve, and only relays beyond a sandbox's
 *   reserve draw on a shared pool of 256. Silent sandboxes can drain the
 *   pool but never another sandbox's reserve, so a healthy sandbox always
 *   gets at least 16 in flight. The table holds at most
 *   256 + 16 × (sandboxes with relays in flight) entries;
 * - a claim fails with NOT_FOUND (unknown), DEADLINE_EXCEEDED (older than
 *   10 s) or INTERNAL (the requester went away);
 * - a session dropped for silence takes its pending relays with it
 *   ({@link SessionRegistry.dropSessionRelays});
 * - observers hear "connected" and "disconnected" exactly once per real
 *   change, after the registry's state is consistent again.
 *
 * @module
 */
import { Backoff, sleep } from "./backoff.ts";
import type { GatewayMessage } from "./protocol.ts";
import { Code, StatusError } from "./status.ts";

/** The shared pool: relays in flight beyond the sandboxes' reserves, across all sandboxes. */
export const MAX_PENDING_RELAYS = 256;
/** Most relays in flight for one sandbox (reserve included). */
export const MAX_PENDING_RELAYS_PER_SANDBOX = 32;
/** Relays in flight each sandbox may have without drawing on the shared pool. */
export const RESERVED_RELAYS_PER_SANDBOX = 16;
/**
 * How a supervisor's `relay_open_result.error` starts when it refuses a
 * relay for capacity; the gateway then fails the request with
 * RESOURCE_EXHAUSTED instead of UNAVAILABLE.
 */
export const RELAY_CAPACITY_ERROR = "relay capacity reached";
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
  /** Shared pool beyond the reserves; default {@link MAX_PENDING_RELAYS}. */
  maxPendingRelays?: number;
  /** Per-sandbox cap; default {@link MAX_PENDING_RELAYS_PER_SANDBOX}. */
  maxPendingPerSandbox?: number;
  /** Per-sandbox reserve; default {@link RESERVED_RELAYS_PER_SANDBOX} (at most the per-sandbox cap). */
  reservedPerSandbox?: number;
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

/** Where a claimed relay came from (see {@link SessionRegistry.claimRelay}). */
export interface ClaimedRelay {
  /** The sandbox it was opened for. */
  sandboxId: string;
  /** The session whose supervisor was last asked to open it. */
  sessionId: string;
}

interface PendingEntry<T> {
  sandboxId: string;
  createdAt: number;
  /** The session `relay_open` last went to. */
  sessionId: string;
  /** The requester stopped waiting (cancelled or timed out). */
  dropped: boolean;
  deliver(stream: T): void;
  fail(err: StatusError): void;
}

/** Sessions by sandbox id and pending relays by channel id; `T` is the relay stream type. */
export class SessionRegistry<T> {
  readonly #sessions = new Map<string, SessionEntry>();
  readonly #pending = new Map<string, PendingEntry<T>>();
  /** Entries in {@link #pending} per sandbox. */
  readonly #counts = new Map<string, number>();
  /** Entries beyond their sandbox's reserve, summed over sandboxes. */
  #shared = 0;
  readonly #sessionWaiters = new Map<string, Set<() => void>>();
  readonly #observers = new Set<SessionObserver>();
  readonly #now: () => number;
  readonly #maxPending: number;
  readonly #maxPerSandbox: number;
  readonly #reserved: number;
  readonly #pendingTimeoutMs: number;
  readonly #newChannelId: () => string;
  #reaper: ReturnType<typeof setInterval> | undefined;

  /** Creates an empty registry. */
  constructor(options: RegistryOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxPending = options.maxPendingRelays ?? MAX_PENDING_RELAYS;
    this.#maxPerSandbox = options.maxPendingPerSandbox ?? MAX_PENDING_RELAYS_PER_SANDBOX;
    this.#reserved = Math.min(
      options.reservedPerSandbox ?? RESERVED_RELAYS_PER_SANDBOX,
      this.#maxPerSandbox,
    );
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
      this.#replayPending(sandboxId, sessionId, sink);
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

  /**
   * Relays in flight, overall or for one sandbox: every entry not yet
   * claimed, refused or reaped, whether or not its requester still waits.
   */
  pendingCount(sandboxId?: string): number {
    return sandboxId === undefined ? this.#pending.size : this.#counts.get(sandboxId) ?? 0;
  }

  /** Relays in flight beyond their sandbox's reserve (what the shared pool caps). */
  get sharedPending(): number {
    return this.#shared;
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
    if (options.signal?.aborted) throw new StatusError(Code.CANCELLED, "relay request cancelled");

    let refusal = this.#refusal(sandboxId);
    if (refusal) {
      this.reapExpired(); // entries past the deadline no longer hold a slot
      refusal = this.#refusal(sandboxId);
      if (refusal) throw refusal;
    }

    const channelId = this.#newChannelId();
    const { relay, entry } = this.#insertPending(channelId, sandboxId, session.sessionId, options);
    const sent = safely(() =>
      session.sink.send({ payload: "relay_open", relay_open: { channel_id: channelId } })
    );
    if (!sent) {
      this.#remove(channelId, entry);
      entry.fail(new StatusError(Code.UNAVAILABLE, "supervisor session disconnected"));
      await relay.stream.catch(() => {});
      throw new StatusError(Code.UNAVAILABLE, "supervisor session disconnected");
    }
    return relay;
  }

  /**
   * Hands `stream` (opened by the supervisor for `channelId`) to the
   * requester. Throws NOT_FOUND for an unknown channel, DEADLINE_EXCEEDED
   * when the entry is older than the claim deadline, INTERNAL when the
   * requester is gone. The entry is consumed in every case. Returns the
   * sandbox and session the relay belongs to.
   */
  claimRelay(channelId: string, stream: T): ClaimedRelay {
    const entry = this.#pending.get(channelId);
    if (!entry) throw new StatusError(Code.NOT_FOUND, "unknown or expired relay channel");
    this.#remove(channelId, entry);
    if (this.#now() - entry.createdAt > this.#pendingTimeoutMs) {
      entry.fail(new StatusError(Code.DEADLINE_EXCEEDED, "relay open timed out"));
      throw new StatusError(Code.DEADLINE_EXCEEDED, "relay channel timed out");
    }
    if (entry.dropped) throw new StatusError(Code.INTERNAL, "relay requester dropped");
    entry.deliver(stream);
    return { sandboxId: entry.sandboxId, sessionId: entry.sessionId };
  }

  /**
   * The supervisor of session `from` could not open `channelId`: the entry
   * is removed and its requester fails with `err`. Only the session the
   * relay was last sent to may do this; false (nothing changed) otherwise.
   */
  failRelay(
    channelId: string,
    from: { sandboxId: string; sessionId: string },
    err: StatusError,
  ): boolean {
    const entry = this.#pending.get(channelId);
    if (!entry || entry.sandboxId !== from.sandboxId || entry.sessionId !== from.sessionId) {
      return false;
    }
    this.#remove(channelId, entry);
    entry.fail(err);
    return true;
  }

  /**
   * Removes every pending relay last sent to session `sessionId` of
   * `sandboxId` (the gateway gave that supervisor up) and fails the
   * requesters still waiting with `err`; returns how many.
   */
  dropSessionRelays(sandboxId: string, sessionId: string, err: StatusError): number {
    let removed = 0;
    for (const [channelId, entry] of this.#pending) {
      if (entry.sandboxId !== sandboxId || entry.sessionId !== sessionId) continue;
      this.#remove(channelId, entry);
      entry.fail(err);
      removed++;
    }
    return removed;
  }

  /** Removes pending relays older than the claim deadline; returns how many. */
  reapExpired(): number {
    const now = this.#now();
    let removed = 0;
    for (const [channelId, entry] of this.#pending) {
      if (now - entry.createdAt > this.#pendingTimeoutMs) {
        this.#remove(channelId, entry);
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
    this.#counts.clear();
    this.#shared = 0;
    for (const waiters of this.#sessionWaiters.values()) for (const wake of [...waiters]) wake();
  }

  /** Why `sandboxId` may not have one more relay in flight now, if it may not. */
  #refusal(sandboxId: string): StatusError | undefined {
    const n = this.#counts.get(sandboxId) ?? 0;
    if (n >= this.#maxPerSandbox) {
      return new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `per-sandbox relay limit reached (${this.#maxPerSandbox} in flight for ${sandboxId}); ` +
          "retry in a few seconds",
      );
    }
    if (n >= this.#reserved && this.#shared >= this.#maxPending) {
      return new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `gateway relay capacity reached (${this.#maxPending} shared relays in flight); ` +
          "retry in a few seconds",
      );
    }
    return undefined;
  }

  #add(channelId: string, entry: PendingEntry<T>): void {
    const n = this.#counts.get(entry.sandboxId) ?? 0;
    if (n >= this.#reserved) this.#shared++;
    this.#counts.set(entry.sandboxId, n + 1);
    this.#pending.set(channelId, entry);
  }

  /** Removes `entry` (if it is still the one under `channelId`) and gives back its slot. */
  #remove(channelId: string, entry: PendingEntry<T>): void {
    if (this.#pending.get(channelId) !== entry) return;
    this.#pending.delete(channelId);
    const n = this.#counts.get(entry.sandboxId) ?? 0;
    if (n > this.#reserved) this.#shared--;
    if (n <= 1) this.#counts.delete(entry.sandboxId);
    else this.#counts.set(entry.sandboxId, n - 1);
  }

  #insertPending(
    channelId: string,
    sandboxId: string,
    sessionId: string,
    options: OpenRelayOptions,
  ): { relay: PendingRelay<T>; entry: PendingEntry<T> } {
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
      sessionId,
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
    // The supervisor has been asked: the entry keeps counting after a drop.
    const drop = (err: StatusError) => entry.fail(err);
    const timer = setTimeout(
      () => drop(new StatusError(Code.DEADLINE_EXCEEDED, "relay open timed out")),
      options.relayWaitMs ?? this.#pendingTimeoutMs,
    );
    const onAbort = () => drop(new StatusError(Code.CANCELLED, "relay request cancelled"));
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.#add(channelId, entry);
    return {
      entry,
      relay: {
        channelId,
        sandboxId,
        stream,
        cancel: () => drop(new StatusError(Code.CANCELLED, "relay request cancelled")),
      },
    };
  }

  #replayPending(sandboxId: string, sessionId: string, sink: SessionSink): void {
    for (const [channelId, entry] of this.#pending) {
      if (entry.sandboxId !== sandboxId || entry.dropped) continue;
      const sent = safely(() =>
        sink.send({ payload: "relay_open", relay_open: { channel_id: channelId } })
      );
      if (sent) entry.sessionId = sessionId;
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
