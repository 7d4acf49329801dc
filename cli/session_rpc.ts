/**
 * The two calls `ssh-proxy` makes in name mode, `CreateSshSession` and
 * `RevokeSshSession`, as plain gRPC over `node:http2` with the few protobuf
 * fields they carry encoded by hand: no grpc-js, no proto-loader, no
 * descriptors to load (about 150 ms of imports at every ssh connection).
 * TLS is the same as every other gateway connection (core/tls_options.ts:
 * the configured CA, the client certificate, IP hosts checked against the
 * certificate); failures become the same one-line errors as
 * {@link GatewayError}.
 *
 * @module
 */
import http2 from "node:http2";
import tls from "node:tls";
import { hostPort } from "../core/endpoint.ts";
import type { CreateSshSessionResponse } from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { tlsConnectOptions } from "../core/tls_options.ts";
import type { GatewayEndpoint, TlsMaterial } from "./config.ts";
import { type ConnectionFacts, GatewayError } from "./gateway_error.ts";

/** The gRPC service path prefix. */
const SERVICE = "/openshell.v1.OpenShell";
/** Largest reply accepted (a session reply is a few hundred bytes). */
export const MAX_REPLY_BYTES = 64 * 1024;

// ---- protobuf, the subset these messages use ----

/** Appends a varint. */
function varint(out: number[], v: number): void {
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** A message of string fields (`field number → value`; empty strings omitted, as proto3 does). */
export function encodeStrings(fields: Record<number, string>): Uint8Array {
  const out: number[] = [];
  for (const [no, value] of Object.entries(fields)) {
    const bytes = new TextEncoder().encode(value);
    if (!bytes.length) continue;
    varint(out, (Number(no) << 3) | 2);
    varint(out, bytes.length);
    for (const b of bytes) out.push(b);
  }
  return Uint8Array.from(out);
}

/** One decoded field: a varint (as a number) or length-delimited bytes. */
type Field = number | Uint8Array;

/** The fields of a message (last one wins, as protobuf says); unknown wire types throw. */
export function decodeFields(buf: Uint8Array): Map<number, Field> {
  const fields = new Map<number, Field>();
  let i = 0;
  const readVarint = (): number => {
    let v = 0;
    let scale = 1;
    for (let n = 0; n < 10; n++) {
      if (i >= buf.length) throw new Error("truncated varint");
      const b = buf[i++];
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 128;
    }
    throw new Error("varint too long");
  };
  while (i < buf.length) {
    const key = readVarint();
    const no = Math.floor(key / 8);
    switch (key & 7) {
      case 0:
        fields.set(no, readVarint());
        break;
      case 1:
        i += 8;
        break;
      case 2: {
        const len = readVarint();
        if (i + len > buf.length) throw new Error("truncated field");
        fields.set(no, buf.subarray(i, i + len));
        i += len;
        break;
      }
      case 5:
        i += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${key & 7}`);
    }
    if (i > buf.length) throw new Error("truncated field");
  }
  return fields;
}

function str(fields: Map<number, Field>, no: number): string {
  const v = fields.get(no);
  return v instanceof Uint8Array ? new TextDecoder().decode(v) : "";
}

function num(fields: Map<number, Field>, no: number): number {
  const v = fields.get(no);
  return typeof v === "number" ? v : 0;
}

/** `CreateSshSessionResponse` from its bytes (field numbers of proto/openshell.proto). */
export function decodeCreateSshSessionResponse(buf: Uint8Array): CreateSshSessionResponse {
  const f = decodeFields(buf);
  return {
    sandbox_id: str(f, 1),
    token: str(f, 2),
    gateway_host: str(f, 3),
    gateway_port: num(f, 4),
    gateway_scheme: str(f, 5),
    connect_path: str(f, 6),
    host_key_fingerprint: str(f, 7),
    expires_at_ms: num(f, 8),
  };
}

// ---- gRPC over HTTP/2 ----

/** Options of {@link SessionRpc}. */
export interface SessionRpcOptions {
  /** The gateway's URL. */
  endpoint: GatewayEndpoint;
  /** TLS files for https. */
  tls?: TlsMaterial;
  /** Its registered name (for "what to do" hints). */
  name?: string;
}

/** A transport failure shaped like grpc-js's, so {@link GatewayError} words it the same way. */
function unavailable(e: unknown): { code: number; details: string; message: string } {
  const err = e as { code?: unknown; message?: string };
  const code = typeof err?.code === "string" ? `${err.code} ` : "";
  const details = `No connection established. Last error: ${code}${err?.message ?? String(e)}`;
  return { code: Code.UNAVAILABLE, details, message: details };
}

/** A message in gRPC's length-prefixed framing (uncompressed). */
export function grpcFrame(message: Uint8Array): Uint8Array {
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
}

/** A gRPC status as {@link GatewayError} takes it. */
export type StatusFacts = { code: number; details: string; message: string };

/**
 * Collects one unary call's reply: the HTTP and gRPC status from the
 * headers and trailers, and the body (at most {@link MAX_REPLY_BYTES} plus
 * its 5-byte prefix).
 */
export class ReplyReader {
  #status: number | undefined;
  #grpcStatus: string | undefined;
  #grpcMessage = "";
  readonly #chunks: Uint8Array[] = [];
  #size = 0;

  /** The response headers. */
  response(h: http2.IncomingHttpHeaders): void {
    this.#status = Number(h[":status"]);
    this.headers(h);
  }

  /** Headers or trailers: takes `grpc-status` and `grpc-message`. */
  headers(h: http2.IncomingHttpHeaders): void {
    if (h["grpc-status"] !== undefined) this.#grpcStatus = String(h["grpc-status"]);
    if (h["grpc-message"] !== undefined) {
      try {
        this.#grpcMessage = decodeURIComponent(String(h["grpc-message"]));
      } catch {
        this.#grpcMessage = String(h["grpc-message"]);
      }
    }
  }

  /** Keeps a chunk of the body; false (nothing kept) once the reply is oversized. */
  data(b: Uint8Array): boolean {
    this.#size += b.byteLength;
    if (this.#size > MAX_REPLY_BYTES + 5) return false;
    this.#chunks.push(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
    return true;
  }

  /** Once the stream closed: the reply message, or the status the call fails with. */
  outcome(): { message: Uint8Array } | { failure: StatusFacts } {
    if (this.#grpcStatus === undefined) {
      const why = this.#status === undefined
        ? "the connection closed before a reply"
        : `HTTP status ${this.#status} without a gRPC status`;
      return { failure: { code: Code.UNAVAILABLE, details: why, message: why } };
    }
    if (this.#grpcStatus !== "0") {
      const text = this.#grpcMessage;
      return { failure: { code: Number(this.#grpcStatus), details: text, message: text } };
    }
    const body = new Uint8Array(this.#size);
    let off = 0;
    for (const c of this.#chunks) {
      body.set(c, off);
      off += c.byteLength;
    }
    const len = body.length >= 5 ? new DataView(body.buffer, body.byteOffset).getUint32(1) : -1;
    if (len < 0 || body[0] !== 0 || 5 + len !== body.length) {
      const why = "the gateway sent a malformed reply";
      return { failure: { code: Code.INTERNAL, details: why, message: why } };
    }
    return { message: body.subarray(5) };
  }
}

/** `CreateSshSession` and `RevokeSshSession` on one HTTP/2 connection, opened on first use. */
export class SessionRpc {
  /** The gateway's URL. */
  readonly endpoint: GatewayEndpoint;
  readonly #options: SessionRpcOptions;
  readonly #facts: ConnectionFacts;
  #session: http2.ClientHttp2Session | undefined;

  /** Creates the client; nothing connects until the first call. */
  constructor(options: SessionRpcOptions) {
    this.endpoint = options.endpoint;
    this.#options = options;
    this.#facts = {
      clientCertificate: !!(options.tls?.cert && options.tls.key),
      ...(options.name ? { name: options.name } : {}),
    };
  }

  #connect(): http2.ClientHttp2Session {
    if (this.#session && !this.#session.closed && !this.#session.destroyed) return this.#session;
    const { endpoint, tls: material } = this.#options;
    const authority = `${endpoint.scheme}://${hostPort(endpoint.host, endpoint.port)}`;
    const session = endpoint.scheme === "https"
      ? http2.connect(authority, {
        createConnection: () =>
          tls.connect({
            ...tlsConnectOptions(endpoint.host, {
              ...(material?.ca ? { ca: material.ca } : {}),
              ...(material?.cert && material?.key
                ? { cert: material.cert, key: material.key }
                : {}),
            }),
            port: endpoint.port,
            ALPNProtocols: ["h2"],
          }),
      })
      : http2.connect(authority);
    session.on("error", () => {}); // each call reports its own failure
    this.#session = session;
    return session;
  }

  /** One unary call: the reply message's bytes, or a {@link GatewayError}. */
  #unary(method: string, message: Uint8Array, deadlineMs: number): Promise<Uint8Array> {
    const fail = (e: unknown) => new GatewayError(e, this.endpoint, this.#facts);
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
      };
      const timer = setTimeout(() => {
        settle(() => {
          stream?.close(http2.constants.NGHTTP2_CANCEL);
          reject(fail({ code: Code.DEADLINE_EXCEEDED, details: "Deadline exceeded", message: "" }));
        });
      }, deadlineMs);
      let stream: http2.ClientHttp2Stream | undefined;
      try {
        stream = this.#connect().request({
          ":method": "POST",
          ":path": `${SERVICE}/${method}`,
          "content-type": "application/grpc",
          "te": "trailers",
          "grpc-timeout": `${Math.max(1, Math.ceil(deadlineMs))}m`,
        });
      } catch (e) {
        settle(() => reject(fail(unavailable(e))));
        return;
      }
      const reply = new ReplyReader();
      stream.on("response", (h) => reply.response(h));
      stream.on("trailers", (h) => reply.headers(h));
      stream.on("data", (b: Uint8Array) => {
        if (reply.data(b)) return;
        settle(() => {
          stream!.close(http2.constants.NGHTTP2_CANCEL);
          reject(fail({
            code: Code.RESOURCE_EXHAUSTED,
            details: "the gateway sent an oversized reply",
            message: "",
          }));
        });
      });
      stream.on("error", (e) => settle(() => reject(fail(unavailable(e)))));
      stream.on("close", () => {
        settle(() => {
          const outcome = reply.outcome();
          if ("failure" in outcome) reject(fail(outcome.failure));
          else resolve(outcome.message);
        });
      });
      stream.end(grpcFrame(message));
    });
  }

  /** `CreateSshSession`. */
  async createSshSession(
    sandboxId: string,
    deadlineMs = 30_000,
  ): Promise<CreateSshSessionResponse> {
    const reply = await this.#unary(
      "CreateSshSession",
      encodeStrings({ 1: sandboxId }),
      deadlineMs,
    );
    try {
      return decodeCreateSshSessionResponse(reply);
    } catch (e) {
      const why = `the gateway sent a malformed reply (${(e as Error).message})`;
      throw new GatewayError(
        { code: Code.INTERNAL, details: why, message: why },
        this.endpoint,
        this.#facts,
      );
    }
  }

  /** `RevokeSshSession`; whether the token was live. */
  async revokeSshSession(token: string, deadlineMs = 30_000): Promise<boolean> {
    const reply = await this.#unary("RevokeSshSession", encodeStrings({ 1: token }), deadlineMs);
    try {
      return num(decodeFields(reply), 1) === 1;
    } catch {
      return false;
    }
  }

  /** Closes the connection. */
  close(): void {
    const s = this.#session;
    this.#session = undefined;
    if (s && !s.destroyed) s.destroy();
  }
}
