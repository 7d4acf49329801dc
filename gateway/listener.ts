/**
 * The gateway's one public port: accepts TCP (or TLS) connections, tells
 * HTTP/2 from HTTP/1.1 by the first bytes (or ALPN), and
 *
 * - forwards HTTP/2 (gRPC) to the internal grpc-js server on a Unix socket,
 *   removing client GOAWAY frames on the way (see `goaway_filter.ts`);
 * - hands HTTP/1.1 request heads to the gateway's HTTP handler.
 *
 * No client behaviour can crash the process here: resets, half-open or
 * vanished peers, garbage and graceful closes all end in closed sockets.
 *
 * @module
 */
import net from "node:net";
import tls from "node:tls";
import { errorMessage, type Logger } from "../core/log.ts";
import { GoawayFilter, looksLikeH2 } from "./goaway_filter.ts";
import {
  findHeadEnd,
  httpResponse,
  MAX_HEAD_BYTES,
  parseRequestHead,
  type RequestHead,
} from "./http1.ts";
import { HttpError } from "./http1.ts";
import { clientRefusal, LogThrottle } from "./client_auth.ts";

/** How long a new connection may take to send its first request head. */
export const HEAD_TIMEOUT_MS = 10_000;

/** Handles one HTTP/1.1 request; owns the socket afterwards. */
export type HttpHandler = (
  head: RequestHead,
  socket: net.Socket,
  rest: Uint8Array,
) => Promise<void>;

/** Options of {@link GatewayListener}. */
export interface GatewayListenerOptions {
  bind: string;
  port: number;
  /**
   * PEM server certificate and key; plaintext when absent. With `clientCa`
   * every client must present a certificate signed by it (mTLS).
   */
  tls?: { cert: string; key: string; clientCa?: string };
  /** Unix socket of the internal grpc-js server. */
  grpcSocketPath: string;
  http: HttpHandler;
  log: Logger;
  /** Strip client GOAWAY frames (default true; false only to reproduce denoland/deno#36788). */
  filterGoaway?: boolean;
}

/** The listening socket and every connection it accepted. */
export class GatewayListener {
  readonly #o: GatewayListenerOptions;
  readonly #sockets = new Set<net.Socket>();
  #server?: net.Server;
  #goawaysDropped = 0;
  readonly #refusals = new LogThrottle();

  /** Creates a listener; {@link listen} binds it. */
  constructor(options: GatewayListenerOptions) {
    this.#o = options;
  }

  /** Open client and internal connections. */
  get connectionCount(): number {
    return this.#sockets.size;
  }

  /** GOAWAY frames removed so far. */
  get goawaysDropped(): number {
    return this.#goawaysDropped;
  }

  /** Binds; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number }> {
    const onConnection = (socket: net.Socket) => this.#accept(socket);
    const server = this.#o.tls
      ? tls.createServer({
        cert: this.#o.tls.cert,
        key: this.#o.tls.key,
        // Every handshake completes; #accept judges the client certificate itself so the
        // refusal is logged with its reason (see client_auth.ts).
        ...(this.#o.tls.clientCa
          ? { ca: this.#o.tls.clientCa, requestCert: true, rejectUnauthorized: false }
          : {}),
        ALPNProtocols: ["h2", "http/1.1"],
        allowHalfOpen: true,
      }, onConnection)
      : net.createServer({ allowHalfOpen: true }, onConnection);
    server.on("tlsClientError", (err: Error) => {
      this.#o.log.debug("TLS handshake failed", { error: errorMessage(err) });
    });
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#o.port, this.#o.bind, () => {
        server.removeListener("error", reject);
        server.on(
          "error",
          (err) => this.#o.log.error("listener error", { error: errorMessage(err) }),
        );
        const addr = server.address() as net.AddressInfo;
        resolve({ host: addr.address, port: addr.port });
      });
    });
  }

  /** Stops accepting new connections. */
  stopAccepting(): Promise<void> {
    const server = this.#server;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  /** Closes every connection at once (no HTTP/2 GOAWAY is sent). */
  destroyAll(): void {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    socket.on("error", (err: Error) => {
      this.#o.log.debug("connection error", { error: errorMessage(err) });
    });
  }

  #accept(socket: net.Socket): void {
    this.#track(socket);
    const clientCa = this.#o.tls?.clientCa;
    if (clientCa) {
      const refusal = clientRefusal(socket as tls.TLSSocket, clientCa);
      if (refusal) {
        const t = this.#refusals.take();
        if (t.log) {
          this.#o.log.warn(`client refused: ${refusal}`, {
            peer: socket.remoteAddress,
            ...(t.skipped ? { skipped: t.skipped } : {}),
          });
        }
        socket.destroy();
        return;
      }
    }
    socket.setNoDelay(true);
    const alpn = (socket as tls.TLSSocket).alpnProtocol;
    if (alpn === "h2") {
      this.#forwardH2(socket, new Uint8Array());
      return;
    }
    let buffered = new Uint8Array();
    const timer = setTimeout(() => {
      cleanup();
      socket.end(httpResponse(408, { body: "no request in time" }));
    }, HEAD_TIMEOUT_MS);
    const cleanup = () => {
      clearTimeout(timer);
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
      socket.removeListener("close", cleanup);
    };
    const onEnd = () => {
      cleanup();
      socket.end();
    };
    const onData = (chunk: Uint8Array) => {
      const next = new Uint8Array(buffered.length + chunk.length);
      next.set(buffered);
      next.set(chunk, buffered.length);
      buffered = next;
      if (looksLikeH2(buffered)) {
        if (buffered.length < 3) return;
        cleanup();
        socket.pause();
        this.#forwardH2(socket, buffered);
        return;
      }
      const end = findHeadEnd(buffered);
      if (end < 0) {
        if (buffered.length > MAX_HEAD_BYTES) {
          cleanup();
          socket.end(httpResponse(431, { body: "request head too large" }));
        }
        return;
      }
      cleanup();
      socket.pause();
      let head: RequestHead;
      try {
        head = parseRequestHead(buffered.subarray(0, end));
      } catch (err) {
        const status = err instanceof HttpError ? err.status : 400;
        socket.end(httpResponse(status, { body: errorMessage(err) }));
        return;
      }
      this.#o.http(head, socket, buffered.subarray(end)).catch((err) => {
        this.#o.log.error("http handler failed", { error: errorMessage(err) });
        socket.destroy();
      });
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.once("close", cleanup);
  }

  /** Pipes an HTTP/2 client to the internal gRPC server, GOAWAY-filtered on the way in. */
  #forwardH2(client: net.Socket, first: Uint8Array): void {
    const inner = net.connect({ path: this.#o.grpcSocketPath, allowHalfOpen: true });
    this.#track(inner);
    const filter = this.#o.filterGoaway === false ? undefined : new GoawayFilter();
    let droppedSeen = 0;
    const toInner = (chunk: Uint8Array) => {
      const out = filter ? filter.push(chunk) : chunk;
      if (filter && filter.dropped !== droppedSeen) {
        this.#goawaysDropped += filter.dropped - droppedSeen;
        droppedSeen = filter.dropped;
      }
      if (out.length > 0 && !inner.write(out)) {
        client.pause();
        inner.once("drain", () => client.resume());
      }
    };
    const teardown = () => {
      client.destroy();
      inner.destroy();
    };
    inner.on("error", teardown);
    client.on("error", teardown);
    inner.on("close", () => client.destroy());
    client.on("close", () => inner.destroy());
    if (first.length > 0) toInner(first);
    client.on("data", toInner);
    client.on("end", () => inner.end());
    inner.on("end", () => client.end());
    inner.on("data", (chunk: Uint8Array) => {
      if (!client.write(chunk)) {
        inner.pause();
        client.once("drain", () => inner.resume());
      }
    });
    client.resume();
  }
}
