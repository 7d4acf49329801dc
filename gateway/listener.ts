/**
 * A gateway port: accepts TCP (or TLS) connections, tells HTTP/2 from
 * HTTP/1.1 by the first bytes (or ALPN), and
 *
 * - forwards HTTP/2 (gRPC) to the internal grpc-js server on a Unix socket,
 *   removing client GOAWAY frames on the way (`core/h2_forward.ts`);
 * - hands HTTP/1.1 connections to a `node:http` server (never listening
 *   itself: it is given each sniffed socket), whose parsed request heads go
 *   to the gateway's HTTP handler. A head over {@link MAX_HEAD_BYTES} is
 *   answered 431, a malformed one 400, each with one response.
 *
 * No client behaviour can crash the process here: resets, half-open or
 * vanished peers, garbage and graceful closes all end in closed sockets.
 * And no client can hold more than its share ({@link ConnectionLimits}):
 *
 * - at most `maxConnections` open connections, and `maxConnectionsPerPeer`
 *   per remote address (loopback exempt by default: the VM driver forwards
 *   every guest from loopback and caps each VM itself). When a cap is
 *   reached, the connection idle the longest (no open stream, or still in
 *   its handshake) is closed to make room; when none is idle, the new one is
 *   closed at once;
 * - a connection must complete its handshake (TLS, then a full HTTP/2
 *   preface or an HTTP/1.1 request head) within `handshakeTimeoutMs`;
 * - an HTTP/2 connection without an open stream for `idleTimeoutMs` is
 *   closed. A supervisor's session stream keeps its connection open however
 *   quiet it is.
 *
 * Every close is a socket destroy, never an HTTP/2 GOAWAY (a Deno grpc-js
 * client can die on a server GOAWAY; grpc-js clients reconnect on their
 * next call). The listener is options-driven so a gateway can run several
 * (one per port).
 *
 * @module
 */
import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { H2_PREFACE, looksLikeH2 } from "../core/goaway_filter.ts";
import { forwardH2, type H2Link } from "../core/h2_forward.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import { httpResponse, MAX_HEAD_BYTES, type RequestHead, requestHeadOf } from "./http1.ts";
import { clientRefusal, LogThrottle } from "./client_auth.ts";

/** How long a new connection may take to send its first request head or HTTP/2 preface. */
export const HEAD_TIMEOUT_MS = 10_000;
/** Default global cap on open connections. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** Default cap on open connections per remote address. */
export const DEFAULT_MAX_CONNECTIONS_PER_PEER = 64;
/** Default idle timeout of an HTTP/2 connection without open streams. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/** Shortest interval between two "connection limit reached" warnings. */
export const LIMIT_WARN_INTERVAL_MS = 10_000;

/** The limits one listener enforces (see the module docs). */
export interface ConnectionLimits {
  /** Open connections at most (HTTP/1.1 and HTTP/2 alike). */
  maxConnections: number;
  /** Open connections per remote address at most; 0 = no per-peer cap. */
  maxConnectionsPerPeer: number;
  /** Peers the per-peer cap does not apply to; default {@link isLoopback}. */
  perPeerExempt: (peer: string) => boolean;
  /** Time from accept to a complete TLS handshake plus preface or request head. */
  handshakeTimeoutMs: number;
  /** An HTTP/2 connection without an open stream this long is closed. */
  idleTimeoutMs: number;
}

/** The defaults of {@link ConnectionLimits}. */
export const DEFAULT_LIMITS: Readonly<ConnectionLimits> = {
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  maxConnectionsPerPeer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
  perPeerExempt: isLoopback,
  handshakeTimeoutMs: HEAD_TIMEOUT_MS,
  idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
};

/** Whether `address` (as {@link peerOf} gives it) is a loopback address. */
export function isLoopback(address: string): boolean {
  return address.startsWith("127.") || address === "::1";
}

/** The per-peer key of a socket: its remote address, IPv4-mapped IPv6 unwrapped. */
export function peerOf(socket: net.Socket): string {
  const a = socket.remoteAddress ?? "unknown";
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
}

/**
 * Handles one HTTP/1.1 request; owns the socket afterwards (after a CONNECT
 * `node:http` has let go of it; after any other request the handler answers
 * with one raw response and closes, and later pipelined requests are ignored).
 */
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
  /** Connection limits; each defaults to {@link DEFAULT_LIMITS}. */
  limits?: Partial<ConnectionLimits>;
  /** Clock (tests). */
  now?: () => number;
}

/** Counters of a {@link GatewayListener}. */
export interface ListenerStats {
  /** Client connections open now. */
  open: number;
  /** Distinct remote addresses among them. */
  peers: number;
  /** Connections closed at accept because a cap was reached and none could make room. */
  refused: number;
  /** Idle connections closed to make room for a new one. */
  evicted: number;
  /** HTTP/2 connections closed after {@link ConnectionLimits.idleTimeoutMs} without streams. */
  idleClosed: number;
  /** Connections closed for not completing their handshake in time. */
  handshakeTimeouts: number;
  /** Client GOAWAY frames removed. */
  goawaysDropped: number;
}

type ConnState = "handshake" | "h2" | "http";

interface Conn {
  /** The TCP socket (under TLS: the raw one). */
  socket: net.Socket;
  peer: string;
  state: ConnState;
  link?: H2Link;
  /** Since when it has had no open stream (or since accept). */
  idleSince: number;
  timer?: ReturnType<typeof setTimeout>;
  /** What a handshake timeout does (an HTTP/1.1 client gets a 408). */
  onHandshakeTimeout?: () => void;
  gone: boolean;
}

/** The listening socket and every connection it accepted. */
export class GatewayListener {
  readonly #o: GatewayListenerOptions;
  readonly #limits: ConnectionLimits;
  readonly #now: () => number;
  readonly #sockets = new Set<net.Socket>();
  readonly #conns = new Set<Conn>();
  readonly #byPeer = new Map<string, Set<Conn>>();
  /** TLS connections between TCP accept and the TLS handshake, by remote address and port. */
  readonly #tlsPending = new Map<string, Conn>();
  /** Parses HTTP/1.1 request heads; see {@link #http1}. */
  readonly #http: http.Server;
  /** The connection of each socket handed to {@link #http} (under TLS: the TLS socket). */
  readonly #httpConns = new WeakMap<net.Socket, Conn>();
  #server?: net.Server;
  #sweep?: ReturnType<typeof setInterval>;
  #goawaysDropped = 0;
  #refused = 0;
  readonly #refusals = new LogThrottle();
  #evicted = 0;
  #idleClosed = 0;
  #handshakeTimeouts = 0;
  #lastWarn = -Infinity;
  #warnedRefused = 0;
  #warnedEvicted = 0;

  /** Creates a listener; {@link listen} binds it. */
  constructor(options: GatewayListenerOptions) {
    this.#o = options;
    this.#limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.#now = options.now ?? Date.now;
    this.#http = this.#http1();
  }

  /** The limits in force. */
  get limits(): Readonly<ConnectionLimits> {
    return this.#limits;
  }

  /** Open client and internal connections. */
  get connectionCount(): number {
    return this.#sockets.size;
  }

  /** GOAWAY frames removed so far. */
  get goawaysDropped(): number {
    return this.#goawaysDropped;
  }

  /** Counters. */
  get stats(): ListenerStats {
    return {
      open: this.#conns.size,
      peers: this.#byPeer.size,
      refused: this.#refused,
      evicted: this.#evicted,
      idleClosed: this.#idleClosed,
      handshakeTimeouts: this.#handshakeTimeouts,
      goawaysDropped: this.#goawaysDropped,
    };
  }

  /** Binds; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number }> {
    const server = this.#o.tls
      ? tls.createServer({
        cert: this.#o.tls.cert,
        key: this.#o.tls.key,
        // Every handshake completes; #secured judges the client certificate itself so the
        // refusal is logged with its reason (see client_auth.ts).
        ...(this.#o.tls.clientCa
          ? { ca: this.#o.tls.clientCa, requestCert: true, rejectUnauthorized: false }
          : {}),
        ALPNProtocols: ["h2", "http/1.1"],
        allowHalfOpen: true,
        // No TLS handshakeTimeout of the same length: the handshake timer (from the TCP
        // accept) covers the TLS handshake, and two timers raced to close the connection.
      }, (socket: tls.TLSSocket) => this.#secured(socket))
      : net.createServer({ allowHalfOpen: true });
    server.on("connection", (socket: net.Socket) => this.#connection(socket));
    server.on("tlsClientError", (err: Error, socket?: net.Socket) => {
      this.#o.log.debug("TLS handshake failed", { error: errorMessage(err) });
      // Deno does not close the socket of a failed handshake by itself.
      socket?.destroy();
    });
    this.#server = server;
    const period = Math.min(Math.max(this.#limits.idleTimeoutMs / 4, 50), 10_000);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#o.port, this.#o.bind, () => {
        server.removeListener("error", reject);
        server.on(
          "error",
          (err) => this.#o.log.error("listener error", { error: errorMessage(err) }),
        );
        this.#sweep = setInterval(() => this.#closeIdle(), period);
        const addr = server.address() as net.AddressInfo;
        resolve({ host: addr.address, port: addr.port });
      });
    });
  }

  /** Stops accepting new connections. */
  stopAccepting(): Promise<void> {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    const server = this.#server;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  /** Closes every connection at once (no HTTP/2 GOAWAY is sent). */
  destroyAll(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    for (const c of [...this.#conns]) this.#forget(c);
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    socket.on("error", (err: Error) => {
      this.#o.log.debug("connection error", { error: errorMessage(err) });
    });
  }

  /** A new TCP connection: admitted under the caps (maybe by evicting an idle one) or closed. */
  #connection(socket: net.Socket): void {
    const peer = peerOf(socket);
    if (!this.#admit(peer)) {
      this.#refused++;
      this.#warnLimits(peer);
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    const conn: Conn = { socket, peer, state: "handshake", idleSince: this.#now(), gone: false };
    this.#conns.add(conn);
    let set = this.#byPeer.get(peer);
    if (!set) this.#byPeer.set(peer, set = new Set());
    set.add(conn);
    this.#track(socket);
    socket.once("close", () => this.#forget(conn));
    conn.timer = setTimeout(() => {
      conn.timer = undefined;
      if (conn.gone || conn.state !== "handshake") return;
      this.#handshakeTimeouts++;
      if (conn.onHandshakeTimeout) conn.onHandshakeTimeout();
      else socket.destroy();
    }, this.#limits.handshakeTimeoutMs);
    if (this.#o.tls) {
      const key = `${socket.remoteAddress}|${socket.remotePort}`;
      this.#tlsPending.set(key, conn);
      socket.once("close", () => {
        if (this.#tlsPending.get(key) === conn) this.#tlsPending.delete(key);
      });
    } else {
      this.#accept(socket, conn);
    }
  }

  #secured(socket: tls.TLSSocket): void {
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    const conn = this.#tlsPending.get(key);
    this.#tlsPending.delete(key);
    if (!conn || conn.gone) {
      socket.destroy();
      return;
    }
    this.#track(socket);
    const clientCa = this.#o.tls?.clientCa;
    const refusal = clientCa ? clientRefusal(socket, clientCa) : undefined;
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
    this.#accept(socket, conn);
  }

  #forget(conn: Conn): void {
    if (conn.gone) return;
    conn.gone = true;
    clearTimeout(conn.timer);
    this.#conns.delete(conn);
    const set = this.#byPeer.get(conn.peer);
    set?.delete(conn);
    if (set && set.size === 0) this.#byPeer.delete(conn.peer);
  }

  #evictable(conn: Conn): boolean {
    return conn.state === "handshake" || (conn.state === "h2" && conn.link?.openStreams === 0);
  }

  /** Makes room for one more connection from `peer`; false when nothing can be closed. */
  #admit(peer: string): boolean {
    const l = this.#limits;
    const set = this.#byPeer.get(peer);
    if (l.maxConnectionsPerPeer > 0 && set && set.size >= l.maxConnectionsPerPeer) {
      if (!l.perPeerExempt(peer) && !this.#evictOldest(set)) return false;
    }
    if (this.#conns.size >= l.maxConnections && !this.#evictOldest(this.#conns)) return false;
    return true;
  }

  #evictOldest(among: Iterable<Conn>): boolean {
    let victim: Conn | undefined;
    for (const c of among) {
      if (this.#evictable(c) && (!victim || c.idleSince < victim.idleSince)) victim = c;
    }
    if (!victim) return false;
    this.#evicted++;
    this.#warnLimits(victim.peer);
    victim.socket.destroy();
    this.#forget(victim);
    return true;
  }

  #warnLimits(peer: string): void {
    const now = this.#now();
    if (now - this.#lastWarn < LIMIT_WARN_INTERVAL_MS) return;
    this.#lastWarn = now;
    this.#o.log.warn(
      "connection limit reached: closing idle connections to make room, refusing when none is idle",
      {
        peer,
        open: this.#conns.size,
        max: this.#limits.maxConnections,
        max_per_peer: this.#limits.maxConnectionsPerPeer,
        refused: this.#refused - this.#warnedRefused,
        evicted: this.#evicted - this.#warnedEvicted,
      },
    );
    this.#warnedRefused = this.#refused;
    this.#warnedEvicted = this.#evicted;
  }

  #closeIdle(): void {
    const deadline = this.#now() - this.#limits.idleTimeoutMs;
    for (const c of [...this.#conns]) {
      if (c.state === "h2" && c.link?.openStreams === 0 && c.idleSince <= deadline) {
        this.#idleClosed++;
        this.#o.log.debug("closing an idle HTTP/2 connection", { peer: c.peer });
        c.socket.destroy();
        this.#forget(c);
      }
    }
  }

  /**
   * The `node:http` server that parses HTTP/1.1 request heads. It caps the
   * head at {@link MAX_HEAD_BYTES} itself (`maxHeaderSize`: 431). Its
   * `headersTimeout`/`requestTimeout` do not apply here: node:http enforces
   * them from a sweep it starts when it listens, and this server never
   * listens (checked with Deno 2.9.6 and Node 20: a socket given through
   * `emit("connection")` that never finishes its head is never timed out).
   * The listener's handshake timer answers 408 instead, counted from accept
   * so that TLS and sniffing are inside the same budget.
   */
  #http1(): http.Server {
    const server = http.createServer({
      maxHeaderSize: MAX_HEAD_BYTES,
      // Clients of /connect/ssh need not send Host (ours do; curl does).
      requireHostHeader: false,
    } as http.ServerOptions);
    // A client's half-close does not end the socket before the handler answered.
    (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    server.on("request", (req: http.IncomingMessage) => this.#request(req, req.socket));
    server.on(
      "connect",
      (req: http.IncomingMessage, socket: net.Socket, rest: Uint8Array) =>
        this.#request(req, socket, rest),
    );
    server.on("clientError", (err: Error & { code?: string }, socket: net.Socket) => {
      const conn = this.#httpConns.get(socket);
      if (!conn || !err.code?.startsWith("HPE_")) {
        socket.destroy(); // a reset or the like: nothing to answer
        return;
      }
      // Bad bytes after the first request (its handler owns the socket) or after a 408: ignored.
      if (conn.state !== "handshake" || !socket.writable) return;
      this.#settle(conn, "http");
      socket.end(
        err.code === "HPE_HEADER_OVERFLOW"
          ? httpResponse(431, { body: "request head too large" })
          : httpResponse(400, {
            body: `malformed request head: ${(err as { reason?: string }).reason ?? err.message}`,
          }),
      );
    });
    return server;
  }

  /** A request head from {@link #http}: the first one on a connection goes to the handler. */
  #request(
    req: http.IncomingMessage,
    socket: net.Socket,
    rest: Uint8Array = new Uint8Array(),
  ): void {
    const conn = this.#httpConns.get(socket);
    // Pipelined after the first request, or after a 408: ignored (the socket is closing).
    if (!conn || conn.state !== "handshake" || !socket.writable) return;
    this.#settle(conn, "http");
    if (req.httpVersionMajor !== 1) {
      socket.end(httpResponse(505, { body: "HTTP version not supported" }));
      return;
    }
    this.#o.http(requestHeadOf(req), socket, rest).catch((err) => {
      this.#o.log.error("http handler failed", { error: errorMessage(err) });
      socket.destroy();
    });
  }

  /** The handshake of `conn` is over: it is now `state`. */
  #settle(conn: Conn, state: ConnState): void {
    clearTimeout(conn.timer);
    conn.timer = undefined;
    conn.state = state;
    conn.idleSince = this.#now();
  }

  /** Reads the first bytes of a (decrypted) connection and dispatches it. */
  #accept(socket: net.Socket, conn: Conn): void {
    socket.setNoDelay(true);
    const h2Only = (socket as tls.TLSSocket).alpnProtocol === "h2";
    let buffered = new Uint8Array();
    conn.onHandshakeTimeout = () => {
      cleanup();
      if (h2Only || looksLikeH2(buffered)) socket.destroy();
      else socket.end(httpResponse(408, { body: "no request in time" }));
    };
    const cleanup = () => {
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
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
        if (buffered.length < H2_PREFACE.length) return;
        cleanup();
        this.#settle(conn, "h2");
        socket.pause();
        conn.link = forwardH2({
          client: socket,
          innerPath: this.#o.grpcSocketPath,
          first: buffered,
          filterGoaway: this.#o.filterGoaway,
          onGoawayDropped: (n) => this.#goawaysDropped += n,
          onStreams: (open) => {
            if (open === 0) conn.idleSince = this.#now();
          },
          onInner: (inner) => this.#track(inner),
        });
        return;
      }
      cleanup();
      if (h2Only) {
        socket.destroy();
        return;
      }
      // HTTP/1.1: node:http reads the head from the first byte on.
      socket.pause();
      socket.unshift(buffered);
      this.#httpConns.set(socket, conn);
      this.#http.emit("connection", socket);
      socket.resume();
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
  }
}
