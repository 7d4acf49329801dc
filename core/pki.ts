/**
 * The gateway's private PKI: a CA, the server certificate and client
 * bundles, built with `@peculiar/x509` over WebCrypto (ECDSA P-256) and read
 * back with `node:crypto`'s `X509Certificate`. No ASN.1 is written here.
 *
 * {@link ensureGatewayPki} creates `<state-dir>/pki/` on first start (dir
 * 0700, keys 0600) and reuses it afterwards, re-issuing only what expires
 * soon or no longer covers the names the gateway serves.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { checkPrivateDir, writeSecretFile } from "./secure_fs.ts";
import type { Extension } from "@peculiar/x509";

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/** Lifetime of the CA. */
export const CA_VALIDITY_DAYS = 3650;
/** Lifetime of server and client certificates. */
export const LEAF_VALIDITY_DAYS = 365;
/** A certificate expiring within this many days is re-issued at start. */
export const RENEW_BEFORE_DAYS = 30;
/** The name every guest reaches the gateway's supervisor plane by. */
export const GUEST_GATEWAY_SAN = "gateway.openshell.internal";
/** Subject common name of the operator's client certificate. */
export const OPERATOR_COMMON_NAME = "openshell-operator";

/** A PEM certificate and its PEM (PKCS#8) private key. */
export interface CertAndKey {
  cert: string;
  key: string;
}

/** What a certificate says, read back from PEM. */
export interface CertificateInfo {
  subject: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  /** DNS names among the subject alternative names. */
  dnsNames: string[];
  /** IP addresses among the subject alternative names. */
  ipAddresses: string[];
  /** SHA-256 fingerprint, colon-separated hex. */
  fingerprint256: string;
}

/** A certificate problem, phrased for one log or error line. */
export class PkiError extends Error {
  /** Creates an error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "PkiError";
  }
}

/** Options shared by the issuing functions. */
export interface IssueOptions {
  /** Clock; default now. */
  now?: Date;
  /** Lifetime in days. */
  validityDays?: number;
}

function serialNumber(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f; // positive
  bytes[0] |= 0x01; // no leading zero byte
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * `@peculiar/x509` (with its polyfill, about 0.1–0.2 s to load), loaded
 * only when a certificate is made: the checks below use node:crypto, so a
 * CLI call that only reads certificates never loads it.
 */
async function x509lib(): Promise<typeof import("./x509.ts").x509> {
  return (await import("./x509.ts")).x509;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const x509 = await x509lib();
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
}

async function importPkcs8(pem: string, usage: KeyUsage[]): Promise<CryptoKey> {
  const der = (await x509lib()).PemConverter.decodeFirst(pem);
  return await crypto.subtle.importKey("pkcs8", der, ALGORITHM, true, usage);
}

function generateKeys(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
}

function cnOf(name: string): string {
  return `CN=${name.replace(/[,+=<>#;"\\]/g, "_")}`;
}

/** Creates a self-signed CA. */
export async function createCa(
  options: IssueOptions & { commonName?: string } = {},
): Promise<CertAndKey> {
  const x509 = await x509lib();
  const now = options.now ?? new Date();
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: cnOf(options.commonName ?? "openshell gateway CA"),
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (options.validityDays ?? CA_VALIDITY_DAYS) * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString("pem") + "\n", key: await keyPem(keys.privateKey) + "\n" };
}

/** Options of {@link issueCertificate}. */
export interface LeafOptions extends IssueOptions {
  /** `server` (serverAuth, needs names) or `client` (clientAuth). */
  kind: "server" | "client";
  commonName: string;
  /** Subject alternative names: each an IP literal or a DNS name. */
  names?: readonly string[];
}

/** Issues a leaf certificate (X.509 v3) signed by `ca`. */
export async function issueCertificate(ca: CertAndKey, options: LeafOptions): Promise<CertAndKey> {
  const x509 = await x509lib();
  const now = options.now ?? new Date();
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await importPkcs8(ca.key, ["sign"]);
  const keys = await generateKeys();
  const names = [...new Set(options.names ?? [])];
  const extensions: Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([
      options.kind === "server"
        ? x509.ExtendedKeyUsage.serverAuth
        : x509.ExtendedKeyUsage.clientAuth,
    ]),
    await x509.AuthorityKeyIdentifierExtension.create(caCert),
  ];
  if (names.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        names.map((n) => ({ type: isIP(n) ? "ip" as const : "dns" as const, value: n })),
      ),
    );
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: cnOf(options.commonName),
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (options.validityDays ?? LEAF_VALIDITY_DAYS) * DAY_MS),
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: ALGORITHM,
    extensions,
  });
  return { cert: cert.toString("pem") + "\n", key: await keyPem(keys.privateKey) + "\n" };
}

/** Reads the fields of a PEM certificate; throws {@link PkiError} when it is not one. */
export function certificateInfo(pem: string): CertificateInfo {
  let c: X509Certificate;
  try {
    c = new X509Certificate(pem);
  } catch {
    throw new PkiError("not a PEM certificate");
  }
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const part of (c.subjectAltName ?? "").split(/,\s*/)) {
    if (part.startsWith("DNS:")) dnsNames.push(part.slice(4));
    else if (part.startsWith("IP Address:")) ipAddresses.push(part.slice(11));
  }
  return {
    subject: c.subject,
    issuer: c.issuer,
    notBefore: new Date(c.validFrom),
    notAfter: new Date(c.validTo),
    dnsNames,
    ipAddresses,
    fingerprint256: c.fingerprint256,
  };
}

/**
 * Checks that `pem` is valid at `now` and, with `caPem`, signed by that CA.
 * Throws a {@link PkiError} whose message starts with `what`.
 */
export function checkCertificate(
  pem: string,
  options: { what: string; now?: Date; caPem?: string },
): CertificateInfo {
  const now = options.now ?? new Date();
  let info: CertificateInfo;
  try {
    info = certificateInfo(pem);
  } catch {
    throw new PkiError(`${options.what} is not a PEM certificate`);
  }
  if (now < info.notBefore) {
    throw new PkiError(
      `${options.what} is not valid before ${info.notBefore.toISOString()} (check the clock)`,
    );
  }
  if (now > info.notAfter) {
    throw new PkiError(`${options.what} expired on ${info.notAfter.toISOString()}`);
  }
  if (options.caPem && !isSignedBy(pem, options.caPem)) {
    throw new PkiError(`${options.what} is not signed by this gateway's CA`);
  }
  return info;
}

/** Whether `certPem` was issued and signed by the CA in `caPem`. */
export function isSignedBy(certPem: string, caPem: string): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const ca = new X509Certificate(caPem);
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

/** Files of a gateway PKI directory. */
export interface GatewayPkiPaths {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** The file names of `<dir>` (for the gateway: `<state-dir>/pki`). */
export function gatewayPkiPaths(dir: string): GatewayPkiPaths {
  return {
    dir,
    caCert: `${dir}/ca.crt`,
    caKey: `${dir}/ca.key`,
    serverCert: `${dir}/server.crt`,
    serverKey: `${dir}/server.key`,
    clientCert: `${dir}/client.crt`,
    clientKey: `${dir}/client.key`,
  };
}

/** Options of {@link ensureGatewayPki}. */
export interface EnsurePkiOptions {
  /** Names (DNS or IP) the server certificate must cover. */
  serverNames: readonly string[];
  now?: Date;
}

/** What {@link ensureGatewayPki} found or made. */
export interface GatewayPki {
  paths: GatewayPkiPaths;
  ca: CertAndKey;
  server: CertAndKey;
  client: CertAndKey;
  /** Files written this time (empty when everything was reused). */
  written: string[];
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

async function readPair(cert: string, key: string): Promise<CertAndKey | undefined> {
  const [c, k] = await Promise.all([readIfExists(cert), readIfExists(key)]);
  return c && k ? { cert: c, key: k } : undefined;
}

function stillGood(pair: CertAndKey | undefined, now: Date, caPem?: string): boolean {
  if (!pair) return false;
  try {
    const info = checkCertificate(pair.cert, { what: "certificate", now, caPem });
    return info.notAfter.getTime() - now.getTime() > RENEW_BEFORE_DAYS * DAY_MS;
  } catch {
    return false;
  }
}

function covers(pem: string, names: readonly string[]): boolean {
  const info = certificateInfo(pem);
  const have = new Set([...info.dnsNames.map((n) => n.toLowerCase()), ...info.ipAddresses]);
  return names.every((n) => have.has(isIP(n) ? n : n.toLowerCase()));
}

/**
 * Creates or reuses the gateway's PKI in `dir`: the CA (created once; an
 * expired CA is an error naming the directory to remove), the server
 * certificate (re-issued when it expires within {@link RENEW_BEFORE_DAYS}
 * or misses one of `serverNames`) and the operator's client bundle.
 */
export async function ensureGatewayPki(
  dir: string,
  options: EnsurePkiOptions,
): Promise<GatewayPki> {
  const now = options.now ?? new Date();
  const paths = gatewayPkiPaths(dir);
  await checkPrivateDir(dir, { create: true, what: "PKI directory" });
  const written: string[] = [];
  const save = async (pair: CertAndKey, cert: string, key: string) => {
    await writeSecretFile(key, pair.key);
    await writeSecretFile(cert, pair.cert, { mode: 0o644 });
    written.push(cert, key);
  };

  let ca = await readPair(paths.caCert, paths.caKey);
  if (ca) {
    checkCertificate(ca.cert, { what: `CA ${paths.caCert}`, now });
  } else {
    ca = await createCa({ now });
    await save(ca, paths.caCert, paths.caKey);
  }
  let server = await readPair(paths.serverCert, paths.serverKey);
  if (!stillGood(server, now, ca.cert) || !covers(server!.cert, options.serverNames)) {
    server = await issueCertificate(ca, {
      kind: "server",
      commonName: "openshell-gateway",
      names: options.serverNames,
      now,
    });
    await save(server, paths.serverCert, paths.serverKey);
  }
  let client = await readPair(paths.clientCert, paths.clientKey);
  if (!stillGood(client, now, ca.cert)) {
    client = await issueCertificate(ca, { kind: "client", commonName: OPERATOR_COMMON_NAME, now });
    await save(client, paths.clientCert, paths.clientKey);
  }
  return { paths, ca, server: server!, client: client!, written };
}

/**
 * The names the gateway's server certificate covers: loopback, the guest
 * alias, the bind address when it is a specific one, and `extra`
 * (`--tls-san`).
 */
export function serverNames(bind: string, extra: readonly string[] = []): string[] {
  const host = bind.replace(/^\[|\]$/g, "");
  const names = ["localhost", "127.0.0.1", "::1", GUEST_GATEWAY_SAN];
  if (host && !["0.0.0.0", "::"].includes(host)) names.push(host);
  return [...new Set([...names, ...extra])];
}
