/**
 * The supervisor plane: `ConnectSupervisor` (one control stream per
 * supervisor) and `RelayStream` (one data stream per relayed connection),
 * wired to the session registry.
 *
 * Beyond upstream: a session that stays silent for three heartbeat periods
 * is dropped (and its sandbox demoted), and when the sandbox was provisioned
 * with a supervisor token the supervisor must present it.
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import { timingSafeEqual } from "node:crypto";
import type { Duplex } from "node:stream";
import { relayFrameDuplex } from "../core/bridge.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { GatewayMessage, RelayFrame, SupervisorMessage, Wire } from "../core/protocol.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import type { SessionRegistry } from "../core/registry.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho } from "../core/text.ts";
import { failStream, metadataValue } from "./rpc.ts";
import type { SandboxRecord, Store } from "./store.ts";

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
  /** Whether provisioned supervisor tokens are enforced. */
  requireTokens: boolean;
  /** Largest relay frame payload sent to supervisors; default `RELAY_CHUNK_BYTES`. */
  relayChunkBytes?: number;
}

type SessionCall = grpc.ServerDuplexStream<SupervisorMessage, Wire<GatewayMessage>>;
type RelayCall = grpc.ServerDuplexStream<RelayFrame, Wire<RelayFrame>>;

/** Silence (ms) after which a session with heartbeat `secs` is considered gone. */
export function silenceLimitMs(secs: number): number {
  return MISSED_HEARTBEATS_LIMIT * Math.max(secs, MIN_SUPERVISOR_HEARTBEAT_SECS) * 1000;
}

/** Checks the supervisor token presented in `metadata` against the sandbox's. */
export function checkSupervisorToken(
  record: SandboxRecord,
  metadata: grpc.Metadata,
  required: boolean,
): void {
  const expected = record.secrets.supervisorToken;
  if (!required || !expected) return;
  const presented = metadataValue(metadata, SUPERVISOR_TOKEN_METADATA);
  const a = new TextEncoder().encode(presented);
  const b = new TextEncoder().encode(expected);
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new StatusError(
      Code.UNAUTHENTICATED,
      `supervisor token missing or wrong for sandbox ${record.sandbox.id}`,
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

  /** Creates the plane. */
  constructor(options: SupervisorPlaneOptions) {
    this.#o = options;
  }

  /** Number of live control streams. */
  get liveSessions(): number {
    return this.#live.size;
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
    const record = await store.getSandbox(sandboxId);
    if (!record) {
      throw new StatusError(Code.NOT_FOUND, `sandbox ${truncateForEcho(sandboxId)} not found`);
    }
    checkSupervisorToken(record, call.metadata, this.#o.requireTokens);
    if (record.sandbox.phase === "SANDBOX_PHASE_DELETING") {
      throw new StatusError(Code.FAILED_PRECONDITION, `sandbox ${sandboxId} is being deleted`);
    }

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

    const heartbeat = setInterval(() => {
      if (!send({ heartbeat: {} })) return;
      if (Date.now() - lastInbound > silenceLimitMs(heartbeatSecs)) {
        slog.warn("supervisor missed its heartbeats; dropping the session");
        end(new StatusError(Code.UNAVAILABLE, "supervisor heartbeats missed"));
        cleanup();
      }
    }, Math.min(heartbeatSecs * 1000, silenceLimitMs(heartbeatSecs) / 2));

    let cleaned = false;
    const cleanup = () => {
      if (cleaned) return;
      cleaned = true;
      clearInterval(heartbeat);
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

    call.on("data", (m: SupervisorMessage) => {
      lastInbound = Date.now();
      if (m.payload === "relay_open_result" && !m.relay_open_result.success) {
        slog.warn("supervisor could not open relay", {
          channel: m.relay_open_result.channel_id,
          error: m.relay_open_result.error,
        });
      } else if (m.payload === "relay_close") {
        slog.debug("supervisor closed relay", { channel: m.relay_close.channel_id });
      } else if (m.payload === "hello") {
        slog.warn("unexpected second hello ignored");
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
    if (sandboxId && this.#o.requireTokens) {
      const record = await store.getSandbox(sandboxId);
      if (record) checkSupervisorToken(record, call.metadata, true);
    }
    const bytes = relayFrameDuplex(call, {
      role: "server",
      chunkBytes: this.#o.relayChunkBytes,
      abort: (err) => failStream(call, err ?? new StatusError(Code.CANCELLED, "relay closed")),
    });
    try {
      registry.claimRelay(channelId, bytes);
    } catch (err) {
      bytes.removeAllListeners();
      bytes.on("error", () => {});
      failStream(call, err);
      log.debug("relay claim refused", { channel: channelId, error: errorMessage(err) });
      return;
    }
    log.debug("relay claimed", { channel: channelId, sandbox: sandboxId });
  }
}
