/**
 * The session client: keeps one `ConnectSupervisor` stream open to the
 * gateway, forever, and starts a relay for each `relay_open`.
 *
 * Per attempt: a fresh instance id, `hello{sandbox_id, instance_id}`, then the
 * first gateway message must be `session_accepted` (anything else, the stream
 * ending, or nothing within {@link SessionOptions.handshakeTimeoutMs} fails
 * the attempt). While accepted: a heartbeat every `max(interval, 5 s)`; the
 * gateway counts as silent after 3 such intervals without any message from
 * it. Any end of the stream, an error or silence → reconnect after an
 * exponential backoff (1 s → 30 s, ±20 % jitter). The backoff restarts from
 * 1 s after a **healthy** session: one that was accepted and lasted at least
 * {@link SessionOptions.healthyAfterMs} (30 s), so a gateway that accepts
 * and immediately drops sessions is not hammered.
 *
 * One gRPC channel (one HTTP/2 connection) carries the session and every
 * relay. A channel whose connection failed (or whose gateway fell silent) is
 * closed and replaced before the next attempt.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Backoff, sleep } from "../core/backoff.ts";
import { hostPort } from "../core/endpoint.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import {
  type GatewayMessage,
  OpenShellClient,
  type SupervisorMessage,
  type Wire,
} from "../core/protocol.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { grpcTlsCredentials } from "../core/tls.ts";
import type { SupervisorEvents } from "./events.ts";
import type { RelayCall, RelayManager } from "./relay.ts";

/** A client-side `ConnectSupervisor` call, as far as the session needs it. */
export interface ControlCall {
  write(message: Wire<SupervisorMessage>): boolean;
  end(): void;
  cancel(): void;
  on(event: "data", listener: (message: GatewayMessage) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  on(event: "end" | "close", listener: () => void): unknown;
}

/** One connection to the gateway: the session and every relay ride it. */
export interface SupervisorChannel {
  /** Opens `ConnectSupervisor`. */
  connectSupervisor(): ControlCall;
  /** Opens `RelayStream`. */
  relayStream(): RelayCall;
  /** Whether the connection failed (the channel should be replaced). */
  broken(): boolean;
  /** Closes the channel. */
  close(): void;
}

/** Makes a fresh channel. */
export type ChannelFactory = () => SupervisorChannel;

/** Client TLS material (PEM bytes): the CA, and a client certificate for mTLS. */
export interface TlsMaterial {
  ca: Uint8Array;
  cert?: Uint8Array;
  key?: Uint8Array;
}

/** Options of {@link grpcChannelFactory}. */
export interface GrpcChannelOptions {
  /** Gateway host (IPv6 without brackets). */
  host: string;
  /** Gateway port. */
  port: number;
  /** Client TLS for an `https://` endpoint; absent = plaintext. */
  tls?: TlsMaterial;
  /** Sent as `x-openshell-supervisor-token` on every call when set. */
  token?: string;
}

/** HTTP/2 flow-control window of the supervisor's channel (the default 64 KiB caps relays). */
export const FLOW_CONTROL_WINDOW_BYTES = 8 * 1024 * 1024;
/** Largest gRPC message either way (relay frames are 64 KiB). */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** The grpc-js channel options of the supervisor's channel. */
export const CHANNEL_OPTIONS: Readonly<grpc.ChannelOptions> = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc-node.flow_control_window": FLOW_CONTROL_WINDOW_BYTES,
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.initial_reconnect_backoff_ms": 1_000,
  "grpc.max_reconnect_backoff_ms": 30_000,
  // A replacement channel must not inherit a failed connection (or its
  // reconnect backoff) from grpc-js's process-wide subchannel pool.
  "grpc.use_local_subchannel_pool": 1,
};

/** Channels to the gateway over grpc-js. */
export function grpcChannelFactory(options: GrpcChannelOptions): ChannelFactory {
  const target = hostPort(options.host, options.port);
  return () => {
    const secure = options.tls ? grpcTlsCredentials(options.host, options.tls) : undefined;
    const client = new OpenShellClient(
      target,
      secure?.credentials ?? grpc.credentials.createInsecure(),
      { ...CHANNEL_OPTIONS, ...secure?.options },
    );
    const metadata = () => {
      const md = new grpc.Metadata();
      if (options.token) md.set(SUPERVISOR_TOKEN_METADATA, options.token);
      return md;
    };
    return {
      connectSupervisor: () => client.ConnectSupervisor(metadata()),
      relayStream: () => client.RelayStream(metadata()),
      broken: () => {
        const state = client.getChannel().getConnectivityState(false);
        return state === grpc.connectivityState.TRANSIENT_FAILURE ||
          state === grpc.connectivityState.SHUTDOWN;
      },
      close: () => client.close(),
    };
  };
}

/** Options of {@link SupervisorSession}. */
export interface SessionOptions {
  /** The sandbox this supervisor serves. */
  sandboxId: string;
  /** Fingerprint of its sshd's host key, sent in every hello (the gateway pins it). */
  hostKeyFingerprint?: string;
  /** Makes the channel to the gateway. */
  channels: ChannelFactory;
  /** Runs the relays (a {@link RelayManager}). */
  relays: Pick<RelayManager, "open">;
  /** Event emitter. */
  events: SupervisorEvents;
  /** Log sink. */
  logger: Logger;
  /** Reconnect backoff; default 1 s → 30 s with 20 % jitter. */
  backoff?: { initialMs: number; maxMs: number; jitter?: number; random?: () => number };
  /** A session that lasted this long resets the backoff; default 30 s. */
  healthyAfterMs?: number;
  /** Heartbeats are never more frequent than this; default 5 s. */
  minHeartbeatMs?: number;
  /** Intervals without a gateway message before it counts as silent; default 3. */
  silentAfterIntervals?: number;
  /** How long to wait for `session_accepted`; default 20 s. */
  handshakeTimeoutMs?: number;
  /** Monotonic clock in milliseconds (session age, gateway silence); default `performance.now`. */
  now?: () => number;
  /** Reports each accepted session (tests). */
  onAccepted?: (info: { sessionId: string; instanceId: string; heartbeatMs: number }) => void;
}

interface AttemptResult {
  sessionId?: string;
  acceptedFor?: number;
  error?: string;
  /** The channel should not be reused. */
  replaceChannel: boolean;
}

/** Default backoff of the reconnect loop. */
export const RECONNECT_BACKOFF = { initialMs: 1_000, maxMs: 30_000, jitter: 0.2 } as const;

/** The reconnecting session client. */
export class SupervisorSession {
  readonly #o: SessionOptions;
  #channel: SupervisorChannel | undefined;
  #sessionId: string | undefined;

  /** Creates the client; nothing happens until {@link run}. */
  constructor(options: SessionOptions) {
    this.#o = options;
  }

  /** The id of the live session, if one is accepted now. */
  get sessionId(): string | undefined {
    return this.#sessionId;
  }

  /**
   * Connects and reconnects until `signal` aborts; then ends the live session
   * (with a `session closed` event) and resolves. Never rejects. The channel
   * stays open for the caller to close ({@link closeChannel}) or to abandon
   * at exit.
   */
  async run(signal: AbortSignal): Promise<void> {
    const { events } = this.#o;
    const backoff = new Backoff({ ...RECONNECT_BACKOFF, ...this.#o.backoff });
    const healthyAfter = this.#o.healthyAfterMs ?? 30_000;
    let failures = 0;
    while (!signal.aborted) {
      if (this.#channel?.broken()) this.closeChannel();
      this.#channel ??= this.#o.channels();
      const result = await this.#attempt(this.#channel, signal);
      if (signal.aborted) {
        if (result.sessionId) {
          // The OCSF events are the record of the session (no second, text copy).
          events.sessionClosed({ sessionId: result.sessionId, reason: "supervisor stopping" });
        }
        break;
      }
      if (result.sessionId && (result.acceptedFor ?? 0) >= healthyAfter) {
        backoff.reset();
        failures = 0;
      }
      if (result.replaceChannel) this.closeChannel();
      failures++;
      const delay = backoff.next();
      const error = result.error ?? "session ended";
      events.sessionFailed({
        attempt: failures,
        error,
        retryInMs: delay,
        sessionId: result.sessionId,
      });
      try {
        await sleep(delay, signal);
      } catch {
        break;
      }
    }
  }

  /** Closes the current channel (the next attempt makes a new one). */
  closeChannel(): void {
    const channel = this.#channel;
    this.#channel = undefined;
    try {
      channel?.close();
    } catch {
      // already closed
    }
  }

  #attempt(channel: SupervisorChannel, signal: AbortSignal): Promise<AttemptResult> {
    return new SessionAttempt(this.#o, {
      channel,
      signal,
      track: (sessionId) => this.#sessionId = sessionId,
    }).run();
  }
}

/** What one {@link SessionAttempt} works with besides the session's options. */
interface AttemptContext {
  channel: SupervisorChannel;
  /** Aborting ends the attempt (gracefully). */
  signal: AbortSignal;
  /** Told the live session's id when accepted, undefined when the attempt ends. */
  track: (sessionId: string | undefined) => void;
}

/**
 * One attempt of a {@link SupervisorSession}: a fresh instance id and hello,
 * the handshake (only `session_accepted` may come first, within
 * {@link SessionOptions.handshakeTimeoutMs}), then heartbeats, the gateway's
 * silence watch and its relay requests until the stream ends, fails, falls
 * silent or the signal aborts.
 */
class SessionAttempt {
  readonly #o: SessionOptions;
  readonly #x: AttemptContext;
  readonly #instanceId = crypto.randomUUID();
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #timers: ReturnType<typeof setTimeout>[] = [];
  readonly #result = Promise.withResolvers<AttemptResult>();
  #call: ControlCall | undefined;
  #done = false;
  #sessionId: string | undefined;
  #acceptedAt = 0;
  #lastInbound: number;
  readonly #onAbort = () => this.#finish(undefined);

  /** Prepares an attempt (nothing is sent until {@link run}). */
  constructor(options: SessionOptions, context: AttemptContext) {
    this.#o = options;
    this.#x = context;
    this.#log = options.logger.with({ instance_id: this.#instanceId });
    this.#now = options.now ?? (() => performance.now());
    this.#lastInbound = this.#now();
  }

  /** Runs the attempt; resolves (never rejects) once it is over. */
  run(): Promise<AttemptResult> {
    const o = this.#o;
    this.#x.signal.addEventListener("abort", this.#onAbort, { once: true });
    let call: ControlCall;
    try {
      call = this.#call = this.#x.channel.connectSupervisor();
    } catch (err) {
      this.#finish(`cannot open the session stream: ${errorMessage(err)}`, true);
      return this.#result.promise;
    }
    call.on("data", (message: GatewayMessage) => this.#onMessage(call, message));
    call.on("error", (err: Error) => this.#finish(`session stream failed: ${errorMessage(err)}`));
    call.on("end", () => this.#finish("gateway closed the session stream"));
    this.#timers.push(setTimeout(() => {
      if (this.#sessionId === undefined) {
        this.#finish(`no session_accepted within ${o.handshakeTimeoutMs ?? 20_000} ms`, true);
      }
    }, o.handshakeTimeoutMs ?? 20_000));
    try {
      call.write({
        payload: "hello",
        hello: {
          sandbox_id: o.sandboxId,
          instance_id: this.#instanceId,
          ssh_host_key_fingerprint: o.hostKeyFingerprint ?? "",
        },
      });
    } catch (err) {
      this.#finish(`cannot send hello: ${errorMessage(err)}`, true);
    }
    return this.#result.promise;
  }

  /** Ends the attempt once: timers, the abort listener, the stream (ended when graceful). */
  #finish(error: string | undefined, replaceChannel = false): void {
    if (this.#done) return;
    this.#done = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#x.signal.removeEventListener("abort", this.#onAbort);
    this.#x.track(undefined);
    try {
      if (error === undefined) this.#call?.end();
      this.#call?.cancel();
    } catch {
      // the call is already over
    }
    const sessionId = this.#sessionId;
    this.#result.resolve({
      sessionId,
      acceptedFor: sessionId ? this.#now() - this.#acceptedAt : undefined,
      error,
      replaceChannel,
    });
  }

  #onMessage(call: ControlCall, message: GatewayMessage): void {
    this.#lastInbound = this.#now();
    if (this.#done) return;
    if (this.#sessionId === undefined) {
      if (message.payload === "session_accepted") {
        this.#onAccepted(call, message.session_accepted);
      } else if (message.payload === "session_rejected") {
        this.#finish(`session rejected: ${message.session_rejected.reason || "no reason given"}`);
      } else {
        this.#finish(`expected session_accepted, got ${message.payload ?? "an empty message"}`);
      }
      return;
    }
    switch (message.payload) {
      case "relay_open":
        this.#openRelay(call, message.relay_open.channel_id);
        break;
      case "heartbeat":
        break;
      case "relay_close":
        this.#log.debug("gateway closed a relay", { channel_id: message.relay_close.channel_id });
        break;
      default:
        this.#log.warn("unexpected gateway message; ignored", { payload: message.payload });
    }
  }

  /** The session is accepted: announce it and start heartbeats and the silence watch. */
  #onAccepted(
    call: ControlCall,
    accepted: { session_id: string; heartbeat_interval_secs: number },
  ): void {
    const o = this.#o;
    const sessionId = this.#sessionId = accepted.session_id;
    this.#acceptedAt = this.#now();
    this.#x.track(sessionId);
    const heartbeatMs = Math.max(
      accepted.heartbeat_interval_secs * 1000,
      o.minHeartbeatMs ?? 5_000,
    );
    o.events.sessionOpened({ sessionId, heartbeatSecs: Math.round(heartbeatMs / 1000) });
    const silentAfter = o.silentAfterIntervals ?? 3;
    this.#timers.push(setInterval(() => {
      if (this.#now() - this.#lastInbound > silentAfter * heartbeatMs) {
        this.#finish(
          `gateway silent for ${Math.round((this.#now() - this.#lastInbound) / 1000)} s ` +
            `(${silentAfter} heartbeat intervals)`,
          true,
        );
        return;
      }
      try {
        call.write({ payload: "heartbeat", heartbeat: {} });
      } catch (err) {
        this.#finish(`heartbeat failed: ${errorMessage(err)}`);
      }
    }, heartbeatMs));
    o.onAccepted?.({ sessionId, instanceId: this.#instanceId, heartbeatMs });
  }

  /** A `relay_open`: the relay runs on this channel; its failure is reported on the session. */
  #openRelay(call: ControlCall, channelId: string): void {
    if (!channelId) {
      this.#log.warn("relay_open without a channel id; ignored");
      return;
    }
    this.#o.relays.open(channelId, () => this.#x.channel.relayStream(), (reason) => {
      try {
        call.write({
          payload: "relay_open_result",
          relay_open_result: { channel_id: channelId, success: false, error: reason },
        });
      } catch {
        // the session is ending; the gateway gives the relay up with it
      }
    });
  }
}
