/**
 * Relays: one `RelayStream` per `relay_open` from the gateway, bridged to a
 * fresh connection on the local sshd socket.
 *
 * Order per relay: open the stream (with the supervisor token), send
 * `init{channel_id}` first, connect to the socket, then pump bytes both ways
 * with backpressure and half-close (`core/bridge.ts`). Every relay rides the
 * session's channel, so all of them share one HTTP/2 connection.
 *
 * @module
 */
import net from "node:net";
import type { Duplex } from "node:stream";
import { bridge, type FrameCall, relayFrameDuplex } from "../core/bridge.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { RelayFrame, Wire } from "../core/protocol.ts";
import type { SupervisorEvents } from "./events.ts";

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
   * failures end the relay with a `relay failed` event.
   */
  open(channelId: string, open: OpenRelayCall): Promise<void> {
    const { events, logger } = this.#options;
    const log = logger.with({ channel_id: channelId });
    if (this.#closed) {
      log.warn("relay refused: supervisor is stopping");
      return Promise.resolve();
    }
    if (this.#live.has(channelId)) {
      log.warn("relay_open for a channel already being relayed; ignored");
      return Promise.resolve();
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
          if (result.error) {
            events.relayFailed({ channelId, error: result.error });
            log.info("relay failed", { error: result.error });
          } else {
            events.relayClosed({
              channelId,
              bytesToGateway: result.toGateway,
              bytesFromGateway: result.fromGateway,
            });
            log.debug("relay closed", {
              to_gateway: result.toGateway,
              from_gateway: result.fromGateway,
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
  ): Promise<{ error?: string; toGateway: number; fromGateway: number }> {
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
      return {
        error: `relay stream failed: ${early ? errorMessage(early) : "cancelled"}`,
        toGateway: 0,
        fromGateway: 0,
      };
    }
    const frames = relayFrameDuplex(call, { abort: () => call.cancel() });
    call.removeListener("error", onEarlyError);
    const result = await bridge(frames, socket);
    return {
      error: result.error ? errorMessage(result.error) : undefined,
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
