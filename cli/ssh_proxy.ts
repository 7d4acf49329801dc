/**
 * The client half of the gateway's SSH tunnel (what `openshell ssh-proxy`
 * does as an ssh `ProxyCommand`): open TCP (TLS for https), send
 * `CONNECT <path>` with the sandbox id and session token, read the reply
 * head without consuming a byte past it, retry `412` (sandbox not ready yet)
 * with backoff for up to 60 s, then pump bytes both ways, half-close aware,
 * optionally checking the sandbox's host key on the way (see
 * `ssh_hostkey.ts`).
 *
 * @module
 */
import { Backoff, sleep } from "../core/backoff.ts";
import type { CreateSshSessionResponse } from "../core/protocol.ts";
import { type GatewayEndpoint, isLoopbackOrUnspecified, type TlsMaterial } from "./config.ts";
import { CliError } from "./errors.ts";
import type { HostKeyVerifier } from "./ssh_hostkey.ts";

/** Largest reply head accepted from the gateway. */
export const MAX_HEAD_BYTES = 8192;
/** How long `412 Precondition Failed` (not ready) is retried. */
export const DEFAULT_MAX_WAIT_MS = 60_000;
/** Default connect path. */
export const DEFAULT_CONNECT_PATH = "/connect/ssh";

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

function hostHeader(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The `CONNECT` request head. */
export function connectRequest(t: TunnelTarget): string {
  return `CONNECT ${t.path} HTTP/1.1\r\n` +
    `Host: ${hostHeader(t.host, t.port)}\r\n` +
    `X-Sandbox-Id: ${t.sandboxId}\r\n` +
    `X-Sandbox-Token: ${t.token}\r\n` +
    `\r\n`;
}

/** A parsed HTTP reply head. */
export interface ResponseHead {
  /** Status code. */
  status: number;
  /** Reason phrase. */
  reason: string;
  /** Header fields, names lower-cased. */
  headers: Record<string, string>;
  /** Offset of the first byte after the blank line. */
  end: number;
}

/**
 * Parses an HTTP/1.x reply head from the start of `buf`; `null` while the
 * blank line has not arrived. Throws on anything that is not HTTP or longer
 * than {@link MAX_HEAD_BYTES}.
 */
export function parseResponseHead(buf: Uint8Array): ResponseHead | null {
  let end = -1;
  for (let i = 0; i + 3 < buf.length && i < MAX_HEAD_BYTES; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) {
      end = i + 4;
      break;
    }
  }
  if (end < 0) {
    if (buf.length >= MAX_HEAD_BYTES) throw new CliError("the gateway sent an oversized reply");
    if (buf.length >= 5 && new TextDecoder().decode(buf.subarray(0, 5)) !== "HTTP/") {
      throw new CliError("the gateway did not answer with HTTP (wrong port or scheme?)");
    }
    return null;
  }
  const lines = new TextDecoder().decode(buf.subarray(0, end - 4)).split("\r\n");
  const m = lines[0].match(/^HTTP\/1\.[01] (\d{3})(?: (.*))?$/);
  if (!m) throw new CliError("the gateway did not answer with HTTP (wrong port or scheme?)");
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: Number(m[1]), reason: m[2] ?? "", headers, end };
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

/** Opens the TCP (or TLS) connection to the gateway. */
export async function dialGateway(t: TunnelTarget): Promise<Deno.Conn> {
  const where = hostHeader(t.host, t.port);
  try {
    if (t.scheme === "https") {
      const dec = new TextDecoder();
      return await Deno.connectTls({
        hostname: t.host,
        port: t.port,
        ...(t.tls?.ca ? { caCerts: [dec.decode(t.tls.ca)] } : {}),
        ...(t.tls?.cert && t.tls?.key
          ? { cert: dec.decode(t.tls.cert), key: dec.decode(t.tls.key) }
          : {}),
        alpnProtocols: ["http/1.1"],
      });
    }
    const conn = await Deno.connect({ hostname: t.host, port: t.port });
    conn.setNoDelay(true);
    return conn;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new CliError(
        `not permitted to connect to ${where} (the CLI's network grant does not cover it)`,
      );
    }
    if (e instanceof Deno.errors.ConnectionRefused) {
      throw new CliError(`cannot reach the gateway at ${where}: connection refused`);
    }
    throw new CliError(`cannot reach the gateway at ${where}: ${(e as Error).message}`);
  }
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

/** Reads the reply head; returns it with the bytes that followed it in the same reads. */
export async function readResponseHead(
  conn: { read(p: Uint8Array): Promise<number | null> },
): Promise<{ head: ResponseHead; rest: Uint8Array }> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  while (true) {
    const n = await conn.read(chunk);
    if (n === null) {
      throw new CliError("the gateway closed the connection before answering the tunnel request");
    }
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    const head = parseResponseHead(buf);
    if (head) return { head, rest: buf.slice(head.end) };
  }
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
  dial?: (t: TunnelTarget) => Promise<Deno.Conn>;
  /** First retry delay; default 1 s (then 2, 4, 8, 8 … s). */
  initialDelayMs?: number;
}

/** An open tunnel: the connection and the bytes already read past the reply head. */
export interface Tunnel {
  /** The connection, positioned after the reply head. */
  conn: Deno.Conn;
  /** Bytes of the SSH stream that arrived with the reply head. */
  early: Uint8Array;
}

/** Sends `CONNECT` until it gets `200`, retrying `412` with backoff. */
export async function openTunnel(
  t: TunnelTarget,
  options: OpenTunnelOptions = {},
): Promise<Tunnel> {
  validateTarget(t);
  const dial = options.dial ?? dialGateway;
  const maxWait = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
  const initial = options.initialDelayMs ?? 1000;
  const backoff = new Backoff({ initialMs: initial, maxMs: initial * 8 });
  const started = Date.now();
  const request = new TextEncoder().encode(connectRequest(t));
  while (true) {
    const conn = await dial(t);
    let keep = false;
    try {
      await writeAll(conn, request);
      const { head, rest } = await readResponseHead(conn);
      if (head.status === 200) {
        keep = true;
        return { conn, early: rest };
      }
      const detail = new TextDecoder().decode(rest).split(/\r?\n/)[0].trim().slice(0, 200);
      if (head.status === 412) {
        const delay = backoff.next();
        if (Date.now() - started + delay <= maxWait) {
          options.onRetry?.(delay);
          conn.close();
          keep = true; // closed already
          await sleep(delay, options.signal);
          continue;
        }
      }
      throw new CliError(connectFailureMessage(head.status, detail || head.reason));
    } finally {
      if (!keep) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
    }
  }
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
        if (e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BadResource) break;
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
  };
}
