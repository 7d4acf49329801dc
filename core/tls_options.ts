/**
 * TLS to a gateway from any role, without gRPC: the one place that handles
 * Deno's `node:tls` refusing an IP address as server name, and that turns
 * TLS failures into one line saying what to do. `core/tls.ts` re-exports
 * all of it with the grpc-js credentials; this module loads no grpc-js, so
 * the CLI's `ssh-proxy` starts without it.
 *
 * For an IP-literal host the TLS server name becomes
 * {@link IP_TLS_SERVER_NAME} (SNI only) while the certificate is still
 * checked against the IP itself.
 *
 * @module
 */
import { isIP } from "node:net";
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate } from "node:tls";

/** TLS server name sent for an IP-literal endpoint (never checked against). */
export const IP_TLS_SERVER_NAME = "openshell-gateway";

/**
 * PEM material of a TLS client: the CA it trusts (the system roots when
 * absent) and, for mTLS, its certificate and key.
 */
export interface ClientTlsMaterial {
  ca?: string | Uint8Array;
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
}

/** PEM material as text. */
export function pemText(v: string | Uint8Array): string {
  return typeof v === "string" ? v : new TextDecoder().decode(v);
}

/** A `checkServerIdentity` that checks the certificate against `host` (an IP literal). */
export function identityCheck(
  host: string,
): (name: string, cert: PeerCertificate) => Error | undefined {
  return (_name, cert) => checkServerIdentity(host, cert);
}

/** `node:tls` connect options for `host` (IPv6 without brackets). */
export function tlsConnectOptions(host: string, material: ClientTlsMaterial): ConnectionOptions {
  const ip = isIP(host) !== 0;
  return {
    host,
    ...(material.ca ? { ca: pemText(material.ca) } : {}),
    ...(material.cert && material.key
      ? { cert: pemText(material.cert), key: pemText(material.key) }
      : {}),
    servername: ip ? IP_TLS_SERVER_NAME : host,
    ...(ip ? { checkServerIdentity: identityCheck(host) } : {}),
  };
}

/** Options of {@link describeTlsFailure} and {@link describeTlsDrop}. */
export interface TlsHintOptions {
  /**
   * The command that imports the gateway's client bundle, for the "what to
   * do" part; default `openshell gateway add NAME URL --mtls-dir DIR`.
   */
  importBundle?: string;
}

const BUNDLE_DIR = "DIR being the gateway's <state-dir>/pki";

function importHint(options: TlsHintOptions): string {
  return `${
    options.importBundle ?? "openshell gateway add NAME URL --mtls-dir DIR"
  }, ${BUNDLE_DIR}`;
}

/**
 * A one-line explanation of a TLS failure message (from `node:tls` or
 * grpc-js details), or undefined when `message` is not about TLS.
 */
export function describeTlsFailure(
  message: string,
  where: string,
  options: TlsHintOptions = {},
): string | undefined {
  if (
    /WRONG_VERSION_NUMBER|wrong version number|InvalidContentType|packet length too long/i.test(
      message,
    )
  ) {
    return `the gateway at ${where} does not speak TLS (use an http:// URL for a plaintext gateway)`;
  }
  if (/ALTNAME|does not match certificate|not in the cert's altnames/i.test(message)) {
    return `the gateway's certificate does not name the host in ${where} ` +
      "(use a name it covers, or restart the gateway with --tls-san HOST)";
  }
  if (/CERT_HAS_EXPIRED|certificate has expired|peer certificate: Expired/i.test(message)) {
    return `the gateway's certificate at ${where} has expired (restarting the gateway re-issues it)`;
  }
  if (
    /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify|SELF_SIGNED|self.signed|UNABLE_TO_GET_ISSUER|UnknownIssuer/i
      .test(message)
  ) {
    return `the gateway at ${where} presented a certificate that the trusted CA did not sign ` +
      `(import the gateway's current client bundle: ${importHint(options)})`;
  }
  if (isClientCertificateRefusal(message)) {
    return `the gateway at ${where} refused this client's certificate ` +
      `(import the gateway's current client bundle: ${importHint(options)})`;
  }
  return undefined;
}

/** Whether a TLS failure message is the server's alert refusing the client's certificate. */
export function isClientCertificateRefusal(message: string): boolean {
  return /CERTIFICATE_REQUIRED|CertificateRequired|BAD_CERTIFICATE|BadCertificate|UNKNOWN_CA|UnknownCA|alert certificate|CertificateExpired/i
    .test(message);
}

/**
 * The one line for a TLS connection the gateway closed right after the
 * handshake: how a refused client certificate (missing, expired, from
 * another CA) usually shows up on the client, with no alert to read. (A
 * client may use it for the alert too, so that both read the same.)
 */
export function describeTlsDrop(
  where: string,
  options: TlsHintOptions & { clientCertificate: boolean },
): string {
  return options.clientCertificate
    ? `the gateway at ${where} closed the TLS connection: it may not accept this client's ` +
      `certificate (import the gateway's current client bundle: ${importHint(options)})`
    : `the gateway at ${where} closed the TLS connection: it may require a client certificate, ` +
      `and none is configured (import the gateway's client bundle: ${importHint(options)})`;
}
