/**
 * Gateway endpoint URLs (`http://HOST:PORT`, `https://HOST:PORT`): one
 * parser for every role, with one-line messages.
 *
 * @module
 */

/** A parsed gateway URL. */
export interface GatewayEndpoint {
  /** Normalised `scheme://host:port` (IPv6 hosts in brackets). */
  url: string;
  /** `http` = plaintext, `https` = TLS. */
  scheme: "http" | "https";
  /** Host name or address, IPv6 without brackets. */
  host: string;
  /** Port (the scheme's default when the URL names none). */
  port: number;
  /** Path after the authority ("" when none). */
  path: string;
}

/** A malformed endpoint; the message reads well after the name of the setting. */
export class EndpointError extends Error {
  /** Creates an error; `message` has no prefix (e.g. `is not a URL: "x"`). */
  constructor(message: string) {
    super(message);
    this.name = "EndpointError";
  }
}

/** Options of {@link parseGatewayUrl}. */
export interface GatewayUrlOptions {
  /** Accept a path after the authority (default: refuse it). */
  allowPath?: boolean;
}

/** `host` as it appears in a URL (IPv6 in brackets). */
export function hostForUrl(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** `host:port` as in a URL authority, a grpc-js target or a Host header (IPv6 in brackets). */
export function hostPort(host: string, port: number): string {
  return `${hostForUrl(host)}:${port}`;
}

/**
 * Parses a gateway URL. Throws an {@link EndpointError} for anything but
 * http(s) with a host, without credentials, query or fragment (and without
 * a path unless allowed).
 */
export function parseGatewayUrl(text: string, options: GatewayUrlOptions = {}): GatewayEndpoint {
  let u: URL;
  try {
    u = new URL(text.trim());
  } catch {
    throw new EndpointError(
      `is not a URL: "${text}" (expected http://HOST:PORT or https://HOST:PORT)`,
    );
  }
  const scheme = u.protocol.slice(0, -1);
  if (scheme !== "http" && scheme !== "https") {
    throw new EndpointError(`must be an http:// or https:// URL, got "${text}"`);
  }
  if (!u.hostname) throw new EndpointError(`has no host: "${text}"`);
  if (u.username || u.password) throw new EndpointError("must not carry credentials");
  if (u.search || u.hash) {
    throw new EndpointError(`must not have a query or fragment: "${text}"`);
  }
  const path = u.pathname === "/" ? "" : u.pathname;
  if (path && !options.allowPath) throw new EndpointError(`must not have a path: "${text}"`);
  const port = u.port ? Number(u.port) : scheme === "https" ? 443 : 80;
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  return { url: `${scheme}://${hostForUrl(host)}:${port}`, scheme, host, port, path };
}

/** Whether `host` is a loopback or unspecified address, or `localhost`. */
export function isLoopbackOrUnspecified(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return h === "localhost" || h === "::1" || h === "::" || h === "0.0.0.0" ||
    h.startsWith("127.") || h === "0:0:0:0:0:0:0:1" || h === "0:0:0:0:0:0:0:0";
}
