/**
 * The little HTTP/1.1 the gateway speaks on its port besides gRPC: request
 * heads (for `CONNECT /connect/ssh`, `GET /healthz`, `GET /readyz`) and
 * responses. Pure parsing; the listener does the I/O.
 *
 * @module
 */
import { capLine } from "../core/text.ts";

/** Largest request head accepted. */
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

/** Index just past the `\r\n\r\n` that ends the head, or -1 when not there yet. */
export function findHeadEnd(buf: Uint8Array): number {
  for (let i = 3; i < buf.length; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Parses a request head (bytes up to and including the blank line). */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  const text = new TextDecoder("latin1").decode(bytes);
  const lines = text.split("\r\n");
  const [method, target, version, ...extra] = lines[0].split(" ");
  if (!method || !target || !version || extra.length > 0 || !TOKEN.test(method)) {
    throw new HttpError(400, "malformed request line");
  }
  if (!/^HTTP\/1\.[01]$/.test(version)) throw new HttpError(505, "HTTP version not supported");
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HttpError(400, "malformed header line");
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new HttpError(400, "malformed header name");
    const value = line.slice(colon + 1).trim();
    const key = name.toLowerCase();
    const prev = headers.get(key);
    headers.set(key, prev === undefined ? value : `${prev}, ${value}`);
  }
  return { method, target, version, headers };
}

/** Whether a header value holds only visible ASCII and spaces. */
export function isAsciiValue(value: string): boolean {
  return /^[\x20-\x7e]*$/.test(value);
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  412: "Precondition Failed",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

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
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}`];
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
