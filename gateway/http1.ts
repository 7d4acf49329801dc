/**
 * The little HTTP/1.1 the gateway speaks on its port besides gRPC (`CONNECT
 * /connect/ssh`, `GET /healthz`, `GET /readyz`): the request head as the
 * handlers see it (parsed by `node:http` in the listener) and the raw
 * responses written on a socket that `node:http` no longer drives (after a
 * CONNECT, the handler owns the bytes). Pure; the listener does the I/O.
 *
 * @module
 */
import { type IncomingMessage, STATUS_CODES } from "node:http";
import { capLine } from "../core/text.ts";

/** Largest request head accepted (`maxHeaderSize` of the listener's parser); more is 431. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Longest response body, in bytes: bodies are one-line error texts that may quote a request. */
export const MAX_BODY_BYTES = 1024;

/** A parsed request line and headers. */
export interface RequestHead {
  method: string;
  target: string;
  version: string;
  /** Header values by lower-case name (repeated headers joined with ", "). */
  headers: Map<string, string>;
}

/** An HTTP error to answer with. */
export class HttpError extends Error {
  /** HTTP status code. */
  readonly status: number;
  /** Creates an error answered with `status` and `message` as the body. */
  constructor(status: number, message: string) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

/**
 * The {@link RequestHead} of a request `node:http` parsed. Headers come from
 * `rawHeaders`, every repeat joined with ", " (node:http itself drops repeats
 * of some names, such as `authorization`, and joins `cookie` with "; ").
 */
export function requestHeadOf(req: IncomingMessage): RequestHead {
  const headers = new Map<string, string>();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i].toLowerCase();
    const prev = headers.get(key);
    headers.set(key, prev === undefined ? raw[i + 1] : `${prev}, ${raw[i + 1]}`);
  }
  return {
    method: req.method ?? "",
    target: req.url ?? "",
    version: `HTTP/${req.httpVersion}`,
    headers,
  };
}

/** Whether a header value holds only visible ASCII and spaces. */
export function isAsciiValue(value: string): boolean {
  return /^[\x20-\x7e]*$/.test(value);
}

/** Options of {@link httpResponse}. */
export interface ResponseOptions {
  /** Text body (a trailing newline is added), cut at {@link MAX_BODY_BYTES}. */
  body?: string;
  /** Extra headers. */
  headers?: Record<string, string>;
  /** Close the connection after this response (default true). */
  close?: boolean;
}

/** Serialises a complete HTTP/1.1 response. */
export function httpResponse(status: number, options: ResponseOptions = {}): Uint8Array {
  const body = options.body === undefined ? "" : `${capLine(options.body, MAX_BODY_BYTES)}\n`;
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Status"}`];
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (status !== 200 || body !== "" || options.close !== false) {
    headers["content-type"] ??= "text/plain; charset=utf-8";
    headers["content-length"] = String(new TextEncoder().encode(body).length);
  }
  if (options.close !== false) headers["connection"] = "close";
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n${body}`);
}

/** The head of a successful CONNECT: after it the connection carries raw bytes. */
export function connectEstablished(): Uint8Array {
  return new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n");
}
