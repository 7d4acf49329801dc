/**
 * The supervisor plane: `ConnectSupervisor` (one control stream per
 * supervisor) and `RelayStream` (one data stream per relayed connection),
 * wired to the session registry.
 *
 * Beyond upstream: a session that stays silent for three heartbeat periods
 * is dropped (and its sandbox demoted) together with its relays: the
 * relays it carries end at once (the SSH client sees EOF instead of hanging
 * until the supervisor resumes) and the relays it was asked for are given
 * up. A `relay_open_result` refusal fails the waiting request at once. When
 * the sandbox was provisioned with a supervisor token the supervisor must
 * present it. The heartbeats and silence checks of all sessions run on one
 * timer ({@link HeartbeatWheel}), not one per session.
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Duplex } from "node:stream";
import { relayFrameDuplex } from "../core/bridge.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { GatewayMessage, RelayFrame, SupervisorMessage, Wire } from "../core/protocol.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { RELAY_CAPACITY_ERROR, type SessionRegistry } from "../core/registry.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho } from "../core/text.ts";
import { HeartbeatWheel } from "./heartbeats.ts";
import { failStream, metadataValue } from "./rpc.ts";
import type { SandboxRecord, Store } from "./store.ts";
import { tokenMatches } from "./tokens.ts";
import { LogThrottle } from "./client_auth.ts";

/** Supervisors never heartbeat faster than this, so silence is judged on it at least. */
export const MIN_SUPERVISOR_HEARTBEAT_SECS = 5;
/** Heartbeat periods of silence after which a session is dropped. */
export const MISSED_HEARTBEATS_LIMIT = 3;
/** How long a new stream may take to send its first message. */
export const FIRST_MESSAGE_TIMEOUT_MS = 30_000;

/** Options of {@link SupervisorPlane}. */
export interface SupervisorPlaneOptions {
  store: Store;
  registry: SessionRegistry<Duplex>;
  log: Logger;
  /** Interval announced in `session_accepted`. */
  heartbeatSecs: number;
  /** Largest relay frame payload sent to supervisors; default `RELAY_CHUNK_BYTES`. */
  relayChunkBytes?: number;
  /** Silence after which a session is dropped; default {@link silenceLimitMs} (tests shorten it). */
  silenceLimitMs?: number;
}

/** Longest supervisor error text the gateway repeats (in logs and to clients). */
const MAX_ECHOED_ERROR = 200;

type SessionCall = grpc.ServerDuplexStream<SupervisorMessage, Wire<GatewayMessage>>;
type RelayCall = grpc.ServerDuplexStream<RelayFrame, Wire<RelayFrame>>;

/** Silence (ms) after which a session with heartbeat `secs` is considered gone. */
export function silenceLimitMs(secs: number): number {
  return MISSED_HEARTBEATS_LIMIT * Math.max(secs, MIN_SUPERVISOR_HEARTBEAT_SECS) * 1000;
}

/**
 * Checks the supervisor token presented in `metadata` against the sandbox's
 * hash: none presented → UNAUTHENTICATED; a token that is not this
 * sandbox's (another sandbox's, a stale one) → PERMISSION_DENIED; a sandbox
 * that has no supervisor credential yet → PERMISSION_DENIED naming the
 * command that issues one.
 */
export function checkSupervisorToken(record: SandboxRecord, metadata: grpc.Metadata): void {
  const presented = metadataValue(metadata, SUPERVISOR_TOKEN_METADATA);
  const id = record.sandbox.id;
  if (!presented) {
    throw new StatusError(
      Code.UNAUTHENTICATED,
      `a supervisor token is required for sandbox ${id} (${SUPERVISOR_TOKEN_METADATA})`,
    );
  }
  const expected = record.secrets.supervisorTokenHash;
  if (!expected) {
    throw new StatusError(
      Code.PERMISSION_DENIED,
      `sandbox ${id} has no supervisor credential yet: issue one with ` +
        `\`openshell sandbox credentials ${record.sandbox.name} --out DIR\``,
    );
  }
  if (!tokenMatches(presented, expected)) {
    throw new StatusError(
      Code.PERMISSION_DENIED,
      `this supervisor credential is not valid for sandbox ${id}`,
    );
  }
}

/** Reads the first message of a stream, or fails after `timeoutMs`. */
function firstMessage<T>(call: grpc.ServerDuplexStream<T, unknown>, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      call.removeListener("data", onData);
      call.removeListener("end", onEnd);
      call.removeListener("error", onEnd);
      call.removeListener("cancelled", onEnd);
    };
    const onData = (m: T) => {
      cleanup();
      call.pause();
      resolve(m);
    };
    const onEnd = () => {
      cleanup();
      reject(new StatusError(Code.INVALID_ARGUMENT, "stream closed before its first message"));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new StatusError(Code.DEADLINE_EXCEEDED, "no first message in time"));
    }, timeoutMs);
    call.on("data", onData);
    call.on("end", onEnd);
    call.on("error", onEnd);
    call.on("cancelled", onEnd);
  });
}

/** Handlers of `ConnectSupervisor` and `RelayStream`. */
export class SupervisorPlane {
  readonly #o: SupervisorPlaneOptions;
  readonly #live = new Set<() => void>();
  /** Claimed relays by the session whose supervisor opened them. */
  readonly #relays = new Map<string, Set<Duplex>>();

  /** Every session's heartbeat and silence check, on one timer. */
  readonly #heartbeats: HeartbeatWheel;
  readonly #silenceMs: number;

  /** Creates the plane. */
  constructor(options: SupervisorPlaneOptions) {
    this.#o = options;
    this.#silenceMs = options.silenceLimitMs ?? silenceLimitMs(options.heartbeatSecs);
    this.#heartbeats = new HeartbeatWheel({
      periodMs: Math.min(options.heartbeatSecs * 1000, this.#silenceMs / 2),
    });
  }

  /** Number of live control streams. */
  get liveSessions(): number {
    return this.#live.size;
  }

  /** Relays claimed on `sessionId` that are still open. */
  relayCount(sessionId: string): number {
    return this.#relays.get(sessionId)?.size ?? 0;
  }

  /** Ends every live session (shutdown). */
  closeAll(): void {
    for (const stop of [...this.#live]) stop();
  }

  /** The `ConnectSupervisor` handler. */
  connectSupervisor = (call: SessionCall): void => {
    this.#runSession(call).catch((err) => failStream(call, err, this.#o.log));
  };

  /** The `RelayStream` handler. */
  relayStream = (call: RelayCall): void => {
    this.#runRelay(call).catch((err) => failStream(call, err, this.#o.log));
  };

  async #runSession(call: SessionCall): Promise<void> {
    const { store, registry, log, heartbeatSecs } = this.#o;
    const first = await firstMessage(call, FIRST_MESSAGE_TIMEOUT_MS);
    if (first.payload !== "hello") {
      throw new StatusError(Code.INVALID_ARGUMENT, "expected SupervisorHello as the first message");
    }
    const sandboxId = first.hello.sandbox_id.trim();
    if (!sandboxId) throw new StatusError(Code.INVALID_ARGUMENT, "hello.sandbox_id is required");
    // Credential first, existence second: a hello never reveals which sandbox ids exist.
    if (!metadataValue(call.metadata, SUPERVISOR_TOKEN_METADATA)) {
      throw new StatusError(
        Code.UNAUTHENTICATED,
        `a supervisor token is required (${SUPERVISOR_TOKEN_METADATA})`,
      );
    }
    const record = await store.getSandbox(sandboxId);
    if (!record) {
      throw new StatusError(
        Code.PERMISSION_DENIED,
        `this supervisor credential is not valid for sandbox ${truncateForEcho(sandboxId)}`,
      );
    }
    checkSupervisorToken(record, call.metadata);
    if (record.sandbox.phase === "SANDBOX_PHASE_DELETING") {
      throw new StatusError(Code.FAILED_PRECONDITION, `sandbox ${sandboxId} is being deleted`);
    }
    await this.#pinHostKey(record, first.hello.ssh_host_key_fingerprint.trim());

    const sessionId = crypto.randomUUID();
    const slog = log.with({ sandbox: sandboxId, session: sessionId });
    let closed = false;
    let lastInbound = Date.now();
    const markClosed = () => closed = true;
    call.on("cancelled", markClosed);
    call.on("close", markClosed);
    call.on("finish", markClosed);

    const end = (status?: StatusError) => {
      if (closed) return;
      closed = true;
      if (status) failStream(call, status);
      else call.end();
    };
    const send = (message: Wire<GatewayMessage>): boolean => {
      if (closed || call.writableEnded || call.destroyed) return false;
      try {
        call.write(message);
        return true;
      } catch {
        return false;
      }
    };

    send({
      session_accepted: { session_id: sessionId, heartbeat_interval_secs: heartbeatSecs },
    });
    const superseded = registry.register(sandboxId, sessionId, {
      send: (m) => send(m as Wire<GatewayMessage>),
      stop: () => end(new StatusError(Code.ABORTED, "superseded by a newer supervisor session")),
    });
    slog.info("supervisor session accepted", {
      instance: first.hello.instance_id,
      superseded,
    });

    const silenceMs = this.#silenceMs;
    const stopHeartbeat = this.#heartbeats.add(() => {
      if (!send({ heartbeat: {} })) return;
      if (Date.now() - lastInbound > silenceMs) {
        end(new StatusError(Code.UNAVAILABLE, "supervisor heartbeats missed"));
        cleanup();
        const gone = new StatusError(
          Code.UNAVAILABLE,
          "the sandbox's supervisor stopped answering (missed heartbeats)",
        );
        const pending = registry.dropSessionRelays(sandboxId, sessionId, gone);
        const open = this.#endRelays(sessionId, gone);
        slog.warn("supervisor missed its heartbeats; dropped the session and its relays", {
          relays_closed: open,
          relays_given_up: pending,
        });
      }
    });

    let cleaned = false;
    const cleanup = () => {
      if (cleaned) return;
      cleaned = true;
      stopHeartbeat();
      this.#live.delete(stopLive);
      if (registry.removeIfCurrent(sandboxId, sessionId)) {
        slog.info("supervisor session ended");
      }
      end();
    };
    const stopLive = () => {
      end(new StatusError(Code.UNAVAILABLE, "gateway shutting down"));
      cleanup();
    };
    this.#live.add(stopLive);

    // What a guest sends can log at most a few lines a minute per session.
    const guestLines = new LogThrottle({ perWindow: 20, windowMs: 60_000 });
    const guestWarn = (message: string, fields: Record<string, string | number>) => {
      const t = guestLines.take();
      if (t.log) slog.warn(message, t.skipped ? { ...fields, skipped: t.skipped } : fields);
    };
    call.on("data", (m: SupervisorMessage) => {
      lastInbound = Date.now();
      if (m.payload === "relay_open_result" && !m.relay_open_result.success) {
        const error = m.relay_open_result.error.slice(0, MAX_ECHOED_ERROR) || "no reason given";
        const failed = registry.failRelay(
          m.relay_open_result.channel_id,
          { sandboxId, sessionId },
          new StatusError(
            error.startsWith(RELAY_CAPACITY_ERROR) ? Code.RESOURCE_EXHAUSTED : Code.UNAVAILABLE,
            `the sandbox's supervisor could not open the relay: ${error}`,
          ),
        );
        guestWarn("supervisor could not open relay", {
          channel: m.relay_open_result.channel_id.slice(0, MAX_ECHOED_ERROR),
          error,
          pending: Number(failed),
        });
      } else if (m.payload === "relay_close") {
        slog.debug("supervisor closed relay", { channel: m.relay_close.channel_id });
      } else if (m.payload === "hello") {
        guestWarn("unexpected second hello ignored", {});
      }
    });
    call.on("end", cleanup);
    call.on("error", (err) => {
      slog.debug("supervisor stream error", { error: errorMessage(err) });
      cleanup();
    });
    call.on("cancelled", cleanup);
    call.on("close", cleanup);
    call.resume();
  }

  /**
   * Pins the host key a supervisor reports for a sandbox that has none
   * (bring-your-own hosts); refuses a hello whose key differs from the
   * pinned one.
   */
  async #pinHostKey(record: SandboxRecord, fingerprint: string): Promise<void> {
    const pinned = record.secrets.hostKeyFingerprint;
    if (!fingerprint) return;
    if (!/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(fingerprint)) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        "hello.ssh_host_key_fingerprint must be an OpenSSH SHA256 fingerprint",
      );
    }
    if (pinned) {
      if (pinned !== fingerprint) {
        throw new StatusError(
          Code.PERMISSION_DENIED,
          `the SSH host key of sandbox ${record.sandbox.id} changed (pinned ${pinned}, ` +
            `reported ${fingerprint}); restore the supervisor's host key file, or delete and ` +
            "recreate the sandbox",
        );
      }
      return;
    }
    await this.#o.store.updateSandbox(
      record.sandbox.id,
      (r) =>
        r.secrets.hostKeyFingerprint
          ? undefined
          : { ...r, secrets: { ...r.secrets, hostKeyFingerprint: fingerprint } },
    );
    this.#o.log.info("pinned the sandbox's SSH host key", {
      sandbox: record.sandbox.id,
      fingerprint,
    });
  }

  async #runRelay(call: RelayCall): Promise<void> {
    const { store, registry, log } = this.#o;
    const first = await firstMessage(call, FIRST_MESSAGE_TIMEOUT_MS);
    if (first.payload !== "init" || !first.init.channel_id) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        "expected RelayInit with a channel_id as the first frame",
      );
    }
    const channelId = first.init.channel_id;
    const sandboxId = registry.pendingSandboxId(channelId);
    if (sandboxId) {
      const record = await store.getSandbox(sandboxId);
      if (!record) {
        throw new StatusError(Code.NOT_FOUND, "the relay's sandbox no longer exists");
      }
      checkSupervisorToken(record, call.metadata);
    } else {
      // Unknown channel: still no claim without some supervisor's token.
      if (!metadataValue(call.metadata, SUPERVISOR_TOKEN_METADATA)) {
        throw new StatusError(Code.UNAUTHENTICATED, "a supervisor token is required");
      }
    }
    const bytes = relayFrameDuplex(call, {
      role: "server",
      chunkBytes: this.#o.relayChunkBytes,
      abort: (err) => failStream(call, err ?? new StatusError(Code.CANCELLED, "relay closed")),
    });
    try {
      this.#track(registry.claimRelay(channelId, bytes).sessionId, bytes);
    } catch (err) {
      bytes.removeAllListeners();
      bytes.on("error", () => {});
      failStream(call, err);
      log.debug("relay claim refused", { channel: channelId, error: errorMessage(err) });
      return;
    }
    log.debug("relay claimed", { channel: channelId, sandbox: sandboxId });
  }

  #track(sessionId: string, relay: Duplex): void {
    let set = this.#relays.get(sessionId);
    if (!set) this.#relays.set(sessionId, set = new Set());
    set.add(relay);
    relay.once("close", () => {
      set.delete(relay);
      if (set.size === 0 && this.#relays.get(sessionId) === set) this.#relays.delete(sessionId);
    });
  }

  /** Ends every open relay of `sessionId` with `err`; returns how many. */
  #endRelays(sessionId: string, err: StatusError): number {
    const set = this.#relays.get(sessionId);
    if (!set) return 0;
    this.#relays.delete(sessionId);
    const relays = [...set];
    for (const relay of relays) relay.destroy(err);
    return relays.length;
  }
}
