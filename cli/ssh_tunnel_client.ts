/**
 * The client half of the gateway's SSH tunnel (what `openshell ssh-proxy`
 * does as an ssh `ProxyCommand`): open TCP (for https, TLS through
 * `node:tls` with core/tls.ts's options: the configured CA, the client
 * certificate), send `CONNECT <path>` with the sandbox id and session token
 * through `node:http` (`http.request({method: "CONNECT"})` on that socket;
 * bytes that came with the reply head are kept), retry `412` (sandbox not
 * ready yet) with backoff for up to 60 s, then pump bytes both ways,
 * half-close aware, optionally checking the sandbox's host key on the way
 * (see `ssh_hostkey.ts`).
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { retryWhile } from "../core/backoff.ts";
import { hostPort } from "../core/endpoint.ts";
import { writeAll } from "../core/io.ts";
import type { CreateSshSessionResponse } from "../core/protocol.ts";
import {
  describeTlsDrop,
  describeTlsFailure,
  isClientCertificateRefusal,
  tlsConnectOptions,
} from "../core/tls.ts";
import {
  type GatewayEndpoint,
  importBundleCommand,
  isLoopbackOrUnspecified,
  type TlsMaterial,
} from "./config.ts";
import { CliError } from "./errors.ts";
import type { HostKeyVerifier } from "./ssh_hostkey.ts";

/** Largest reply head accepted from the gateway (`maxHeaderSize` of the reply parser). */
export const MAX_REPLY_HEAD_BYTES = 8192;
/** How long `412 Precondition Failed` (not ready) is retried. */
export const DEFAULT_MAX_WAIT_MS = 60_000;
/** Default connect path. */
export const DEFAULT_CONNECT_PATH = "/connect/ssh";
/** How long a TLS handshake may take. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 15_000;
/** Bytes read ahead from a TLS socket before it is paused. */
const READ_AHEAD_BYTES = 256 * 1024;

/** Where and as whom to open a tunnel. */
export interface TunnelTarget {
  /** `http` = plain TCP, `https` = TLS. */
  scheme: "http" | "https";
  /** Gateway host (IPv6 without brackets). */
  host: string;
  /** Gateway port. */
  port: number;
  /** Request path, e.g. `/connect/ssh`. */
  path: string;
  /** Sandbox id (`x-sandbox-id`). */
  sandboxId: string;
  /** Session token (`x-sandbox-token`). */
  token: string;
  /** TLS files (https). */
  tls?: TlsMaterial;
  /** The gateway's registered name (for "what to do" hints). */
  gatewayName?: string;
}

/** The byte stream of a tunnel: its TCP or TLS socket behind `Deno.Conn`-like calls. */
export interface TunnelConn {
  /** Like `Deno.Conn.read`. */
  read(p: Uint8Array): Promise<number | null>;
  /** Like `Deno.Conn.write`. */
  write(p: Uint8Array): Promise<number>;
  /** Half-closes the sending side. */
  closeWrite(): Promise<void>;
  /** Closes both sides. */
  close(): void;
}

const TOKEN = /^[A-Za-z0-9._~+/=-]{1,4096}$/;
const SANDBOX_ID = /^[A-Za-z0-9._-]{1,128}$/;
const PATH = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,2047}$/;

/** Checks the fields that end up in the request (they come from the gateway or the command line). */
export function validateTarget(t: TunnelTarget): void {
  if (!SANDBOX_ID.test(t.sandboxId)) throw new CliError(`invalid sandbox id "${t.sandboxId}"`);
  if (!TOKEN.test(t.token)) throw new CliError("invalid SSH session token");
  if (!PATH.test(t.path)) throw new CliError(`invalid connect path "${t.path}"`);
  if (!/^[A-Za-z0-9.:-]{1,253}$/.test(t.host)) {
    throw new CliError(`invalid gateway host "${t.host}"`);
  }
  if (!(Number.isInteger(t.port) && t.port > 0 && t.port < 65536)) {
    throw new CliError(`invalid gateway port ${t.port}`);
  }
}

/** The headers of the `CONNECT` request. */
export function connectHeaders(t: TunnelTarget): Record<string, string> {
  return {
    "Host": hostPort(t.host, t.port),
    "X-Sandbox-Id": t.sandboxId,
    "X-Sandbox-Token": t.token,
  };
}

/** The one-line error for a refused tunnel. */
export function connectFailureMessage(status: number, detail = ""): string {
  const suffix = detail ? ` (${detail})` : "";
  switch (status) {
    case 401:
      return `the gateway refused the SSH session token: it is unknown, expired or revoked${suffix}`;
    case 404:
      return `the sandbox does not exist on this gateway${suffix}`;
    case 412:
      return `the sandbox did not become ready in time${suffix}`;
    case 429:
      return `too many SSH connections to this sandbox or with this token; try again later${suffix}`;
    case 502:
      return `the gateway could not reach the sandbox (its supervisor is not connected)${suffix}`;
    case 405:
    case 400:
      return `the gateway rejected the tunnel request (HTTP ${status})${suffix}`;
    default:
      return `the gateway refused the tunnel with HTTP ${status}${suffix}`;
  }
}

/** The gateway's URL as messages name it. */
export function gatewayUrl(t: Pick<TunnelTarget, "scheme" | "host" | "port">): string {
  return `${t.scheme}://${hostPort(t.host, t.port)}`;
}

function errorCode(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" ? code : "";
}

/** Whether an error means the peer closed or reset the connection. */
export function isConnectionDrop(e: unknown): boolean {
  return e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe ||
    e instanceof Deno.errors.BadResource || e instanceof Deno.errors.ConnectionAborted ||
    /^(ECONNRESET|EPIPE|ECONNABORTED|ERR_STREAM_DESTROYED|ERR_STREAM_WRITE_AFTER_END|ERR_SOCKET_CLOSED)$/
      .test(errorCode(e)) ||
    /socket disconnected before secure TLS|socket hang up/i.test((e as Error)?.message ?? "");
}

function tlsHint(t: TunnelTarget): { importBundle: string } {
  return { importBundle: importBundleCommand(t.gatewayName, gatewayUrl(t)) };
}

function tlsDropError(t: TunnelTarget): CliError {
  return new CliError(
    describeTlsDrop(gatewayUrl(t), {
      ...tlsHint(t),
      clientCertificate: !!(t.tls?.cert && t.tls?.key),
    }),
  );
}

/** A socket behind the {@link TunnelConn} calls (reads queue up to a bound, then pause it). */
export function socketConn(socket: net.Socket): TunnelConn {
  const chunks: Uint8Array[] = [];
  let queued = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  socket.on("data", (b: Buffer) => {
    chunks.push(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
    queued += b.byteLength;
    if (queued >= READ_AHEAD_BYTES) socket.pause();
    notify();
  });
  socket.on("end", () => {
    ended = true;
    notify();
  });
  socket.on("close", () => {
    ended = true;
    notify();
  });
  socket.on("error", (e: Error) => {
    failure ??= e;
    notify();
  });
  return {
    async read(p) {
      while (chunks.length === 0) {
        if (failure) throw failure;
        if (ended) return null;
        await new Promise<void>((r) => wake = r);
      }
      const first = chunks[0];
      const n = Math.min(p.length, first.length);
      p.set(first.subarray(0, n));
      if (n === first.length) chunks.shift();
      else chunks[0] = first.subarray(n);
      queued -= n;
      if (queued < READ_AHEAD_BYTES && socket.isPaused()) socket.resume();
      return n;
    },
    write(p) {
      if (failure) return Promise.reject(failure);
      if (socket.destroyed || socket.writableEnded) {
        return Promise.reject(new Deno.errors.BrokenPipe("the connection is closed"));
      }
      return new Promise((resolve, reject) => {
        socket.write(p.slice(), (err) => err ? reject(err) : resolve(p.length));
      });
    },
    closeWrite() {
      return new Promise((resolve) => {
        if (socket.destroyed || socket.writableEnded) resolve();
        else socket.end(() => resolve());
      });
    },
    close() {
      socket.destroy();
    },
  };
}

/** The TLS handshake; the socket once it is done, or a one-line error. */
function connectTls(t: TunnelTarget): Promise<tls.TLSSocket> {
  const url = gatewayUrl(t);
  const material = {
    ...(t.tls?.ca ? { ca: t.tls.ca } : {}),
    ...(t.tls?.cert && t.tls?.key ? { cert: t.tls.cert, key: t.tls.key } : {}),
  };
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      ...tlsConnectOptions(t.host, material),
      port: t.port,
      ALPNProtocols: ["http/1.1"],
    });
    const timer = setTimeout(() => {
      fail(
        new CliError(
          `cannot reach the gateway at ${url}: no TLS handshake in time (a plaintext gateway ` +
            "never completes one: if it runs with --disable-tls, use an http:// URL)",
        ),
      );
    }, TLS_HANDSHAKE_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      socket.removeListener("error", onError);
      socket.removeListener("secureConnect", onSecure);
    };
    const fail = (err: Error) => {
      done();
      socket.destroy();
      reject(err);
    };
    const onSecure = () => {
      done();
      socket.setNoDelay(true);
      resolve(socket);
    };
    const onError = (e: Error) => fail(e);
    socket.once("secureConnect", onSecure);
    socket.on("error", onError);
  });
}

/** The one-line error for a failure while connecting to (or talking TLS with) the gateway. */
export function describeDialFailure(t: TunnelTarget, e: unknown): CliError {
  if (e instanceof CliError) return e;
  const url = gatewayUrl(t);
  if (e instanceof Deno.errors.NotCapable || /Requires net access/.test(String(e))) {
    return new CliError(
      `not permitted to connect to ${hostPort(t.host, t.port)} ` +
        "(the CLI's network grant does not cover it)",
    );
  }
  const message = `${errorCode(e)} ${(e as Error)?.message ?? String(e)}`.trim();
  if (e instanceof Deno.errors.ConnectionRefused || /ECONNREFUSED/.test(message)) {
    return new CliError(`cannot reach the gateway at ${url}: connection refused`);
  }
  if (/ENOTFOUND|EAI_AGAIN|failed to lookup/i.test(message)) {
    return new CliError(`cannot reach the gateway at ${url}: host not found`);
  }
  if (t.scheme === "https") {
    // A refused client certificate shows up as an alert or as a closed connection: one line.
    if (isClientCertificateRefusal(message) || isConnectionDrop(e)) return tlsDropError(t);
    const line = describeTlsFailure(message, url, tlsHint(t));
    if (line) return new CliError(line);
  }
  return new CliError(
    `cannot reach the gateway at ${url}: ${((e as Error)?.message ?? String(e)).split("\n")[0]}`,
  );
}

/** Opens the TCP (or TLS) connection to the gateway. */
export async function dialGateway(t: TunnelTarget): Promise<net.Socket> {
  try {
    if (t.scheme === "https") return await connectTls(t);
    return await new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: t.host, port: t.port, allowHalfOpen: true });
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.removeListener("error", reject);
        socket.setNoDelay(true);
        resolve(socket);
      });
    });
  } catch (e) {
    throw describeDialFailure(t, e);
  }
}

/** The gateway closed the connection without answering the tunnel request. */
export class ClosedBeforeReplyError extends CliError {
  /** Creates the error. */
  constructor() {
    super("the gateway closed the connection before answering the tunnel request");
    this.name = "ClosedBeforeReplyError";
  }
}

/** The gateway's reply to a `CONNECT`. */
export interface ConnectReply {
  /** Status code. */
  status: number;
  /** Reason phrase. */
  reason: string;
  /** The connection, positioned after the reply head (owned by the caller). */
  socket: net.Socket;
  /** Bytes that arrived with the reply head. */
  rest: Uint8Array;
}

/**
 * Sends the `CONNECT` on `socket` (node:http's client) and reads the reply
 * head. A reply that is not HTTP, or is longer than {@link MAX_REPLY_HEAD_BYTES},
 * rejects with a one-line {@link CliError}.
 */
export function requestConnect(socket: net.Socket, t: TunnelTarget): Promise<ConnectReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      method: "CONNECT",
      path: t.path,
      headers: connectHeaders(t),
      createConnection: () => socket,
      maxHeaderSize: MAX_REPLY_HEAD_BYTES,
    } as http.RequestOptions);
    req.once("connect", (res: http.IncomingMessage, sock: net.Socket, rest: Buffer) => {
      resolve({
        status: res.statusCode ?? 0,
        reason: res.statusMessage ?? "",
        socket: sock,
        rest: new Uint8Array(rest),
      });
    });
    req.once("error", (e: Error) => reject(replyError(e)));
    req.end();
  });
}

/** What a failed `CONNECT` exchange means for the user. */
function replyError(e: Error & { code?: string; rawPacket?: Uint8Array }): Error {
  const first = e.rawPacket;
  if (first && first.length >= 2 && (first[0] === 0x15 || first[0] === 0x16) && first[1] === 3) {
    return new CliError("the gateway answered in TLS: use an https:// URL for it");
  }
  if (e.code === "HPE_HEADER_OVERFLOW") return new CliError("the gateway sent an oversized reply");
  if (e.code?.startsWith("HPE_")) {
    return new CliError("the gateway did not answer with HTTP (wrong port or scheme?)");
  }
  if (e.code === "ECONNRESET" && /socket hang up/.test(e.message)) {
    return new ClosedBeforeReplyError();
  }
  return e;
}

/** Options of {@link openTunnel}. */
export interface OpenTunnelOptions {
  /** Stops waiting (and retrying). */
  signal?: AbortSignal;
  /** How long 412 is retried; default 60 s. */
  maxWaitMs?: number;
  /** Told about each 412 retry. */
  onRetry?: (delayMs: number) => void;
  /** Replaces {@link dialGateway} (tests). */
  dial?: (t: TunnelTarget) => Promise<net.Socket>;
  /** First retry delay; default 1 s (then 2, 4, 8, 8 … s). */
  initialDelayMs?: number;
}

/** An open tunnel: the connection and the bytes already read past the reply head. */
export interface Tunnel {
  /** The connection, positioned after the reply head. */
  conn: TunnelConn;
  /** Bytes of the SSH stream that arrived with the reply head. */
  early: Uint8Array;
}

/** A refused tunnel: the gateway answered with `status`. */
export class TunnelRefusedError extends CliError {
  /** The HTTP status of the reply. */
  readonly status: number;
  /** Creates the error with its one-line message. */
  constructor(status: number, detail: string) {
    super(connectFailureMessage(status, detail));
    this.name = "TunnelRefusedError";
    this.status = status;
  }
}

/** Sends `CONNECT` until it gets `200`, retrying `412` (not ready yet) with backoff. */
export function openTunnel(t: TunnelTarget, options: OpenTunnelOptions = {}): Promise<Tunnel> {
  validateTarget(t);
  const dial = options.dial ?? dialGateway;
  const initial = options.initialDelayMs ?? 1000;
  return retryWhile(() => connectOnce(t, dial), {
    initialMs: initial,
    maxMs: initial * 8,
    maxWaitMs: options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS,
    retryable: (e) => e instanceof TunnelRefusedError && e.status === 412,
    onRetry: (delay) => options.onRetry?.(delay),
    signal: options.signal,
  });
}

/** One `CONNECT`: the tunnel on `200`, else a {@link TunnelRefusedError} or a dial failure. */
async function connectOnce(
  t: TunnelTarget,
  dial: (t: TunnelTarget) => Promise<net.Socket>,
): Promise<Tunnel> {
  const socket = await dial(t);
  let reply: ConnectReply;
  try {
    reply = await requestConnect(socket, t);
  } catch (e) {
    socket.destroy();
    if (t.scheme === "https" && e instanceof ClosedBeforeReplyError) {
      // How a gateway that refuses this client's certificate usually shows up.
      throw tlsDropError(t);
    }
    throw describeDialFailure(t, e);
  }
  if (reply.status === 200) return { conn: socketConn(reply.socket), early: reply.rest };
  reply.socket.destroy();
  const detail = new TextDecoder().decode(reply.rest).split(/\r?\n/)[0].trim().slice(0, 200);
  throw new TunnelRefusedError(reply.status, detail || reply.reason);
}

/** A byte source such as stdin. */
export interface ByteReader {
  /** Like `Deno.Reader.read`. */
  read(p: Uint8Array): Promise<number | null>;
}

/** A byte sink such as stdout. */
export interface ByteWriter {
  /** Like `Deno.Writer.write`. */
  write(p: Uint8Array): Promise<number>;
}

/** Options of {@link pumpTunnel}. */
export interface PumpOptions {
  /** Client side input (ssh → proxy stdin). */
  input: ByteReader;
  /** Client side output (proxy stdout → ssh). */
  output: ByteWriter;
  /** Checks the sandbox's host key in the server's first bytes. */
  verifier?: HostKeyVerifier;
}

/** How a pump ended. */
export interface PumpResult {
  /** Resolves when the client's input ended and was half-closed to the gateway. */
  upstream: Promise<void>;
}

/**
 * Pumps bytes both ways until the gateway side ends (resolves) or fails /
 * the host key does not match (rejects; nothing past the mismatch reaches
 * the client). The end of the client's input is passed on as a half-close.
 */
export async function pumpTunnel(tunnel: Tunnel, options: PumpOptions): Promise<PumpResult> {
  const { conn } = tunnel;
  const verifier = options.verifier;
  let downDone = false;
  const upstream = (async () => {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await options.input.read(buf);
        if (n === null) break;
        const chunk = buf.subarray(0, n);
        verifier?.observeClient(chunk);
        await writeAll(conn, chunk);
      }
      if (!downDone) await conn.closeWrite();
    } catch {
      // The gateway side went away; the downstream half reports how.
    }
  })();
  /** Passes server bytes to the client; false once the client stopped reading. */
  const deliver = async (bytes: Uint8Array): Promise<boolean> => {
    const chunk = verifier ? verifier.fromServer(bytes) : bytes;
    try {
      if (chunk.length) await writeAll(options.output, chunk);
      return true;
    } catch (e) {
      // The client (ssh) stopped reading: the session is over.
      if (e instanceof Deno.errors.BrokenPipe) return false;
      throw e;
    }
  };
  try {
    const buf = new Uint8Array(64 * 1024);
    let open = tunnel.early.length ? await deliver(tunnel.early) : true;
    while (open) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (e) {
        if (isConnectionDrop(e)) break;
        throw e;
      }
      if (n === null) break;
      open = await deliver(buf.subarray(0, n));
    }
  } catch (e) {
    downDone = true;
    try {
      conn.close();
    } catch {
      // already closed
    }
    throw e;
  }
  downDone = true;
  return { upstream };
}

/** The tunnel target for a session, using the CLI's own endpoint when the gateway reports a local address. */
export function tunnelTargetOf(
  session: CreateSshSessionResponse,
  endpoint: GatewayEndpoint,
  tls?: TlsMaterial,
  gatewayName?: string,
): TunnelTarget {
  const local = !session.gateway_host || isLoopbackOrUnspecified(session.gateway_host);
  const scheme = session.gateway_scheme === "https" || session.gateway_scheme === "http"
    ? session.gateway_scheme
    : endpoint.scheme;
  return {
    scheme: local ? endpoint.scheme : scheme,
    host: local ? endpoint.host : session.gateway_host.replace(/^\[(.*)\]$/, "$1"),
    port: local || !session.gateway_port ? endpoint.port : session.gateway_port,
    path: session.connect_path || DEFAULT_CONNECT_PATH,
    sandboxId: session.sandbox_id,
    token: session.token,
    ...(tls ? { tls } : {}),
    ...(gatewayName ? { gatewayName } : {}),
  };
}
