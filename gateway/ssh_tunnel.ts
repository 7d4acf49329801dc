/**
 * `CONNECT /connect/ssh`: the HTTP tunnel that carries an SSH connection to
 * a sandbox's sshd through a supervisor relay.
 *
 * Statuses: 405 (not CONNECT), 400 (bad headers), 401 (missing, unknown,
 * revoked, expired or mismatched token), 404 (unknown sandbox), 412 (not
 * READY), 429 (over 3 connections per token or 20 per sandbox, or no relay
 * capacity left: RESOURCE_EXHAUSTED from the registry or the supervisor),
 * 502 (no relay came). On 200 the socket is bridged to the relay.
 *
 * A tunnel's slots are the client's: they are released as soon as the client
 * has finished (its end of the stream, or the socket closing), not when the
 * sandbox's sshd exits; the sandbox side then has {@link TUNNEL_DRAIN_MS} to
 * finish before the tunnel is torn down. A client that goes away before the
 * tunnel is up cancels its relay request. Revoking a token
 * ({@link SshTunnel.closeToken}) or its expiry ({@link SshTunnel.closeExpired},
 * swept every {@link TOKEN_SWEEP_MS}) closes the tunnels that use it.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { bridge } from "../core/bridge.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { SessionRegistry } from "../core/registry.ts";
import { Code, StatusError } from "../core/status.ts";
import {
  connectEstablished,
  HttpError,
  httpResponse,
  isAsciiValue,
  type RequestHead,
} from "./http1.ts";
import type { Store } from "./store.ts";

/** Concurrent tunnels one token may hold. */
export const MAX_CONNECTIONS_PER_TOKEN = 3;
/** Concurrent tunnels one sandbox may hold. */
export const MAX_CONNECTIONS_PER_SANDBOX = 20;
/** How long a tunnel waits for the sandbox's supervisor session. */
export const SSH_SESSION_WAIT_MS = 30_000;
/** How long the sandbox side may still send after the client finished. */
export const TUNNEL_DRAIN_MS = 10_000;
/** How often open tunnels are checked for expired tokens. */
export const TOKEN_SWEEP_MS = 1_000;
/** Bytes a client may send before its tunnel is up (kept for the sandbox). */
export const MAX_EARLY_BYTES = 64 * 1024;

/** Per-token and per-sandbox connection counters. */
export class ConnectionSlots {
  readonly #byToken = new Map<string, number>();
  readonly #bySandbox = new Map<string, number>();
  readonly #perToken: number;
  readonly #perSandbox: number;

  /** Creates counters with the given caps. */
  constructor(perToken = MAX_CONNECTIONS_PER_TOKEN, perSandbox = MAX_CONNECTIONS_PER_SANDBOX) {
    this.#perToken = perToken;
    this.#perSandbox = perSandbox;
  }

  /**
   * Takes one slot of `token` and one of `sandboxId`; false (and nothing
   * taken) when either cap is reached.
   */
  acquire(token: string, sandboxId: string): boolean {
    const t = this.#byToken.get(token) ?? 0;
    if (t >= this.#perToken) return false;
    const s = this.#bySandbox.get(sandboxId) ?? 0;
    if (s >= this.#perSandbox) return false;
    this.#byToken.set(token, t + 1);
    this.#bySandbox.set(sandboxId, s + 1);
    return true;
  }

  /** Gives back the slots taken by {@link acquire}. */
  release(token: string, sandboxId: string): void {
    const dec = (m: Map<string, number>, k: string) => {
      const n = (m.get(k) ?? 0) - 1;
      if (n <= 0) m.delete(k);
      else m.set(k, n);
    };
    dec(this.#byToken, token);
    dec(this.#bySandbox, sandboxId);
  }

  /** Slots in use by `token`. */
  tokenCount(token: string): number {
    return this.#byToken.get(token) ?? 0;
  }

  /** Slots in use by `sandboxId`. */
  sandboxCount(sandboxId: string): number {
    return this.#bySandbox.get(sandboxId) ?? 0;
  }
}

/** Options of {@link SshTunnel}. */
export interface SshTunnelOptions {
  store: Store;
  registry: SessionRegistry<Duplex>;
  log: Logger;
  /** Clock; default `Date.now`. */
  now?: () => number;
  /** How long to wait for a supervisor session; default {@link SSH_SESSION_WAIT_MS}. */
  sessionWaitMs?: number;
  /** Default {@link TUNNEL_DRAIN_MS}. */
  drainMs?: number;
}

/** An authorized request. */
export interface TunnelAuth {
  sandboxId: string;
  token: string;
  /** When the token expires (0 = never). */
  expiresAtMs: number;
}

interface Tunnel extends TunnelAuth {
  /** Bridged to a relay (200 sent). */
  bridged: boolean;
  /** Tears the tunnel down (or gives up its relay request). */
  close(reason: string): void;
}

/** Serves `CONNECT` requests on the SSH connect path. */
export class SshTunnel {
  readonly #o: SshTunnelOptions;
  /** Connection caps. */
  readonly slots: ConnectionSlots = new ConnectionSlots();
  readonly #tunnels = new Set<Tunnel>();
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** Creates the tunnel handler. */
  constructor(options: SshTunnelOptions) {
    this.#o = options;
  }

  /** Number of tunnels currently bridged. */
  get openTunnels(): number {
    let n = 0;
    for (const t of this.#tunnels) if (t.bridged) n++;
    return n;
  }

  /** Closes every open tunnel and stops the expiry sweep (shutdown). */
  closeAll(): void {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    for (const t of [...this.#tunnels]) t.close("gateway shutting down");
  }

  /** Closes the tunnels (open or opening) that use `token`; returns how many. */
  closeToken(token: string, reason = "token revoked"): number {
    let n = 0;
    for (const t of [...this.#tunnels]) {
      if (t.token !== token) continue;
      t.close(reason);
      n++;
    }
    return n;
  }

  /** Closes the tunnels whose token has expired by now; returns how many. */
  closeExpired(): number {
    const now = (this.#o.now ?? Date.now)();
    let n = 0;
    for (const t of [...this.#tunnels]) {
      if (t.expiresAtMs > 0 && now > t.expiresAtMs) {
        t.close("token expired");
        n++;
      }
    }
    return n;
  }

  /** Runs {@link closeExpired} every `intervalMs` until {@link closeAll}. */
  startExpirySweep(intervalMs: number = TOKEN_SWEEP_MS): void {
    this.#sweeper ??= setInterval(() => this.closeExpired(), intervalMs);
  }

  /** Checks a request; returns the sandbox id and token, or throws an {@link HttpError}. */
  async authorize(head: RequestHead): Promise<TunnelAuth> {
    if (head.method !== "CONNECT") throw new HttpError(405, "use CONNECT");
    const rawId = head.headers.get("x-sandbox-id");
    const rawToken = head.headers.get("x-sandbox-token");
    if (rawId === undefined || rawToken === undefined) {
      throw new HttpError(401, "x-sandbox-id and x-sandbox-token headers are required");
    }
    if (!isAsciiValue(rawId) || !isAsciiValue(rawToken)) {
      throw new HttpError(400, "x-sandbox-id and x-sandbox-token must be ASCII");
    }
    const sandboxId = rawId.trim();
    const token = rawToken.trim();
    if (!sandboxId || !token) {
      throw new HttpError(400, "x-sandbox-id and x-sandbox-token must not be blank");
    }
    // The token first: without a valid one nothing reveals whether a sandbox exists.
    let session;
    try {
      session = await this.#o.store.getSshSession(token);
    } catch (err) {
      this.#o.log.error("ssh session lookup failed", { error: errorMessage(err) });
      throw new HttpError(500, "session lookup failed");
    }
    const now = (this.#o.now ?? Date.now)();
    if (!session) throw new HttpError(401, "unknown token");
    if (session.revoked) throw new HttpError(401, "token revoked");
    if (session.sandbox_id !== sandboxId) {
      throw new HttpError(401, "token does not belong to this sandbox");
    }
    if (session.expires_at_ms > 0 && now > session.expires_at_ms) {
      throw new HttpError(401, "token expired");
    }
    const record = await this.#o.store.getSandbox(sandboxId);
    if (!record) throw new HttpError(404, "sandbox not found");
    if (record.sandbox.phase !== "SANDBOX_PHASE_READY") {
      throw new HttpError(412, "sandbox is not ready");
    }
    return { sandboxId, token, expiresAtMs: session.expires_at_ms };
  }

  /**
   * Handles one request whose head has been read; `rest` holds bytes the
   * client sent after the head (forwarded once the tunnel is up).
   */
  async handle(head: RequestHead, socket: Socket, rest: Uint8Array): Promise<void> {
    const auth = await this.#admit(head, socket);
    if (!auth) return;
    const log = this.#o.log;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.slots.release(auth.token, auth.sandboxId);
    };
    const gone = new AbortController();
    let relay: Duplex | undefined;
    let drain: ReturnType<typeof setTimeout> | undefined;
    const tunnel: Tunnel = {
      ...auth,
      bridged: false,
      close: (reason) => {
        log.info("closing ssh tunnel", { sandbox: auth.sandboxId, reason });
        gone.abort();
        relay?.destroy();
        socket.destroy();
      },
    };
    this.#tunnels.add(tunnel);
    // The client is done once it stops sending or goes away: its slots are
    // free from then on, and the sandbox side gets a moment to finish.
    const onClientEnd = () => {
      release();
      drain ??= setTimeout(
        () => tunnel.close("client finished; the sandbox side did not"),
        this.#o.drainMs ?? TUNNEL_DRAIN_MS,
      );
    };
    const onClose = () => {
      release();
      gone.abort();
    };
    socket.once("close", onClose);
    const early = new EarlyBytes(socket, rest, () => gone.abort());
    try {
      relay = await this.#openRelay(auth.sandboxId, socket, gone.signal);
      if (!relay) return;
      early.stop();
      socket.pause();
      if (socket.destroyed || gone.signal.aborted || relay.destroyed) {
        relay.destroy();
        socket.destroy();
        return;
      }
      socket.write(connectEstablished());
      early.flushTo(relay);
      tunnel.bridged = true;
      socket.once("end", onClientEnd);
      const result = await bridge(socket, relay);
      log.debug("ssh tunnel closed", {
        sandbox: auth.sandboxId,
        up: result.aToB + early.bytes,
        down: result.bToA,
        error: result.error ? errorMessage(result.error) : undefined,
      });
    } finally {
      clearTimeout(drain);
      socket.removeListener("close", onClose);
      socket.removeListener("end", onClientEnd);
      early.stop();
      this.#tunnels.delete(tunnel);
      release();
    }
  }

  /**
   * Authorizes a request and takes its slots. A refused one is answered
   * (4xx/5xx); one whose client left meanwhile gives its slots back.
   * Undefined unless the tunnel may go ahead.
   */
  async #admit(head: RequestHead, socket: Socket): Promise<TunnelAuth | undefined> {
    let auth: TunnelAuth;
    try {
      auth = await this.authorize(head);
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      socket.end(httpResponse(status, { body: errorMessage(err) }));
      return undefined;
    }
    if (!this.slots.acquire(auth.token, auth.sandboxId)) {
      socket.end(httpResponse(429, { body: "too many connections for this token or sandbox" }));
      return undefined;
    }
    if (socket.destroyed) { // the client left while it was being authorized
      this.slots.release(auth.token, auth.sandboxId);
      return undefined;
    }
    return auth;
  }

  /**
   * A relay to the sandbox, or undefined when none came: the client is
   * told why (429 when there is no relay capacity, 502 otherwise) unless it
   * has gone, in which case its socket is destroyed.
   */
  async #openRelay(
    sandboxId: string,
    socket: Socket,
    gone: AbortSignal,
  ): Promise<Duplex | undefined> {
    try {
      const pending = await this.#o.registry.openRelay(sandboxId, {
        sessionWaitMs: this.#o.sessionWaitMs ?? SSH_SESSION_WAIT_MS,
        signal: gone,
      });
      return await pending.stream;
    } catch (err) {
      if (!socket.destroyed && !gone.aborted) {
        const busy = err instanceof StatusError && err.code === Code.RESOURCE_EXHAUSTED;
        socket.end(
          busy
            ? httpResponse(429, { body: `no relay capacity: ${errorMessage(err)}` })
            : httpResponse(502, { body: `no relay to the sandbox: ${errorMessage(err)}` }),
        );
      } else {
        socket.destroy();
      }
      return undefined;
    }
  }
}

/**
 * What a client sends before its tunnel is up, kept for the sandbox so that
 * the client's end is seen at once (and cancels the relay request); the
 * socket is paused once {@link MAX_EARLY_BYTES} are kept.
 */
class EarlyBytes {
  readonly #socket: Socket;
  readonly #chunks: Uint8Array[];
  #bytes: number;
  readonly #onEnd: () => void;
  readonly #onData = (chunk: Uint8Array): void => {
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    if (this.#bytes >= MAX_EARLY_BYTES) this.#socket.pause();
  };

  /** Starts keeping what `socket` sends after `rest`; `onEnd` runs when the client ends first. */
  constructor(socket: Socket, rest: Uint8Array, onEnd: () => void) {
    this.#socket = socket;
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#bytes = rest.length;
    this.#onEnd = onEnd;
    socket.on("data", this.#onData);
    socket.once("end", onEnd);
    if (this.#bytes < MAX_EARLY_BYTES) socket.resume();
  }

  /** Bytes kept in all (including those already flushed). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Stops keeping (idempotent). */
  stop(): void {
    this.#socket.removeListener("data", this.#onData);
    this.#socket.removeListener("end", this.#onEnd);
  }

  /** Writes what was kept to `relay` and forgets it. */
  flushTo(relay: Duplex): void {
    for (const chunk of this.#chunks) relay.write(chunk);
    this.#chunks.length = 0;
  }
}
