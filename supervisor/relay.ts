/**
 * Relays: one `RelayStream` per `relay_open` from the gateway, bridged to a
 * fresh connection on the local sshd socket.
 *
 * Order per relay: open the stream (with the supervisor token), send
 * `init{channel_id}` first, connect to the socket, then pump bytes both ways
 * with backpressure and half-close (`core/bridge.ts`). Every relay rides the
 * session's channel, so all of them share one HTTP/2 connection.
 *
 * At most {@link MAX_RELAYS} relays run at once: beyond that a `relay_open`
 * is refused (the session answers `relay_open_result{success: false}` with
 * an error starting with `RELAY_CAPACITY_ERROR`, which the gateway turns
 * into RESOURCE_EXHAUSTED / HTTP 429) and nothing is opened, so a flood of
 * `relay_open`s cannot make the supervisor open streams or fork sshd.
 *
 * @module
 */
import net from "node:net";
import type { Duplex } from "node:stream";
import { bridge, type FrameCall, relayFrameDuplex } from "../core/bridge.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { RelayFrame, Wire } from "../core/protocol.ts";
import { RELAY_CAPACITY_ERROR } from "../core/registry.ts";
import { Code } from "../core/status.ts";
import type { SupervisorEvents } from "./events.ts";

/** Most relays one supervisor runs at once (20 SSH tunnels per sandbox plus execs, with room). */
export const MAX_RELAYS = 64;

/** A client-side `RelayStream` call, as far as a relay needs it. */
export interface RelayCall extends FrameCall {
  /** Cancels the call (the gateway sees CANCELLED). */
  cancel(): void;
  /** Removes a listener added with `on`. */
  removeListener(event: "error", listener: (err: Error) => void): unknown;
}

/** Opens a `RelayStream` call; supplied by the session (it owns the channel). */
export type OpenRelayCall = () => RelayCall;

/** Options of {@link RelayManager}. */
export interface RelayManagerOptions {
  /** The sshd Unix socket. */
  socketPath: string;
  /** Event emitter. */
  events: SupervisorEvents;
  /** Log sink. */
  logger: Logger;
  /** Connects to the socket; default `node:net` with half-open allowed. */
  connect?: (path: string) => Promise<Duplex>;
  /** Most relays at once; default {@link MAX_RELAYS}. */
  maxRelays?: number;
}

/** Called with a one-line reason when a relay is refused (nothing was opened). */
export type RefuseRelay = (reason: string) => void;

/**
 * Why a relay that ended with `err` was closed on purpose, or `undefined`
 * when `err` is a real failure: a CANCELLED status is the gateway closing
 * the relay (an exec finished, an SSH client went away) or the supervisor
 * cancelling it while it stops; neither is a failure of the relay.
 */
export function cancelledRelayReason(err: unknown): string | undefined {
  if ((err as { code?: unknown } | undefined)?.code !== Code.CANCELLED) return undefined;
  return /on client/i.test(errorMessage(err))
    ? "cancelled by the supervisor"
    : "closed by the gateway";
}

/** Connects to a Unix socket as a half-open-capable Duplex. */
export function connectUnix(path: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path, allowHalfOpen: true });
    const onError = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.removeListener("error", onError);
      resolve(socket);
    });
  });
}

/** Runs relays and keeps track of the live ones. */
export class RelayManager {
  readonly #options: RelayManagerOptions;
  readonly #live = new Map<string, { cancel: () => void; done: Promise<void> }>();
  #closed = false;
  /** Refusals for capacity since the last one was logged. */
  #refused = 0;

  /** Creates a manager for relays to `options.socketPath`. */
  constructor(options: RelayManagerOptions) {
    this.#options = options;
  }

  /** Relays running now. */
  get active(): number {
    return this.#live.size;
  }

  /**
   * Starts the relay for `channelId` on a call from `open`. Never throws:
   * failures end the relay with a `relay failed` event. When the supervisor
   * is stopping or already runs {@link RelayManagerOptions.maxRelays}
   * relays, nothing is opened and `refuse` hears why.
   */
  open(channelId: string, open: OpenRelayCall, refuse?: RefuseRelay): Promise<void> {
    const { events, logger } = this.#options;
    const log = logger.with({ channel_id: channelId.slice(0, 64) });
    if (this.#closed) {
      log.warn("relay refused: supervisor is stopping");
      refuse?.("the sandbox's supervisor is stopping");
      return Promise.resolve();
    }
    if (this.#live.has(channelId)) {
      log.warn("relay_open for a channel already being relayed; ignored");
      return Promise.resolve();
    }
    const max = this.#options.maxRelays ?? MAX_RELAYS;
    if (this.#live.size >= max) {
      // Logged once per episode: a flood must not become a flood of log lines.
      if (this.#refused++ === 0) log.warn("relay refused: at capacity", { max_relays: max });
      refuse?.(`${RELAY_CAPACITY_ERROR}: ${max} relays open on this sandbox's supervisor`);
      return Promise.resolve();
    }
    if (this.#refused > 0) {
      log.info("relay capacity available again", { refused: this.#refused });
      this.#refused = 0;
    }
    events.relayOpened({ channelId });
    let call: RelayCall | undefined;
    let cancelled = false;
    const cancel = () => {
      cancelled = true;
      try {
        call?.cancel();
      } catch {
        // already finished
      }
    };
    const done = this.#run(channelId, open, (c) => call = c, () => cancelled)
      .then(
        (result) => {
          // The OCSF event is the record of how the relay ended (no second, text copy).
          if (result.error) {
            events.relayFailed({ channelId, error: result.error });
          } else {
            events.relayClosed({
              channelId,
              bytesToGateway: result.toGateway,
              bytesFromGateway: result.fromGateway,
              ...(result.closed ? { reason: result.closed } : {}),
            });
          }
        },
      )
      .finally(() => this.#live.delete(channelId));
    this.#live.set(channelId, { cancel, done });
    return done;
  }

  async #run(
    channelId: string,
    open: OpenRelayCall,
    setCall: (call: RelayCall) => void,
    isCancelled: () => boolean,
  ): Promise<{ error?: string; closed?: string; toGateway: number; fromGateway: number }> {
    let call: RelayCall;
    try {
      call = open();
    } catch (err) {
      return {
        error: `cannot open relay stream: ${errorMessage(err)}`,
        toGateway: 0,
        fromGateway: 0,
      };
    }
    setCall(call);
    // Until the bridge owns the call, remember an early failure instead of crashing on it.
    let early: Error | undefined;
    const onEarlyError = (err: Error) => early ??= err;
    call.on("error", onEarlyError);
    try {
      call.write({ payload: "init", init: { channel_id: channelId } } as Wire<RelayFrame>);
    } catch (err) {
      call.cancel();
      return { error: `cannot send init: ${errorMessage(err)}`, toGateway: 0, fromGateway: 0 };
    }

    let socket: Duplex;
    try {
      socket = await (this.#options.connect ?? connectUnix)(this.#options.socketPath);
    } catch (err) {
      call.cancel();
      return {
        error: `cannot connect to sshd socket: ${errorMessage(err)}`,
        toGateway: 0,
        fromGateway: 0,
      };
    }
    if (early || isCancelled()) {
      socket.destroy();
      call.cancel();
      const closed = early ? cancelledRelayReason(early) : "cancelled by the supervisor";
      return closed ? { closed, toGateway: 0, fromGateway: 0 } : {
        error: `relay stream failed: ${errorMessage(early)}`,
        toGateway: 0,
        fromGateway: 0,
      };
    }
    const frames = relayFrameDuplex(call, { abort: () => call.cancel() });
    call.removeListener("error", onEarlyError);
    const result = await bridge(frames, socket);
    const closed = cancelledRelayReason(result.error);
    return {
      ...(result.error && !closed ? { error: errorMessage(result.error) } : {}),
      ...(closed ? { closed } : {}),
      toGateway: result.bToA,
      fromGateway: result.aToB,
    };
  }

  /** Cancels every live relay and waits until all have ended; refuses new ones. */
  async closeAll(): Promise<void> {
    this.#closed = true;
    const live = [...this.#live.values()];
    for (const relay of live) relay.cancel();
    await Promise.allSettled(live.map((r) => r.done));
  }
}
