/**
 * The CLI's configuration: which gateway to talk to, and the small state it
 * remembers, under `$XDG_CONFIG_HOME/openshell/` (else `~/.config/openshell/`)
 * in the layout upstream's CLI uses:
 *
 * ```
 * active_gateway                      name of the active gateway
 * gateways/<name>/metadata.json       {"name", "gateway_endpoint", ...}
 * gateways/<name>/mtls/ca.crt         CA to trust (https)
 * gateways/<name>/mtls/tls.crt|key    client certificate (mTLS); from a gateway's
 *                                     <state-dir>/pki/{ca.crt,client.crt,client.key}
 * gateways/<name>/last_sandbox        sandbox last created/connected
 * known_hosts                         sandbox host keys remembered by ssh
 * ```
 *
 * Every file is replaced atomically (write beside, then rename), so an
 * interrupted command never leaves half a file behind.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import * as endpoints from "../core/endpoint.ts";
import { EndpointError, type GatewayEndpoint, isLoopbackOrUnspecified } from "../core/endpoint.ts";
import type { EnvReader } from "../core/flags.ts";
import { checkCertificate, PkiError } from "../core/pki.ts";
import { CliError } from "./errors.ts";
import { withoutKnownHost } from "./ssh.ts";

/** The config directory: `$XDG_CONFIG_HOME/openshell`, else `$HOME/.config/openshell`. */
export function configRoot(env: EnvReader): string {
  const xdg = env("XDG_CONFIG_HOME");
  if (xdg && xdg.startsWith("/")) return `${xdg.replace(/\/+$/, "")}/openshell`;
  const home = env("HOME");
  if (!home) {
    throw new CliError("cannot locate the config directory: set XDG_CONFIG_HOME or HOME");
  }
  return `${home.replace(/\/+$/, "")}/.config/openshell`;
}

export { type GatewayEndpoint, isLoopbackOrUnspecified } from "../core/endpoint.ts";

/**
 * Parses a gateway URL (`http://host:port` or `https://host:port`) as
 * {@link endpoints.parseGatewayUrl} does; a {@link CliError} otherwise.
 */
export function parseGatewayUrl(
  text: string,
  options: { allowPath?: boolean } = {},
): GatewayEndpoint {
  try {
    return endpoints.parseGatewayUrl(text, options);
  } catch (err) {
    if (err instanceof EndpointError) throw new CliError(`invalid gateway URL: ${err.message}`);
    throw err;
  }
}

/** `gateways/<name>/metadata.json` (upstream-compatible fields). */
export interface GatewayMetadata {
  /** The gateway's registered name. */
  name: string;
  /** Its URL. */
  gateway_endpoint: string;
  /** False for loopback gateways. */
  is_remote: boolean;
  /** The endpoint's port. */
  gateway_port: number;
  /** `plaintext` (http), `mtls` (client certificate); absent for https without one. */
  auth_mode?: string;
}

/** PEM material for a TLS connection to a gateway. */
export interface TlsMaterial {
  /** CA certificate(s) to trust; system roots when absent. */
  ca?: Uint8Array;
  /** Client certificate chain (mTLS). */
  cert?: Uint8Array;
  /** Client private key (mTLS). */
  key?: Uint8Array;
  /** Where each came from, for messages. */
  files?: { ca?: string; cert?: string; key?: string };
}

/** The file names of a gateway's client bundle (what it writes into `<state-dir>/pki/`). */
export const BUNDLE_FILES = { ca: "ca.crt", cert: "client.crt", key: "client.key" } as const;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The certificates of a PEM file, in order. */
export function splitPemCertificates(pem: string): string[] {
  return pem.match(PEM_CERT)?.map((c) => c + "\n") ?? [];
}

/** The command that imports a gateway's client bundle, for "what to do" hints. */
export function importBundleCommand(name: string | undefined, url: string): string {
  return name
    ? `openshell gateway add ${name} ${url} --mtls-dir DIR --force`
    : `openshell gateway add NAME ${url} --mtls-dir DIR`;
}

/** Options of {@link checkClientTls}. */
export interface CheckClientTlsOptions {
  /** What to do about a stale or foreign certificate (one clause). */
  fix: string;
  /** Clock; default now. */
  now?: Date;
}

function pkiCheck(fix: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof PkiError)) throw err;
    const m = err.message;
    throw new CliError(m.endsWith("(check the clock)") ? m : `${m}: ${fix}`);
  }
}

/**
 * The local pre-flight before any connection: the CA and the client
 * certificate are valid now, and the client certificate was signed by (one
 * of) the CA certificate(s). Throws a one-line {@link CliError} naming the
 * file and what to do.
 */
export function checkClientTls(tls: TlsMaterial, options: CheckClientTlsOptions): void {
  const dec = new TextDecoder();
  const now = options.now ?? new Date();
  const caWhat = tls.files?.ca ? `CA certificate ${tls.files.ca}` : "the CA certificate";
  const cas = tls.ca ? splitPemCertificates(dec.decode(tls.ca)) : [];
  if (tls.ca && cas.length === 0) throw new CliError(`${caWhat} holds no PEM certificate`);
  for (const ca of cas) {
    pkiCheck(options.fix, () => checkCertificate(ca, { what: caWhat, now }));
  }
  if (!tls.cert) return;
  const certWhat = tls.files?.cert
    ? `client certificate ${tls.files.cert}`
    : "the client certificate";
  const cert = dec.decode(tls.cert);
  // The CA that signed it, if any is in the file (else the first: its error names the file).
  const signer = cas.find((ca) => {
    try {
      const c = new X509Certificate(cert);
      const a = new X509Certificate(ca);
      return c.checkIssued(a) && c.verify(a.publicKey);
    } catch {
      return false;
    }
  }) ?? cas[0];
  pkiCheck(options.fix, () => checkCertificate(cert, { what: certWhat, now, caPem: signer }));
}

function checkKeyMatches(cert: Uint8Array, key: Uint8Array, files: TlsMaterial["files"]): void {
  let matches = false;
  try {
    const dec = new TextDecoder();
    matches = new X509Certificate(dec.decode(cert)).checkPrivateKey(
      createPrivateKey(dec.decode(key)),
    );
  } catch {
    matches = false;
  }
  if (!matches) {
    throw new CliError(
      `${files?.key ?? "the client key"} is not the private key of ${
        files?.cert ?? "the client certificate"
      } (import the key and certificate of one client bundle)`,
    );
  }
}

/** A gateway, as `gateway list` shows it. */
export interface GatewayEntry {
  /** Directory name. */
  name: string;
  /** Its metadata, when readable. */
  metadata?: GatewayMetadata;
  /** Why the metadata could not be read. */
  error?: string;
  /** Which mTLS files exist. */
  tlsFiles: string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a gateway name (letters, digits, `.`, `_`, `-`; up to 64; no leading punctuation). */
export function validateGatewayName(name: string): string {
  if (!NAME.test(name)) {
    throw new CliError(
      `invalid gateway name "${name}" (letters, digits, '.', '_', '-'; starting with a letter or digit)`,
    );
  }
  return name;
}

function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}

async function readOptional(path: string): Promise<Uint8Array | undefined> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

function randomSuffix(): string {
  return crypto.randomUUID().slice(0, 8);
}

/** Writes `data` to `path` atomically (a temp file beside it, then rename). */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  mode = 0o644,
): Promise<void> {
  const tmp = `${path}.tmp-${randomSuffix()}`;
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  try {
    await Deno.writeFile(tmp, bytes, { mode });
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

function looksLikePem(data: Uint8Array, kind: "certificate" | "key"): boolean {
  const text = new TextDecoder().decode(data);
  return kind === "certificate"
    ? text.includes("-----BEGIN CERTIFICATE-----")
    : /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
}

/** What {@link ConfigStore.addGateway} registers. */
export interface AddGatewayOptions {
  /** Registered name. */
  name: string;
  /** Gateway URL. */
  endpoint: string;
  /** CA certificate (PEM). */
  ca?: Uint8Array;
  /** Client certificate (PEM). */
  cert?: Uint8Array;
  /** Client key (PEM). */
  key?: Uint8Array;
  /** Where `ca`, `cert` and `key` were read from, for messages. */
  files?: TlsMaterial["files"];
  /** Replace an existing registration. */
  force?: boolean;
  /** Clock of the certificate checks; default now. */
  now?: Date;
}

/**
 * Checks the TLS material of a gateway being added: only for https, a
 * certificate with its key, each PEM of the right kind, the chain and dates
 * valid, the key matching the certificate. One-line {@link CliError}s
 * naming the file (or flag).
 */
function checkAddedTls(
  options: AddGatewayOptions,
  endpoint: Pick<GatewayEndpoint, "scheme">,
): void {
  const tlsGiven = options.ca || options.cert || options.key;
  if (tlsGiven && endpoint.scheme !== "https") {
    throw new CliError("--ca, --cert and --key only apply to https:// gateways");
  }
  if (!options.cert !== !options.key) {
    throw new CliError("--cert and --key go together");
  }
  const named = { ca: "--ca", cert: "--cert", key: "--key", ...options.files };
  if (options.ca && !looksLikePem(options.ca, "certificate")) {
    throw new CliError(`${named.ca} is not a PEM certificate`);
  }
  if (options.cert && !looksLikePem(options.cert, "certificate")) {
    throw new CliError(`${named.cert} is not a PEM certificate`);
  }
  if (options.key && !looksLikePem(options.key, "key")) {
    throw new CliError(`${named.key} is not a PEM private key`);
  }
  if (tlsGiven) {
    const files = options.files ?? named;
    checkClientTls({ ca: options.ca, cert: options.cert, files }, {
      fix: "use the ca.crt, client.crt and client.key of one gateway's current " +
        "<state-dir>/pki (a gateway renews its client bundle at start)",
      now: options.now,
    });
    if (options.cert && options.key) checkKeyMatches(options.cert, options.key, files);
  }
}

/** Writes the given `ca.crt`, `tls.crt` (0644) and `tls.key` (0600) into a new `dir`; none: no dir. */
async function writeMtlsFiles(
  dir: string,
  tls: Pick<AddGatewayOptions, "ca" | "cert" | "key">,
): Promise<void> {
  if (!tls.ca && !tls.cert && !tls.key) return;
  await Deno.mkdir(dir, { mode: 0o700 });
  if (tls.ca) await Deno.writeFile(`${dir}/ca.crt`, tls.ca, { mode: 0o644 });
  if (tls.cert) await Deno.writeFile(`${dir}/tls.crt`, tls.cert, { mode: 0o644 });
  if (tls.key) await Deno.writeFile(`${dir}/tls.key`, tls.key, { mode: 0o600 });
}

/** Reads and writes the config directory. */
export class ConfigStore {
  /** The config directory (`…/openshell`). */
  readonly root: string;

  /** A store rooted at `root`; nothing is created until something is written. */
  constructor(root: string) {
    this.root = root;
  }

  /** `gateways/`. */
  get gatewaysDir(): string {
    return `${this.root}/gateways`;
  }

  /** The known_hosts file ssh uses for sandboxes. */
  get knownHostsPath(): string {
    return `${this.root}/known_hosts`;
  }

  /**
   * Removes `host`'s entries from {@link knownHostsPath} (a deleted
   * sandbox's key, so the file does not grow forever and a later sandbox
   * cannot meet a stale entry); returns how many went. No file, no entries:
   * nothing is written.
   */
  async forgetKnownHost(host: string): Promise<number> {
    const raw = await readOptional(this.knownHostsPath);
    if (!raw) return 0;
    const { text, removed } = withoutKnownHost(new TextDecoder().decode(raw), host);
    if (removed > 0) await writeFileAtomic(this.knownHostsPath, text, 0o600);
    return removed;
  }

  /** `gateways/<name>/`. */
  gatewayDir(name: string): string {
    return `${this.gatewaysDir}/${name}`;
  }

  /** Creates the config directory (0700) if missing. */
  async ensureRoot(): Promise<void> {
    await Deno.mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  /** Registered gateways, sorted by name. */
  async listGateways(): Promise<GatewayEntry[]> {
    const entries: GatewayEntry[] = [];
    try {
      for await (const e of Deno.readDir(this.gatewaysDir)) {
        if (!e.isDirectory || !NAME.test(e.name)) continue;
        const dir = this.gatewayDir(e.name);
        const raw = await readOptional(`${dir}/metadata.json`);
        if (!raw) continue;
        const tlsFiles: string[] = [];
        for (const f of ["ca.crt", "tls.crt", "tls.key"]) {
          if (await readOptional(`${dir}/mtls/${f}`)) tlsFiles.push(f);
        }
        try {
          entries.push({ name: e.name, metadata: parseMetadata(e.name, raw), tlsFiles });
        } catch (err) {
          entries.push({ name: e.name, error: (err as Error).message, tlsFiles });
        }
      }
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    return entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  /** The metadata of a registered gateway; a clear error when it is missing or broken. */
  async readGateway(name: string): Promise<GatewayMetadata> {
    validateGatewayName(name);
    const raw = await readOptional(`${this.gatewayDir(name)}/metadata.json`);
    if (!raw) {
      throw new CliError(
        `gateway "${name}" is not registered (see 'openshell gateway list', 'openshell gateway add')`,
      );
    }
    return parseMetadata(name, raw);
  }

  /** The TLS files of a registered gateway (`undefined` when it has none). */
  async readTls(name: string): Promise<TlsMaterial | undefined> {
    const dir = `${this.gatewayDir(name)}/mtls`;
    const [ca, cert, key] = await Promise.all(
      ["ca.crt", "tls.crt", "tls.key"].map((f) => readOptional(`${dir}/${f}`)),
    );
    if (!ca && !cert && !key) return undefined;
    if (!cert !== !key) {
      throw new CliError(
        `gateway "${name}": ${dir} must hold both tls.crt and tls.key, or neither`,
      );
    }
    return {
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
      files: { ca: `${dir}/ca.crt`, cert: `${dir}/tls.crt`, key: `${dir}/tls.key` },
    };
  }

  /**
   * Registers a gateway: its directory is built aside and renamed into
   * place, so a failure leaves the previous state untouched. The first
   * gateway registered becomes the active one.
   */
  async addGateway(options: AddGatewayOptions): Promise<GatewayMetadata> {
    const name = validateGatewayName(options.name);
    const endpoint = parseGatewayUrl(options.endpoint);
    checkAddedTls(options, endpoint);
    const target = this.gatewayDir(name);
    const exists = (await readOptional(`${target}/metadata.json`)) !== undefined;
    if (exists && !options.force) {
      throw new CliError(`gateway "${name}" already exists (use --force to replace it)`);
    }
    const metadata: GatewayMetadata = {
      name,
      gateway_endpoint: endpoint.url,
      is_remote: !isLoopbackOrUnspecified(endpoint.host),
      gateway_port: endpoint.port,
      ...(endpoint.scheme === "http"
        ? { auth_mode: "plaintext" }
        : options.cert
        ? { auth_mode: "mtls" }
        : {}),
    };
    await this.#replaceGatewayDir(name, { metadata, tls: options });
    if (!(await this.activeGateway())) await this.setActiveGateway(name);
    return metadata;
  }

  /**
   * Builds gateway `name`'s directory aside (its metadata, its `mtls/`
   * files, the previous `last_sandbox`) and renames it into place, the old
   * one aside first; on failure the staging directory goes and the
   * previous state stays.
   */
  async #replaceGatewayDir(
    name: string,
    o: { metadata: GatewayMetadata; tls: Pick<AddGatewayOptions, "ca" | "cert" | "key"> },
  ): Promise<void> {
    const target = this.gatewayDir(name);
    await this.ensureRoot();
    await Deno.mkdir(this.gatewaysDir, { recursive: true, mode: 0o700 });
    const staging = `${this.gatewaysDir}/.staging-${name}-${randomSuffix()}`;
    try {
      await Deno.mkdir(staging, { mode: 0o700 });
      await writeMtlsFiles(`${staging}/mtls`, o.tls);
      const last = await readOptional(`${target}/last_sandbox`);
      if (last) await Deno.writeFile(`${staging}/last_sandbox`, last);
      await Deno.writeTextFile(
        `${staging}/metadata.json`,
        JSON.stringify(o.metadata, null, 2) + "\n",
      );
      let old: string | undefined;
      try {
        old = `${this.gatewaysDir}/.old-${name}-${randomSuffix()}`;
        await Deno.rename(target, old);
      } catch (e) {
        if (!isNotFound(e)) throw e;
        old = undefined;
      }
      await Deno.rename(staging, target);
      if (old) await Deno.remove(old, { recursive: true });
    } catch (e) {
      await Deno.remove(staging, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** Forgets a gateway (and stops it being the active one). */
  async removeGateway(name: string): Promise<void> {
    await this.readGateway(name);
    const old = `${this.gatewaysDir}/.old-${name}-${randomSuffix()}`;
    await Deno.rename(this.gatewayDir(name), old);
    await Deno.remove(old, { recursive: true });
    if ((await this.activeGateway()) === name) {
      await Deno.remove(`${this.root}/active_gateway`).catch(() => {});
    }
  }

  /** The name in `active_gateway`, if any. */
  async activeGateway(): Promise<string | undefined> {
    const raw = await readOptional(`${this.root}/active_gateway`);
    const name = raw ? new TextDecoder().decode(raw).trim() : "";
    return name || undefined;
  }

  /** Makes a registered gateway the active one. */
  async setActiveGateway(name: string): Promise<void> {
    await this.readGateway(name);
    await this.ensureRoot();
    await writeFileAtomic(`${this.root}/active_gateway`, `${name}\n`);
  }

  /** The sandbox last used through the gateway known as `key`. */
  async lastSandbox(key: string): Promise<string | undefined> {
    const raw = await readOptional(`${this.gatewayDir(key)}/last_sandbox`);
    const name = raw ? new TextDecoder().decode(raw).trim() : "";
    return name || undefined;
  }

  /** Remembers the sandbox last used through the gateway known as `key`. */
  async setLastSandbox(key: string, sandbox: string): Promise<void> {
    await Deno.mkdir(this.gatewayDir(key), { recursive: true, mode: 0o700 });
    await writeFileAtomic(`${this.gatewayDir(key)}/last_sandbox`, `${sandbox}\n`);
  }

  /** Forgets the last-used sandbox if it is `sandbox`. */
  async clearLastSandbox(key: string, sandbox: string): Promise<void> {
    if ((await this.lastSandbox(key)) === sandbox) {
      await Deno.remove(`${this.gatewayDir(key)}/last_sandbox`).catch(() => {});
    }
  }
}

function parseMetadata(name: string, raw: Uint8Array): GatewayMetadata {
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder().decode(raw));
  } catch {
    throw new CliError(`gateway "${name}": metadata.json is not valid JSON`);
  }
  const m = data as Partial<GatewayMetadata> | null;
  if (!m || typeof m !== "object" || typeof m.gateway_endpoint !== "string") {
    throw new CliError(`gateway "${name}": metadata.json has no gateway_endpoint`);
  }
  const endpoint = parseGatewayUrl(m.gateway_endpoint);
  return {
    name: typeof m.name === "string" && m.name ? m.name : name,
    gateway_endpoint: m.gateway_endpoint,
    is_remote: typeof m.is_remote === "boolean"
      ? m.is_remote
      : !isLoopbackOrUnspecified(endpoint.host),
    gateway_port: typeof m.gateway_port === "number" ? m.gateway_port : endpoint.port,
    ...(typeof m.auth_mode === "string" ? { auth_mode: m.auth_mode } : {}),
  };
}

function importFix(name: string | undefined, endpoint: GatewayEndpoint): string {
  return `import the gateway's current client bundle: ${
    importBundleCommand(name, endpoint.url)
  }, DIR being the gateway's <state-dir>/pki`;
}

/** Where the gateway choice came from. */
export type GatewaySource = "flag" | "env" | "active" | "named";

/** The gateway a command talks to. */
export interface ResolvedGateway {
  /** Its registered name, when it has one. */
  name?: string;
  /** Its URL. */
  endpoint: GatewayEndpoint;
  /** TLS files (https). */
  tls?: TlsMaterial;
  /** Directory name under `gateways/` for per-gateway state (last sandbox). */
  key: string;
  /** How it was chosen. */
  source: GatewaySource;
}

/** Inputs of {@link resolveGateway}. */
export interface ResolveGatewayOptions {
  /** `--gateway-endpoint`. */
  endpointFlag?: string;
  /** `--gateway`. */
  gatewayFlag?: string;
  /** Environment (`OPENSHELL_GATEWAY_ENDPOINT`, `OPENSHELL_GATEWAY`). */
  env: EnvReader;
}

/** The per-gateway state key of an unregistered endpoint (never a valid gateway name). */
export function endpointKey(endpoint: GatewayEndpoint): string {
  return `_${endpoint.url.replace(/^https?:\/\//, "").replace(/[^A-Za-z0-9.-]/g, "_")}`;
}

/**
 * Picks the gateway: `--gateway-endpoint` / `OPENSHELL_GATEWAY_ENDPOINT`
 * first (TLS files from the gateway named by `--gateway` /
 * `OPENSHELL_GATEWAY`, or a registered one with that URL), else the gateway
 * named by `--gateway` / `OPENSHELL_GATEWAY`, else the active one.
 */
export async function resolveGateway(
  store: ConfigStore,
  options: ResolveGatewayOptions,
): Promise<ResolvedGateway> {
  const fromEnv = options.env("OPENSHELL_GATEWAY_ENDPOINT");
  const url = options.endpointFlag ?? (fromEnv || undefined);
  const named = options.gatewayFlag ?? (options.env("OPENSHELL_GATEWAY") || undefined);
  if (url) {
    const endpoint = parseGatewayUrl(url);
    let name: string | undefined;
    if (named && NAME.test(named)) {
      name = (await readOptional(`${store.gatewayDir(named)}/metadata.json`)) ? named : undefined;
    } else {
      // Best effort: an unreadable config dir only costs the TLS files of a match.
      const registered = await store.listGateways().catch(() => []);
      const match = registered.find((g) =>
        g.metadata && parseGatewayUrl(g.metadata.gateway_endpoint).url === endpoint.url
      );
      name = match?.name;
    }
    const tls = name && endpoint.scheme === "https" ? await store.readTls(name) : undefined;
    if (tls) checkClientTls(tls, { fix: importFix(name, endpoint) });
    return {
      ...(name ? { name } : {}),
      endpoint,
      ...(tls ? { tls } : {}),
      key: name ?? endpointKey(endpoint),
      source: options.endpointFlag ? "flag" : "env",
    };
  }
  const name = named ?? await store.activeGateway();
  if (!name) {
    throw new CliError(
      "no gateway configured: pass --gateway-endpoint URL, set OPENSHELL_GATEWAY_ENDPOINT, " +
        "or register one with 'openshell gateway add NAME URL'",
    );
  }
  const metadata = await store.readGateway(name);
  const endpoint = parseGatewayUrl(metadata.gateway_endpoint);
  const tls = endpoint.scheme === "https" ? await store.readTls(name) : undefined;
  if (tls) checkClientTls(tls, { fix: importFix(name, endpoint) });
  return {
    name,
    endpoint,
    ...(tls ? { tls } : {}),
    key: name,
    source: named ? "named" : "active",
  };
}
