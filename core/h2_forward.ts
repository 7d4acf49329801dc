/**
 * The GOAWAY-safe front of a grpc-js server (denoland/deno#36788, see
 * `goaway_filter.ts`): grpc-js listens on an internal Unix socket that only
 * this process uses, and every client connection reaches it through
 * {@link forwardH2}, which removes the client's GOAWAY frames on the way and
 * counts the connection's open streams. {@link GrpcFront} is the plain
 * version of that listener (a Unix socket with a connection cap), used by
 * the VM driver; the gateway's public listener (`gateway/listener.ts`) adds
 * HTTP/1.1, TLS and per-peer limits around the same {@link forwardH2}.
 *
 * Closing is always by destroying sockets, never by an HTTP/2 GOAWAY: a
 * Deno grpc-js client can itself die on a server GOAWAY.
 *
 * @module
 */
import net from "node:net";
import { Duplex } from "node:stream";
import { GoawayFilter, H2FrameScanner, H2StreamTracker } from "./goaway_filter.ts";
import { errorMessage, type Logger } from "./log.ts";

/**
 * `grpc.max_concurrent_streams` of every grpc-js server we run: more
 * streams on one connection are refused with RST_STREAM(REFUSED_STREAM).
 * A supervisor needs one session stream plus one per open relay (its relays
 * are capped at 32 per sandbox).
 */
export const MAX_CONCURRENT_STREAMS = 256;

/**
 * Hands an in-process connection to an HTTP/2 server, e.g.
 * `(stream) => http2Server.emit("connection", stream)` for the node:http2
 * server of a bound grpc-js server.
 */
export type InjectH2 = (stream: Duplex) => void;

/** Options of {@link forwardH2}. */
export interface ForwardH2Options {
  /** The accepted client connection (may be paused; it is resumed). */
  client: net.Socket;
  /** Unix socket of the internal grpc-js server (used when `inject` is absent). */
  innerPath: string;
  /**
   * Hands the filtered connection to the server in this process instead of
   * dialling `innerPath` (see {@link injectH2}).
   */
  inject?: InjectH2;
  /** Bytes already read from the client (the preface, usually). */
  first?: Uint8Array;
  /** Strip client GOAWAY frames (default true; false only to reproduce denoland/deno#36788). */
  filterGoaway?: boolean;
  /** Called with the number of GOAWAY frames just removed. */
  onGoawayDropped?: (n: number) => void;
  /** Called when the count of open streams changes. */
  onStreams?: (open: number) => void;
  /** Called with the internal socket as soon as it exists (to track it). */
  onInner?: (inner: net.Socket) => void;
}

/** A forwarded connection. */
export interface H2Link {
  /** Streams open on it now. */
  readonly openStreams: number;
  /** Ends both sides at once (no GOAWAY is sent). */
  destroy(): void;
}

/** How often an internal connection refused for a full backlog is dialled again. */
export const INNER_CONNECT_ATTEMPTS = 12;

/** Errors of a Unix-socket connect that mean "busy, try again" (its accept backlog is full). */
function isBusy(err: Error): boolean {
  const code = (err as { code?: string }).code;
  return code === "EAGAIN" || code === "EWOULDBLOCK" ||
    /EAGAIN|temporarily unavailable/i.test(err.message);
}

/**
 * Pipes an HTTP/2 client to the internal gRPC server, GOAWAY-filtered on the
 * way in. A burst of new connections can fill the internal socket's accept
 * backlog (connect fails with EAGAIN): the dial is then retried a few times
 * with a short backoff, the client's bytes held meanwhile, instead of
 * dropping the client.
 */
export function forwardH2(options: ForwardH2Options): H2Link {
  const { client } = options;
  const tracker = new H2StreamTracker(options.onStreams);
  const up = options.filterGoaway === false
    ? new H2FrameScanner({ preface: true, onFrame: tracker.client })
    : new GoawayFilter(tracker.client);
  const down = new H2FrameScanner({ onFrame: tracker.server });
  if (options.inject) return injectH2(options, options.inject, up, down, tracker);
  let droppedSeen = 0;
  let inner!: net.Socket;
  let connected = false;
  let done = false;
  let attempts = 0;
  /** Dials given up on for a full backlog: their close does not end the client. */
  const retired = new Set<net.Socket>();
  /** Client bytes (already filtered) waiting for the internal connection. */
  let held: Uint8Array[] = [];
  let clientEnded = false;
  const teardown = () => {
    done = true;
    client.destroy();
    inner?.destroy();
  };
  const toInner = (chunk: Uint8Array) => {
    const out = up.push(chunk);
    if (up.dropped !== droppedSeen) {
      options.onGoawayDropped?.(up.dropped - droppedSeen);
      droppedSeen = up.dropped;
    }
    if (out.length === 0) return;
    if (!connected) {
      held.push(out);
      return;
    }
    if (!inner.write(out)) {
      client.pause();
      inner.once("drain", () => client.resume());
    }
  };
  const dial = () => {
    const socket = net.connect({ path: options.innerPath, allowHalfOpen: true });
    inner = socket;
    options.onInner?.(socket);
    socket.once("connect", () => {
      connected = true;
      for (const b of held) socket.write(b);
      held = [];
      if (clientEnded) socket.end();
    });
    socket.on("error", (err: Error) => {
      if (!connected && !done && isBusy(err) && attempts < INNER_CONNECT_ATTEMPTS) {
        attempts++;
        retired.add(socket);
        socket.destroy();
        setTimeout(() => {
          if (!done && !client.destroyed) dial();
        }, Math.min(5 * 2 ** attempts, 250));
        return;
      }
      teardown();
    });
    socket.on("close", () => {
      if (!retired.has(socket)) {
        done = true;
        client.destroy();
      }
    });
    socket.on("end", () => client.end());
    socket.on("data", (chunk: Uint8Array) => {
      down.push(chunk);
      if (!client.write(chunk)) {
        socket.pause();
        client.once("drain", () => socket.resume());
      }
    });
  };
  client.on("error", teardown);
  client.on("close", () => {
    done = true;
    inner?.destroy();
  });
  client.on("end", () => {
    clientEnded = true;
    if (connected) inner.end();
  });
  dial();
  if (options.first && options.first.length > 0) toInner(options.first);
  client.on("data", toInner);
  client.resume();
  return {
    get openStreams() {
      return tracker.open;
    },
    destroy: teardown,
  };
}

/**
 * The in-process form of {@link forwardH2}: the server reads the client's
 * bytes through a Duplex, after the same filter, and writes straight to
 * the client socket. Compared with the hop through the internal Unix
 * socket this saves, per chunk and direction, a send and a receive
 * (two kernel copies) and a pass through a second socket's stream
 * machinery. Writes the server makes while the client socket is still
 * flushing are gathered by the Duplex and leave as one corked write.
 */
function injectH2(
  options: ForwardH2Options,
  inject: InjectH2,
  up: H2FrameScanner,
  down: H2FrameScanner,
  tracker: H2StreamTracker,
): H2Link {
  const { client } = options;
  let droppedSeen = 0;
  let done = false;
  const teardown = () => {
    if (done) return;
    done = true;
    client.destroy();
    inner.destroy();
  };
  /** Calls `cb` once the client socket can take more (backpressure for the server). */
  const whenWritable = (ok: boolean, cb: (err?: Error | null) => void) => {
    if (ok) return cb();
    const onDrain = () => {
      client.removeListener("close", onClose);
      cb();
    };
    const onClose = () => {
      client.removeListener("drain", onDrain);
      cb(new Error("the client connection closed"));
    };
    client.once("drain", onDrain);
    client.once("close", onClose);
  };
  const inner = new Duplex({
    // As the hop's internal socket: the client's end-of-stream ends the
    // server's side too (once flushed), so a closed connection gives its fd back.
    allowHalfOpen: false,
    read() {
      if (!done) client.resume();
    },
    write(chunk: Uint8Array, _enc, cb) {
      down.push(chunk);
      whenWritable(client.write(chunk), cb);
    },
    writev(chunks: { chunk: Uint8Array }[], cb) {
      client.cork();
      let ok = true;
      for (const { chunk } of chunks) {
        down.push(chunk);
        ok = client.write(chunk);
      }
      client.uncork();
      whenWritable(ok, cb);
    },
    final(cb) {
      // Finished once flushed: a stream that also ended its reading side is
      // destroyed right after, which must not cut the client's last bytes.
      client.end(() => cb());
    },
    destroy(err, cb) {
      done = true;
      client.destroy();
      cb(err);
    },
  });
  // What grpc-js reads from its session's socket (peer address in traces).
  Object.defineProperties(inner, {
    remoteAddress: { get: () => client.remoteAddress },
    remotePort: { get: () => client.remotePort },
    localAddress: { get: () => client.localAddress },
    localPort: { get: () => client.localPort },
  });
  inner.on("error", () => {}); // the server reports its own errors; the client is torn down
  const toInner = (chunk: Uint8Array) => {
    const out = up.push(chunk);
    if (up.dropped !== droppedSeen) {
      options.onGoawayDropped?.(up.dropped - droppedSeen);
      droppedSeen = up.dropped;
    }
    if (out.length === 0 || done) return;
    if (!inner.push(out)) client.pause();
  };
  client.on("error", teardown);
  client.on("close", () => {
    done = true;
    inner.destroy();
  });
  client.on("end", () => {
    if (!done) inner.push(null);
  });
  inject(inner);
  if (options.first && options.first.length > 0) toInner(options.first);
  client.on("data", toInner);
  client.resume();
  return {
    get openStreams() {
      return tracker.open;
    },
    destroy: teardown,
  };
}

/** Options of {@link GrpcFront}. */
export interface GrpcFrontOptions {
  /** Unix socket clients connect to. */
  path: string;
  /** Unix socket of the internal grpc-js server. */
  innerPath: string;
  /** Most client connections open at once; more are closed at once. */
  maxConnections: number;
  log: Logger;
  /** Strip client GOAWAY frames (default true; false only to reproduce denoland/deno#36788). */
  filterGoaway?: boolean;
}

/** Counters of a {@link GrpcFront}. */
export interface GrpcFrontStats {
  /** Client connections open now. */
  open: number;
  /** Connections closed at once because {@link GrpcFrontOptions.maxConnections} were open. */
  refused: number;
  /** GOAWAY frames removed. */
  goawaysDropped: number;
}

/** A Unix-socket listener forwarding every connection to a grpc-js server (see the module docs). */
export class GrpcFront {
  readonly #o: GrpcFrontOptions;
  readonly #clients = new Set<net.Socket>();
  readonly #sockets = new Set<net.Socket>();
  #server?: net.Server;
  #refused = 0;
  #goaways = 0;

  /** Creates the front; {@link listen} binds it. */
  constructor(options: GrpcFrontOptions) {
    this.#o = options;
  }

  /** Counters. */
  get stats(): GrpcFrontStats {
    return { open: this.#clients.size, refused: this.#refused, goawaysDropped: this.#goaways };
  }

  /** Binds the Unix socket (mode 0600). */
  async listen(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (s) => this.#accept(s));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#o.path, () => {
        server.removeListener("error", reject);
        server.on(
          "error",
          (err) => this.#o.log.error("listener error", { error: errorMessage(err) }),
        );
        resolve();
      });
    });
    await Deno.chmod(this.#o.path, 0o600).catch(() => {});
  }

  /** Stops listening and closes every connection at once. */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    const closed = server
      ? new Promise<void>((resolve) => server.close(() => resolve()))
      : Promise.resolve();
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await closed;
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    socket.on("error", (err: Error) => {
      this.#o.log.debug("connection error", { error: errorMessage(err) });
    });
  }

  #accept(socket: net.Socket): void {
    if (this.#clients.size >= this.#o.maxConnections) {
      this.#refused++;
      if (this.#refused === 1 || this.#refused % 100 === 0) {
        this.#o.log.warn("connection limit reached; closing new connections", {
          max: this.#o.maxConnections,
          refused: this.#refused,
        });
      }
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    this.#clients.add(socket);
    socket.once("close", () => this.#clients.delete(socket));
    this.#track(socket);
    forwardH2({
      client: socket,
      innerPath: this.#o.innerPath,
      filterGoaway: this.#o.filterGoaway,
      onGoawayDropped: (n) => this.#goaways += n,
      onInner: (inner) => this.#track(inner),
    });
  }
}
