/**
 * `CONNECT /connect/ssh`: the HTTP tunnel that carries an SSH connection to
 * a sandbox's sshd through a supervisor relay.
 *
 * Statuses: 405 (not CONNECT), 400 (bad headers), 401 (missing, unknown,
 * revoked, expired or mismatched token), 404 (unknown sandbox), 412 (not
 * READY), 429 (over 3 connections per token or 20 per sandbox), 502 (no
 * relay came). On 200 the socket is bridged to the relay until either side
 * closes; then the slots are released.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { bridge } from "../core/bridge.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import type { SessionRegistry } from "../core/registry.ts";
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
}

/** Serves `CONNECT` requests on the SSH connect path. */
export class SshTunnel {
  readonly #o: SshTunnelOptions;
  /** Connection caps. */
  readonly slots: ConnectionSlots = new ConnectionSlots();
  readonly #open = new Set<Socket>();

  /** Creates the tunnel handler. */
  constructor(options: SshTunnelOptions) {
    this.#o = options;
  }

  /** Number of tunnels currently bridged. */
  get openTunnels(): number {
    return this.#open.size;
  }

  /** Closes every open tunnel (shutdown). */
  closeAll(): void {
    for (const s of this.#open) s.destroy();
  }

  /** Checks a request; returns the sandbox id and token, or throws an {@link HttpError}. */
  async authorize(head: RequestHead): Promise<{ sandboxId: string; token: string }> {
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
    return { sandboxId, token };
  }

  /**
   * Handles one request whose head has been read; `rest` holds bytes the
   * client sent after the head (forwarded once the tunnel is up).
   */
  async handle(head: RequestHead, socket: Socket, rest: Uint8Array): Promise<void> {
    const log = this.#o.log;
    let auth: { sandboxId: string; token: string };
    try {
      auth = await this.authorize(head);
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      socket.end(httpResponse(status, { body: errorMessage(err) }));
      return;
    }
    if (!this.slots.acquire(auth.token, auth.sandboxId)) {
      socket.end(httpResponse(429, { body: "too many connections for this token or sandbox" }));
      return;
    }
    const gone = new AbortController();
    const onGone = () => gone.abort();
    socket.once("close", onGone);
    try {
      let relay: Duplex;
      try {
        const pending = await this.#o.registry.openRelay(auth.sandboxId, {
          sessionWaitMs: this.#o.sessionWaitMs ?? SSH_SESSION_WAIT_MS,
          signal: gone.signal,
        });
        relay = await pending.stream;
      } catch (err) {
        if (!socket.destroyed) {
          socket.end(httpResponse(502, { body: `no relay to the sandbox: ${errorMessage(err)}` }));
        }
        return;
      }
      if (socket.destroyed) {
        relay.destroy();
        return;
      }
      socket.write(connectEstablished());
      if (rest.length > 0) relay.write(rest);
      this.#open.add(socket);
      const result = await bridge(socket, relay);
      this.#open.delete(socket);
      log.debug("ssh tunnel closed", {
        sandbox: auth.sandboxId,
        up: result.aToB,
        down: result.bToA,
        error: result.error ? errorMessage(result.error) : undefined,
      });
    } finally {
      socket.removeListener("close", onGone);
      this.slots.release(auth.token, auth.sandboxId);
    }
  }
}
