/**
 * Failed gateway calls as one-line {@link CliError}s: connection failures
 * name the gateway and the cause (TLS failures say what to do), errors the
 * gateway returned keep its message. Loads no grpc-js (the `ssh-proxy`
 * path uses it without the full client).
 *
 * @module
 */
import { Code, codeName } from "../core/status.ts";
import {
  describeTlsDrop,
  describeTlsFailure,
  isClientCertificateRefusal,
} from "../core/tls_options.ts";
import { type GatewayEndpoint, importBundleCommand } from "./config.ts";
import { CliError } from "./errors.ts";

/** What a failed gRPC call carries (a grpc-js `ServiceError` has these). */
export interface GrpcStatusError {
  /** The gRPC status code. */
  code: number;
  /** The status message. */
  details: string;
  /** The error message. */
  message: string;
}

function firstLine(text: string): string {
  return text.split("\n")[0].trim();
}

/** What {@link describeGrpcError} knows about the connection besides its URL. */
export interface ConnectionFacts {
  /** A client certificate is configured (https). */
  clientCertificate?: boolean;
  /** The gateway's registered name. */
  name?: string;
}

/**
 * A connection the peer closed before HTTP/2 came up (grpc-js reports those
 * as "No connection established", and a gateway that refuses the client's
 * certificate never sends its HTTP/2 settings).
 */
const DROPPED =
  /^No connection established\..*(Failed to connect|EPIPE|ECONNRESET|socket hang up|disconnected before secure TLS|Socket closed)/i;

/**
 * A one-line message for a failed call. Connection failures name the gateway
 * and the cause (TLS failures say what to do); errors the gateway returned
 * keep its message.
 */
export function describeGrpcError(
  err: unknown,
  endpoint: GatewayEndpoint,
  facts: ConnectionFacts = {},
): string {
  const e = err as Partial<GrpcStatusError>;
  if (typeof e?.code !== "number") return firstLine((err as Error)?.message ?? String(err));
  const details = firstLine(e.details ?? e.message ?? "");
  const where = endpoint.url;
  if (e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED) {
    const transport =
      /No connection established|Connection dropped|Failed to connect|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|EPIPE|Requires net access|certificate|SSL|TLS|handshake|socket|LB pick|Name resolution failed/i
        .test(details) || details === "" || /^Deadline exceeded/i.test(details);
    if (transport) {
      let cause = details.replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\s*$/, "")
        .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\.?\s*Resolution note:.*$/, "")
        .replace(/\.?\s*Resolution note:.*$/, "");
      if (/Requires net access to "([^"]+)"/.test(details)) {
        const target = details.match(/Requires net access to "([^"]+)"/)![1];
        return `not permitted to connect to ${target} (the CLI's network grant does not cover it)`;
      }
      const hint = { importBundle: importBundleCommand(facts.name, where) };
      const https = endpoint.scheme === "https";
      // A refused client certificate shows up as an alert or, more often, a closed
      // connection: both get the same line.
      if (https && isClientCertificateRefusal(details)) {
        return describeTlsDrop(where, { ...hint, clientCertificate: !!facts.clientCertificate });
      }
      const tlsLine = https ? describeTlsFailure(details, where, hint) : undefined;
      if (tlsLine) return tlsLine;
      if (/ECONNREFUSED/.test(details)) cause = "connection refused";
      else if (/ENOTFOUND|EAI_AGAIN|Name resolution failed/i.test(details)) {
        cause = `host "${endpoint.host}" not found (check the host name in the URL)`;
      } else if (https && e.code === Code.UNAVAILABLE && DROPPED.test(details)) {
        return describeTlsDrop(where, { ...hint, clientCertificate: !!facts.clientCertificate });
      } else if (!https && e.code === Code.UNAVAILABLE && DROPPED.test(details)) {
        return `the gateway at ${where} closed the connection before HTTP/2 started: if it ` +
          "serves TLS (its default), use an https:// URL and import its client bundle " +
          `(${importBundleCommand(facts.name, where.replace(/^http:/, "https:"))}, ` +
          "DIR being the gateway's <state-dir>/pki)";
      } else if (/ECONNRESET/.test(details)) cause = "connection reset";
      else if (e.code === Code.DEADLINE_EXCEEDED) {
        cause = https
          ? "no answer in time (a plaintext gateway never completes a TLS handshake: if it " +
            "runs with --disable-tls, use an http:// URL)"
          : "no answer in time";
      } else {cause = cause.replace(/^No connection established\.\s*Last error:\s*/i, "")
          .replace(/^Error:\s*/, "") || codeName(e.code);}
      return `cannot reach the gateway at ${where}: ${cause}`;
    }
  }
  if (e.code === Code.UNIMPLEMENTED) {
    return `the gateway at ${where} does not support this request${details ? ` (${details})` : ""}`;
  }
  if (e.code === Code.UNAUTHENTICATED || e.code === Code.PERMISSION_DENIED) {
    return `the gateway refused the request: ${details || codeName(e.code)}`;
  }
  return details || `request failed (${codeName(e.code)})`;
}

/** The gRPC status code of an error, if it carries one. */
export function grpcCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "number" ? code : undefined;
}

/** A gRPC error as a {@link CliError} (keeps the status code readable via `grpcCode`). */
export class GatewayError extends CliError {
  /** The gRPC status code. */
  readonly code: number;

  /** Wraps a failed call's error. */
  constructor(err: unknown, endpoint: GatewayEndpoint, facts: ConnectionFacts = {}) {
    super(describeGrpcError(err, endpoint, facts));
    this.name = "GatewayError";
    this.code = grpcCode(err) ?? Code.UNKNOWN;
  }
}
