/**
 * The gateway's TLS material for both planes: its own PKI in
 * `<state-dir>/pki` (created, or renewed when a certificate expires soon or
 * misses a name), and for the user API the operator's `--tls-cert`,
 * `--tls-key` and `--tls-client-ca` when given.
 *
 * @module
 */
import { errorMessage, type Logger } from "../core/log.ts";
import { ensureGatewayPki, serverNames } from "../core/pki.ts";
import { type GatewayConfig, pkiDir } from "./config.ts";

/** TLS material of both planes. */
export interface TlsSetup {
  /** The user API's certificate and key. */
  user: { cert: string; key: string; clientCa?: string };
  /** The supervisor plane's certificate and key (always from the gateway's own CA). */
  supervisor: { cert: string; key: string };
  /** PEM CA that signs the supervisor plane's certificate. */
  caPem: string;
}

/**
 * Loads or creates TLS material. The supervisor plane always uses the
 * gateway's own PKI (`<state-dir>/pki`), whose CA the drivers hand to
 * guests; the user API uses `--tls-cert/--tls-key` when given.
 */
export async function setupTls(config: GatewayConfig, log: Logger): Promise<TlsSetup> {
  const dir = pkiDir(config);
  const pki = await ensureGatewayPki(dir, {
    serverNames: serverNames(config.bind, [
      ...config.tlsSans,
      ...(config.supervisorBind !== config.bind ? serverNames(config.supervisorBind) : []),
    ]),
  });
  if (pki.written.includes(pki.paths.caCert)) {
    log.info(
      `created the gateway's PKI in ${dir}; import the operator bundle with ` +
        `\`openshell gateway add NAME URL --mtls-dir ${dir}\``,
    );
  } else if (pki.written.length > 0) {
    log.info("re-issued certificates that expire soon or miss a name", {
      files: pki.written.join(","),
    });
  }
  const own = !!config.tlsCert;
  const clientCa = config.disableGatewayAuth
    ? undefined
    : own
    ? await readPem(config.tlsClientCa!, "--tls-client-ca")
    : pki.ca.cert;
  return {
    user: own
      ? {
        cert: await readPem(config.tlsCert!, "--tls-cert"),
        key: await readPem(config.tlsKey!, "--tls-key"),
        clientCa,
      }
      : { cert: pki.server.cert, key: pki.server.key, clientCa },
    supervisor: { cert: pki.server.cert, key: pki.server.key },
    caPem: pki.ca.cert,
  };
}

async function readPem(path: string, flag: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`${flag}: cannot read ${path}: ${errorMessage(err)}`);
  }
  if (!text.includes("-----BEGIN ")) throw new Error(`${flag}: ${path} is not a PEM file`);
  return text;
}
