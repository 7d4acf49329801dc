/**
 * Test fixtures for TLS gateways, shared by every role's tests: a gateway
 * PKI written with core/pki.ts (CA, server certificate, the operator's
 * client bundle laid out as the gateway writes it into `<state-dir>/pki/`,
 * plus a foreign bundle and an expired one), the gateway flags that serve
 * it, and a plaintext-to-mTLS forwarder.
 *
 * The forwarder stands in for a supervisor plane while the host driver
 * (supervisor/host_driver.ts) cannot hand its supervisors TLS files: the
 * gateway's `--grpc-endpoint` points the supervisors at it, and it carries
 * their bytes to the gateway's TLS port with a client certificate.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import net from "node:net";
import tls from "node:tls";
import { type CertAndKey, createCa, issueCertificate } from "../core/pki.ts";
import { type ClientTlsMaterial, tlsConnectOptions } from "../core/tls.ts";

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
  /** A client certificate for a supervisor-plane stand-in (PEM material). */
  supervisor: ClientTlsMaterial;
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
  const [server, operator, foreign, expired, supervisor] = await Promise.all([
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
    issueCertificate(ca, { kind: "client", commonName: "supervisor-plane" }),
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
    supervisor: { ca: ca.cert, cert: supervisor.cert, key: supervisor.key },
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

/** A running {@link startTlsForwarder}. */
export interface TlsForwarder {
  /** Its plaintext port on 127.0.0.1. */
  port: number;
  /** Connections forwarded so far. */
  readonly forwarded: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Options of {@link startTlsForwarder}. */
export interface TlsForwarderOptions {
  /** The TLS port on 127.0.0.1 (read per connection: it may be known only later). */
  targetPort: () => number;
  /** The CA to trust and the client certificate to present. */
  tls: ClientTlsMaterial;
}

/** Listens on 127.0.0.1 and carries each plaintext connection to `targetPort` over mTLS. */
export async function startTlsForwarder(options: TlsForwarderOptions): Promise<TlsForwarder> {
  const sockets = new Set<net.Socket>();
  let forwarded = 0;
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  };
  const server = net.createServer({ allowHalfOpen: true }, (client: net.Socket) => {
    track(client);
    forwarded++;
    const upstream = tls.connect({
      ...tlsConnectOptions("127.0.0.1", options.tls),
      port: options.targetPort(),
    });
    track(upstream);
    const stop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", stop);
    upstream.on("error", stop);
    client.on("close", stop);
    upstream.on("close", stop);
    client.on("data", (d: Buffer) => {
      if (!upstream.write(d)) client.pause();
    });
    upstream.on("drain", () => client.resume());
    upstream.on("data", (d: Buffer) => {
      if (!client.write(d)) upstream.pause();
    });
    client.on("drain", () => upstream.resume());
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get forwarded() {
      return forwarded;
    },
    close: async () => {
      const closed = new Promise((r) => server.close(r));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
