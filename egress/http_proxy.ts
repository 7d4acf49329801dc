/**
 * The HTTP side of the egress proxy: `CONNECT host:port` tunnels (any TCP:
 * HTTPS, git over ssh through a ProxyCommand, databases) and absolute-form
 * forward proxying of plain HTTP (`GET http://host/path`). One `node:http`
 * server parses every guest connection (fed with `emit("connection")` after
 * the driver's header line); it never listens itself.
 *
 * Forward proxying serves one request per guest connection: the request goes
 * up with `Connection: close` and its hop-by-hop and `Proxy-*` headers
 * removed, and the response comes back byte for byte until the upstream
 * closes, then this connection closes too. (Deno's node:http server ends a
 * connection fed through `emit("connection")` after its first response
 * anyway, and its `http.request` ignores `createConnection`, so the proxy
 * writes the request itself on the socket it dialled to the vetted address.)
 *
 * Denied: `403 Forbidden` whose text body names the host:port and how to
 * allow it. A name that does not resolve, or a destination that does not
 * answer: `502 Bad Gateway` saying so.
 *
 * @module
 */
import http from "node:http";
import type net from "node:net";
import { Duplex } from "node:stream";
import { errorMessage } from "../core/log.ts";
import { normalizeHost } from "../core/policy.ts";
import { authorize, dial, type ProxyContext, validTarget } from "./authorize.ts";

/** Default idle timeout of a connection. */
export const DEFAULT_IDLE_MS = 300_000;
/** Largest request head a guest may send. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** How long a guest may take to send a request head. */
export const HEADERS_TIMEOUT_MS = 60_000;

/** `host:port` as written in a CONNECT line (IPv6 in brackets). */
export function formatTarget(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The body of a 403 for a host no rule allows. */
export function deniedBody(host: string, port: number): string {
  const target = formatTarget(host, port);
  return `openshell-egress: ${target} is not allowed by this sandbox's network policy. ` +
    `Allow it with: openshell policy set <sandbox> --allow ${target}\n`;
}

/** The body of a 403 for a host a rule names whose addresses the SSRF rules refuse. */
export function refusedBody(host: string, port: number, reason: string): string {
  return `openshell-egress: ${formatTarget(host, port)} is not allowed by this sandbox's ` +
    `network policy: ${reason}. Loopback, link-local and this host's own addresses are ` +
    "never reachable; private ones only through the rule's allowed_ips.\n";
}

/** Parses a CONNECT target `host:port` / `[v6]:port`; undefined when malformed. */
export function parseConnectTarget(target: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s/]+)):(\d{1,5})$/.exec(target);
  if (!m) return undefined;
  const host = normalizeHost(m[1] ?? m[2]);
  const port = Number(m[3]);
  if (port < 1 || port > 65535 || !validTarget(host)) return undefined;
  if (m[1] === undefined && host.includes(":")) return undefined;
  return { host, port };
}

/** Request headers that end at the proxy (RFC 9110 §7.6.1, plus the Proxy-* family). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Headers without hop-by-hop ones (those above and those the Connection
 * header names), from Node's raw `[name, value, name, value…]` list.
 */
export function endToEndHeaders(raw: readonly string[]): [string, string][] {
  const named = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i].toLowerCase() === "connection" || raw[i].toLowerCase() === "proxy-connection") {
      for (const t of raw[i + 1].split(",")) named.add(t.trim().toLowerCase());
    }
  }
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (HOP_BY_HOP.has(name) || named.has(name) || name.startsWith("proxy-")) continue;
    out.push([raw[i], raw[i + 1]]);
  }
  return out;
}

function plain(
  socket: net.Socket,
  status: number,
  reason: string,
  body: string,
): void {
  if (socket.destroyed) return;
  const bytes = new TextEncoder().encode(body);
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${bytes.length}\r\nConnection: close\r\n\r\n${body}`,
  );
}

function reply(res: http.ServerResponse, status: number, body: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": String(new TextEncoder().encode(body).length),
    "connection": "close",
  });
  res.end(body);
}

/** What the proxy knows about one guest connection. */
export interface GuestSession {
  sandboxId: string;
}

/** The HTTP proxy: hand it each guest connection with {@link HttpProxy.accept}. */
export class HttpProxy {
  readonly #ctx: ProxyContext;
  readonly #server: http.Server;
  readonly #sessions = new WeakMap<GuestStream, GuestSession>();

  /** Creates the (never listening) server. */
  constructor(ctx: ProxyContext) {
    this.#ctx = ctx;
    this.#server = http.createServer({
      maxHeaderSize: MAX_HEADER_BYTES,
      requestTimeout: 0,
      headersTimeout: HEADERS_TIMEOUT_MS,
    });
    // The server's own socket timeout is the idle timeout (it re-arms it per request).
    this.#server.timeout = ctx.idleMs ?? DEFAULT_IDLE_MS;
    this.#server.on("request", (req, res) => this.#forward(req, res));
    this.#server.on(
      "connect",
      (req, socket, head) => this.#connect(req, socket as unknown as GuestStream, head),
    );
    this.#server.on("upgrade", (_req, socket) => {
      plain(
        socket as net.Socket,
        501,
        "Not Implemented",
        "openshell-egress: protocol upgrades are not proxied; use CONNECT (e.g. wss://)\n",
      );
    });
    this.#server.on("clientError", (_err, socket) => {
      plain(socket as net.Socket, 400, "Bad Request", "openshell-egress: malformed request\n");
    });
  }

  /**
   * Serves one guest connection (its header line already read; `first`:
   * the bytes that came after it). The server reads it through a
   * {@link GuestStream}: Deno's node:http misparses data `unshift`ed back
   * into a socket once more follows (HPE_INVALID_METHOD past 64 KiB).
   */
  accept(socket: net.Socket, session: GuestSession, first: Uint8Array): void {
    const stream = new GuestStream(socket, first);
    this.#sessions.set(stream, session);
    this.#server.emit("connection", stream);
  }

  #session(stream: unknown): GuestSession | undefined {
    return this.#sessions.get(stream as GuestStream);
  }

  async #connect(req: http.IncomingMessage, stream: GuestStream, head: Uint8Array): Promise<void> {
    const session = this.#session(stream);
    if (!(stream instanceof GuestStream) || !session) return void stream.destroy();
    // The tunnel runs on the socket itself (no stream layer per byte).
    const { socket, pending } = stream.detach();
    const target = parseConnectTarget(req.url ?? "");
    if (!target) {
      return plain(
        socket,
        400,
        "Bad Request",
        "openshell-egress: CONNECT needs host:port (IPv6 in brackets)\n",
      );
    }
    // Guest bytes that arrive before the tunnel is up wait in the socket.
    socket.pause();
    const { host, port } = target;
    const auth = await authorize(this.#ctx, {
      ...target,
      sandboxId: session.sandboxId,
      via: "connect",
    });
    if (auth.decision === "denied") {
      const body = auth.rule === undefined
        ? deniedBody(host, port)
        : refusedBody(host, port, auth.reason);
      return plain(socket, 403, "Forbidden", body);
    }
    if (auth.decision === "error") {
      return plain(socket, 502, "Bad Gateway", `openshell-egress: ${auth.reason}\n`);
    }
    if (socket.destroyed) return;
    let upstream: net.Socket;
    try {
      upstream = await dial(auth.addresses, port, this.#ctx.connectTimeoutMs);
    } catch (err) {
      return plain(
        socket,
        502,
        "Bad Gateway",
        `openshell-egress: cannot connect to ${formatTarget(host, port)}: ${errorMessage(err)}\n`,
      );
    }
    if (socket.destroyed) return void upstream.destroy();
    splice(socket, upstream, this.#ctx.idleMs ?? DEFAULT_IDLE_MS);
    socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
    if (head.length) upstream.write(head);
    for (const chunk of pending) upstream.write(chunk);
    socket.resume();
  }

  async #forward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const session = this.#session(req.socket);
    if (!session) return void req.socket.destroy();
    const url = /^http:\/\//i.test(req.url ?? "") ? safeUrl(req.url!) : undefined;
    if (!url || url.username || url.password) {
      return reply(
        res,
        400,
        "openshell-egress: this is a proxy: send http://host/path requests, or CONNECT host:port " +
          "for anything else (https too)\n",
      );
    }
    const host = normalizeHost(url.hostname);
    const port = url.port ? Number(url.port) : 80;
    if (!validTarget(host)) return reply(res, 400, `openshell-egress: bad host "${host}"\n`);
    // The body (if any) waits in the request stream until piped upstream.
    const auth = await authorize(this.#ctx, {
      sandboxId: session.sandboxId,
      host,
      port,
      via: "http",
    });
    if (auth.decision === "denied") {
      return reply(
        res,
        403,
        auth.rule === undefined ? deniedBody(host, port) : refusedBody(host, port, auth.reason),
      );
    }
    if (auth.decision === "error") return reply(res, 502, `openshell-egress: ${auth.reason}\n`);
    let upstream: net.Socket;
    try {
      upstream = await dial(auth.addresses, port, this.#ctx.connectTimeoutMs);
    } catch (err) {
      return reply(
        res,
        502,
        `openshell-egress: cannot connect to ${formatTarget(host, port)}: ${errorMessage(err)}\n`,
      );
    }
    if (req.socket.destroyed) return void upstream.destroy();
    upstream.setTimeout(this.#ctx.idleMs ?? DEFAULT_IDLE_MS, () => upstream.destroy());
    const guest = req.socket as unknown as GuestStream;
    const headers = endToEndHeaders(req.rawHeaders);
    if (!headers.some(([k]) => k.toLowerCase() === "host")) headers.push(["Host", url.host]);
    const chunked = /\bchunked\b/i.test(String(req.headers["transfer-encoding"] ?? ""));
    // Node's parser refused CR/LF in names and values: the head is safe to write back.
    let head = `${req.method} ${url.pathname}${url.search} HTTP/1.1\r\n`;
    for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
    if (chunked) head += "Transfer-Encoding: chunked\r\n";
    head += "Connection: close\r\n\r\n";
    let answered = false;
    const close = () => {
      upstream.destroy();
      guest.destroy();
    };
    upstream.on("error", (err) => {
      if (answered) return close();
      answered = true;
      reply(
        res,
        502,
        `openshell-egress: ${formatTarget(host, port)} failed: ${errorMessage(err)}\n`,
      );
      upstream.destroy();
    });
    guest.once("close", () => upstream.destroy());
    // The response goes back unchanged: the upstream closes after it (Connection: close),
    // and so does this connection.
    upstream.on("data", (chunk: Uint8Array) => {
      answered = true;
      if (!guest.write(chunk)) {
        upstream.pause();
        guest.once("drain", () => upstream.resume());
      }
    });
    upstream.on("end", () => {
      if (!answered) {
        answered = true;
        return reply(
          res,
          502,
          `openshell-egress: ${formatTarget(host, port)} closed without answering\n`,
        );
      }
      guest.end();
    });
    upstream.write(head);
    req.on("data", (chunk: Uint8Array) => {
      const framed = chunked ? [`${chunk.length.toString(16)}\r\n`, chunk, "\r\n"] : [chunk];
      let ok = true;
      for (const part of framed) ok = upstream.write(part) && ok;
      if (!ok) {
        req.pause();
        upstream.once("drain", () => req.resume());
      }
    });
    req.on("end", () => {
      if (chunked) upstream.write("0\r\n\r\n");
    });
    req.resume();
  }
}

function safeUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/**
 * A guest socket as a plain Duplex for the node:http server, starting with
 * the bytes read past the header line. `detach()` hands the socket back
 * (for a CONNECT tunnel) with whatever the stream still held.
 */
export class GuestStream extends Duplex {
  readonly #socket: net.Socket;
  readonly #forward: (chunk: Uint8Array) => void;
  #detached = false;

  /** Wraps `socket` (paused) with `first` as its first bytes. */
  constructor(socket: net.Socket, first: Uint8Array) {
    super({ allowHalfOpen: true });
    this.#socket = socket;
    this.#forward = (chunk) => {
      if (!this.push(chunk)) socket.pause();
    };
    if (first.length) this.push(first);
    socket.on("data", this.#forward);
    socket.on("end", () => !this.#detached && this.push(null));
    // Detached or not, the stream ends with its socket (the http server forgets it then).
    socket.on("close", () => this.destroy());
  }

  /** The socket underneath. */
  get socket(): net.Socket {
    return this.#socket;
  }

  override _read(): void {
    if (!this.#detached) this.#socket.resume();
  }

  override _write(chunk: Uint8Array, _enc: string, cb: (err?: Error | null) => void): void {
    this.#socket.write(chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.#detached) this.#socket.destroy();
    cb(err);
  }

  /** Like net.Socket's: the idle timeout of the socket underneath. */
  setTimeout(ms: number, cb?: () => void): this {
    this.#socket.setTimeout(ms, cb);
    return this;
  }

  /** Like net.Socket's (no-op on a Unix socket). */
  setNoDelay(): this {
    return this;
  }

  /** Like net.Socket's (no-op here). */
  setKeepAlive(): this {
    return this;
  }

  /** Stops feeding the stream; the socket (paused) and the bytes still buffered. */
  detach(): { socket: net.Socket; pending: Uint8Array[] } {
    this.#detached = true;
    this.#socket.pause();
    this.#socket.removeListener("data", this.#forward);
    this.#socket.setTimeout(0);
    const pending: Uint8Array[] = [];
    for (let chunk = this.read(); chunk !== null; chunk = this.read()) pending.push(chunk);
    return { socket: this.#socket, pending };
  }
}

/** Joins two sockets both ways; either closing, or both quiet for `idleMs`, closes both. */
export function splice(a: net.Socket, b: net.Socket, idleMs: number): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.setTimeout(idleMs, close);
  b.setTimeout(idleMs, close);
  a.on("error", close);
  b.on("error", close);
  a.once("close", close);
  b.once("close", close);
  // Plain data/drain forwarding: measurably cheaper than stream.pipe() under Deno.
  const forward = (from: net.Socket, to: net.Socket) => {
    from.on("data", (chunk: Uint8Array) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
    from.on("end", () => to.end());
  };
  forward(a, b);
  forward(b, a);
}
