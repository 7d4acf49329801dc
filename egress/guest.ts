/**
 * The guest socket (`<state-dir>/guest.sock`): the VM driver connects here
 * once per guest connection to the proxy alias and writes one header line
 * before any guest byte:
 *
 * ```
 * OPENSHELL-EGRESS/1 <sandbox_id> <http|dns>\n
 * ```
 *
 * The guest cannot forge it (the driver writes it first). A connection whose
 * header is missing, malformed, longer than {@link MAX_HEADER_BYTES}, not
 * complete within the header timeout, or names a sandbox without a policy is
 * closed. Caps: open connections per sandbox and in all (the total counts
 * connections still sending their header); a connection quiet both ways for
 * the idle timeout is closed.
 *
 * @module
 */
import net from "node:net";
import { errorMessage } from "../core/log.ts";
import type { ProxyContext } from "./authorize.ts";
import { DEFAULT_IDLE_SECS, DEFAULT_MAX_PER_SANDBOX, DEFAULT_MAX_TOTAL } from "./config.ts";
import { serveDns } from "./dns.ts";
import { HttpProxy } from "./http_proxy.ts";
import { SANDBOX_ID_RE } from "./policies.ts";

/** Longest header line, newline included. */
export const MAX_HEADER_BYTES = 256;
/** How long the driver has to write the header. */
export const HEADER_TIMEOUT_MS = 5000;
/** The header's protocol tag. */
export const HEADER_TAG = "OPENSHELL-EGRESS/1";

/** What a header line says. */
export interface GuestHeader {
  sandboxId: string;
  kind: "http" | "dns";
}

/** Parses a header line (without its newline); undefined when malformed. */
export function parseHeader(line: string): GuestHeader | undefined {
  const parts = line.split(" ");
  if (parts.length !== 3 || parts[0] !== HEADER_TAG) return undefined;
  const [, sandboxId, kind] = parts;
  if (!SANDBOX_ID_RE.test(sandboxId)) return undefined;
  if (kind !== "http" && kind !== "dns") return undefined;
  return { sandboxId, kind };
}

/** Options of {@link GuestServer}. */
export interface GuestServerOptions {
  /** The Unix socket to listen on. */
  path: string;
  ctx: ProxyContext;
  /** Default {@link DEFAULT_MAX_PER_SANDBOX}. */
  maxPerSandbox?: number;
  /** Default {@link DEFAULT_MAX_TOTAL}. */
  maxTotal?: number;
  /** Default {@link HEADER_TIMEOUT_MS}. */
  headerTimeoutMs?: number;
  /** Default {@link DEFAULT_IDLE_SECS} seconds. */
  idleMs?: number;
}

/** Counters of a {@link GuestServer}. */
export interface GuestStats {
  /** Connections open now (header pending included). */
  open: number;
  /** Closed at once: the total cap. */
  refusedTotal: number;
  /** Closed after the header: the sandbox's cap. */
  refusedSandbox: number;
  /** Closed for a missing, malformed, overlong or late header. */
  badHeader: number;
  /** Closed for naming a sandbox without a policy. */
  unknownSandbox: number;
  /** Closed for being idle. */
  idle: number;
}

/** The guest socket server. */
export class GuestServer {
  readonly #o: Required<Omit<GuestServerOptions, "ctx" | "path">> & GuestServerOptions;
  readonly #http: HttpProxy;
  readonly #all = new Set<net.Socket>();
  readonly #bySandbox = new Map<string, Set<net.Socket>>();
  #server?: net.Server;
  #stats: GuestStats = {
    open: 0,
    refusedTotal: 0,
    refusedSandbox: 0,
    badHeader: 0,
    unknownSandbox: 0,
    idle: 0,
  };

  /** Creates the server; {@link listen} binds it. */
  constructor(options: GuestServerOptions) {
    this.#o = {
      ...options,
      maxPerSandbox: options.maxPerSandbox ?? DEFAULT_MAX_PER_SANDBOX,
      maxTotal: options.maxTotal ?? DEFAULT_MAX_TOTAL,
      headerTimeoutMs: options.headerTimeoutMs ?? HEADER_TIMEOUT_MS,
      idleMs: options.idleMs ?? DEFAULT_IDLE_SECS * 1000,
    };
    this.#http = new HttpProxy({ ...options.ctx, idleMs: this.#o.idleMs });
  }

  /** Counters. */
  get stats(): GuestStats {
    return { ...this.#stats, open: this.#all.size };
  }

  /** Open connections of one sandbox. */
  openFor(sandboxId: string): number {
    return this.#bySandbox.get(sandboxId)?.size ?? 0;
  }

  /** Binds the socket (mode 0600; a stale one is replaced). */
  async listen(): Promise<void> {
    await Deno.remove(this.#o.path).catch(() => {});
    const server = net.createServer(
      { allowHalfOpen: true, pauseOnConnect: true },
      (s) => this.#accept(s),
    );
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#o.path, () => {
        server.removeListener("error", reject);
        server.on(
          "error",
          (err) => this.#o.ctx.log.error("guest socket error", { error: errorMessage(err) }),
        );
        resolve();
      });
    });
    await Deno.chmod(this.#o.path, 0o600);
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    for (const s of this.#all) s.destroy();
    await closed;
    await Deno.remove(this.#o.path).catch(() => {});
  }

  /** Closes a sandbox's open connections; how many. */
  closeSandbox(sandboxId: string): number {
    const set = this.#bySandbox.get(sandboxId);
    if (!set) return 0;
    const n = set.size;
    for (const s of set) s.destroy();
    this.#bySandbox.delete(sandboxId);
    return n;
  }

  #warn(what: string, count: number, fields: Record<string, string | number> = {}): void {
    if (count === 1 || count % 100 === 0) {
      this.#o.ctx.log.warn(what, { ...fields, count });
    }
  }

  #accept(socket: net.Socket): void {
    socket.on(
      "error",
      (err: Error) => this.#o.ctx.log.debug("guest connection error", { error: errorMessage(err) }),
    );
    if (this.#all.size >= this.#o.maxTotal) {
      this.#stats.refusedTotal++;
      this.#warn(
        "connection limit reached; closing new guest connections",
        this.#stats.refusedTotal,
        {
          max: this.#o.maxTotal,
        },
      );
      socket.destroy();
      return;
    }
    this.#all.add(socket);
    socket.once("close", () => this.#all.delete(socket));
    let buffered = new Uint8Array(0);
    const fail = () => {
      this.#stats.badHeader++;
      this.#warn("bad guest connection header; closed", this.#stats.badHeader);
      socket.destroy();
    };
    const timer = setTimeout(fail, this.#o.headerTimeoutMs);
    const onData = (chunk: Uint8Array) => {
      const next = new Uint8Array(buffered.length + chunk.length);
      next.set(buffered);
      next.set(chunk, buffered.length);
      buffered = next;
      const nl = buffered.indexOf(10);
      if (nl < 0) {
        if (buffered.length >= MAX_HEADER_BYTES) {
          cleanup();
          fail();
        }
        return;
      }
      cleanup();
      if (nl + 1 > MAX_HEADER_BYTES) return fail();
      const header = parseHeader(
        new TextDecoder("utf-8", { fatal: false }).decode(buffered.subarray(0, nl)),
      );
      if (!header) return fail();
      socket.pause();
      this.#start(socket, header, buffered.slice(nl + 1));
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.removeListener("data", onData);
      socket.removeListener("close", cleanup);
    };
    socket.on("data", onData);
    socket.once("close", cleanup);
    socket.resume();
  }

  #start(socket: net.Socket, header: GuestHeader, first: Uint8Array): void {
    const { sandboxId, kind } = header;
    if (!this.#o.ctx.policies.get(sandboxId)) {
      this.#stats.unknownSandbox++;
      this.#warn(
        "guest connection for a sandbox without a policy; closed",
        this.#stats.unknownSandbox,
        {
          sandbox_id: sandboxId,
        },
      );
      socket.destroy();
      return;
    }
    let set = this.#bySandbox.get(sandboxId);
    if ((set?.size ?? 0) >= this.#o.maxPerSandbox) {
      this.#stats.refusedSandbox++;
      this.#warn(
        "sandbox connection limit reached; closing its new connections",
        this.#stats.refusedSandbox,
        {
          sandbox_id: sandboxId,
          max: this.#o.maxPerSandbox,
        },
      );
      if (kind === "http") {
        const body =
          `openshell-egress: this sandbox has ${this.#o.maxPerSandbox} connections open ` +
          "through the proxy, the most it may; close some and retry\n";
        socket.end(
          `HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n` +
            `Content-Length: ${
              new TextEncoder().encode(body).length
            }\r\nConnection: close\r\n\r\n${body}`,
        );
        socket.once("finish", () => socket.destroy());
      } else {
        socket.destroy();
      }
      return;
    }
    if (!set) {
      set = new Set();
      this.#bySandbox.set(sandboxId, set);
    }
    const mine = set;
    mine.add(socket);
    socket.once("close", () => {
      mine.delete(socket);
      if (mine.size === 0 && this.#bySandbox.get(sandboxId) === mine) {
        this.#bySandbox.delete(sandboxId);
      }
    });
    socket.setTimeout(this.#o.idleMs, () => {
      this.#stats.idle++;
      socket.destroy();
    });
    if (kind === "http") {
      this.#http.accept(socket, { sandboxId }, first);
    } else {
      serveDns(this.#o.ctx, socket, sandboxId, first);
      socket.resume();
    }
  }
}
