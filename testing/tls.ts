/**
 * Test fixtures for TLS gateways, shared by every role's tests: a gateway
 * PKI written with core/pki.ts (CA, server certificate, the operator's
 * client bundle laid out as the gateway writes it into `<state-dir>/pki/`,
 * plus a foreign bundle and an expired one) and the gateway flags that
 * serve it on the user API.
 *
 * @module
 */
import { type CertAndKey, createCa, issueCertificate } from "../core/pki.ts";

const DAY_MS = 86_400_000;

/** A client bundle directory: `ca.crt`, `client.crt`, `client.key`. */
export interface BundleDir {
  dir: string;
  ca: string;
  cert: string;
  key: string;
}

/** The files of {@link writeGatewayPki}. */
export interface TestGatewayPki {
  /** The gateway's CA (PEM). */
  ca: CertAndKey;
  /** `--tls-cert`, `--tls-key`, `--tls-client-ca`. */
  serverCert: string;
  serverKey: string;
  caCert: string;
  /** The operator's bundle, as the gateway writes it into `<state-dir>/pki/`. */
  bundle: BundleDir;
  /** The same three names from another gateway's PKI (its own CA). */
  foreign: BundleDir;
  /** This gateway's CA with a client certificate that expired yesterday. */
  expired: BundleDir;
}

async function writeBundle(
  dir: string,
  ca: CertAndKey,
  client: CertAndKey,
): Promise<BundleDir> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const b = { dir, ca: `${dir}/ca.crt`, cert: `${dir}/client.crt`, key: `${dir}/client.key` };
  await Deno.writeTextFile(b.ca, ca.cert);
  await Deno.writeTextFile(b.cert, client.cert);
  await Deno.writeTextFile(b.key, client.key, { mode: 0o600 });
  return b;
}

/**
 * Writes a gateway PKI under `dir` (a CA; a server certificate for
 * `127.0.0.1` and `localhost`; bundles in `pki/`, `foreign/`, `expired/`).
 */
export async function writeGatewayPki(dir: string): Promise<TestGatewayPki> {
  const now = Date.now();
  const ca = await createCa();
  const otherCa = await createCa({ commonName: "another gateway CA" });
  const [server, operator, foreign, expired] = await Promise.all([
    issueCertificate(ca, {
      kind: "server",
      commonName: "openshell-gateway",
      names: ["127.0.0.1", "localhost"],
    }),
    issueCertificate(ca, { kind: "client", commonName: "openshell-operator" }),
    issueCertificate(otherCa, { kind: "client", commonName: "openshell-operator" }),
    issueCertificate(ca, {
      kind: "client",
      commonName: "openshell-operator",
      now: new Date(now - 3 * DAY_MS),
      validityDays: 2,
    }),
  ]);
  const paths = {
    serverCert: `${dir}/server.crt`,
    serverKey: `${dir}/server.key`,
    caCert: `${dir}/ca.crt`,
  };
  await Deno.writeTextFile(paths.serverCert, server.cert);
  await Deno.writeTextFile(paths.serverKey, server.key, { mode: 0o600 });
  await Deno.writeTextFile(paths.caCert, ca.cert);
  return {
    ca,
    ...paths,
    bundle: await writeBundle(`${dir}/pki`, ca, operator),
    foreign: await writeBundle(`${dir}/foreign`, otherCa, foreign),
    expired: await writeBundle(`${dir}/expired`, ca, expired),
  };
}

/** Gateway flags that serve TLS with `pki` and require its client certificates. */
export function gatewayTlsArgs(pki: TestGatewayPki): string[] {
  return [
    "--no-disable-tls",
    "--tls-cert",
    pki.serverCert,
    "--tls-key",
    pki.serverKey,
    "--tls-client-ca",
    pki.caCert,
  ];
}
