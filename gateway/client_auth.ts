/**
 * Client certificates on the user API (mTLS). The TLS layer asks for a
 * certificate but lets every handshake finish; {@link clientRefusal} then
 * judges the certificate with our own checks, so the gateway can log one
 * clear line (expired, foreign, missing) instead of a bare "socket hang up",
 * and closes the connection.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { checkCertificate, PkiError } from "../core/pki.ts";

/** Why a client's certificate is refused, or undefined when it is accepted. */
export function clientRefusal(
  socket: TLSSocket,
  caPem: string,
  now = new Date(),
): string | undefined {
  let raw: Uint8Array | undefined;
  try {
    raw = (socket.getPeerCertificate(true) as { raw?: Uint8Array })?.raw;
  } catch {
    raw = undefined;
  }
  if (!raw || raw.length === 0) {
    return "no client certificate (the user API needs one signed by the gateway's CA)";
  }
  let pem: string;
  try {
    pem = new X509Certificate(raw).toString();
  } catch {
    return "unreadable client certificate";
  }
  try {
    checkCertificate(pem, { what: "client certificate", now, caPem });
  } catch (err) {
    if (err instanceof PkiError) return err.message;
    throw err;
  }
  return socket.authorized
    ? undefined
    : `client certificate refused (${String(socket.authorizationError ?? "not authorized")})`;
}

/** Logs at most `perWindow` lines per `windowMs`, then one line counting what it skipped. */
export class LogThrottle {
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #windowStart = 0;
  #count = 0;
  #skipped = 0;

  /** Creates a throttle (defaults: 10 lines per minute). */
  constructor(options: { perWindow?: number; windowMs?: number; now?: () => number } = {}) {
    this.#perWindow = options.perWindow ?? 10;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether to log now; `skipped` is how many lines were dropped in the
   * previous window (report it once).
   */
  take(): { log: boolean; skipped: number } {
    const now = this.#now();
    let skipped = 0;
    if (now - this.#windowStart >= this.#windowMs) {
      skipped = this.#skipped;
      this.#windowStart = now;
      this.#count = 0;
      this.#skipped = 0;
    }
    if (this.#count < this.#perWindow) {
      this.#count++;
      return { log: true, skipped };
    }
    this.#skipped++;
    return { log: false, skipped };
  }
}
