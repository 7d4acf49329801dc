/**
 * Test fixture: a real gateway process started through `deno run` with
 * exactly the grants its flags imply (core/grants.ts), on loopback and an
 * ephemeral port.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { relayFrameDuplex } from "../core/bridge.ts";
import { egressGrants, gatewayGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import {
  type GatewayMessage,
  type IssueSupervisorCredentialsResponse,
  OpenShellClient,
  type Sandbox,
  type SandboxSpec,
  unaryCall,
  type UnaryMethod,
} from "../core/protocol.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { generateHostKey, type HostKey } from "../core/ssh_keys.ts";
import { grpcTlsCredentials } from "../core/tls.ts";
import { gatewayGrantParams, parseGatewayConfig } from "../gateway/config.ts";
import { MAX_SPEC_BYTES, MAX_VALUE_BYTES, specBytes } from "../gateway/validation.ts";

/** Options of {@link spawnGateway}. */
export interface TestGatewayOptions {
  /** Extra flags, appended after the defaults (later flags win). */
  args?: string[];
  /** State dir; default a fresh temp dir removed by `stop`/`kill`. */
  stateDir?: string;
  /** `--db-url`; default `sqlite::memory:`. */
  dbUrl?: string;
  /** Use `--drivers vm` with this driver dir. */
  driverDir?: string;
  /** With `driverDir`: the driver's state dir (default `<stateDir>/vm`). */
  vmDriverStateDir?: string;
  /** Fixed port; default 0 (ephemeral). */
  port?: number;
  /** Fixed port of the supervisor plane; default 0 (ephemeral). */
  supervisorPort?: number;
  /** Extra environment for the gateway process. */
  env?: Record<string, string>;
  /**
   * Secure defaults: TLS with the automatic PKI and client certificates on
   * the user API. Default false: `--disable-tls --disable-gateway-auth`.
   */
  tls?: boolean;
  /** How long to wait for `Server listening`; default 30 s. */
  startTimeoutMs?: number;
  /**
   * Run the real egress proxy (`--egress`): its wrapper
   * ({@link writeEgressWrapper}) is written into `driverDir`, or a temp dir
   * given as `--driver-dir`. Default: `--no-egress`.
   */
  egress?: boolean;
  /**
   * Run the egress proxy from this directory's `openshell-egress` instead
   * (with `driverDir` it must be that dir).
   */
  egressDir?: string;
}

/** Name of the egress proxy's executable in a driver dir. */
export const EGRESS_BINARY = "openshell-egress";

/**
 * Writes `<dir>/openshell-egress`, a wrapper that runs the egress role
 * through `deno run` with exactly its grants for `stateDir` (`exec`, so
 * the gateway stays its parent). Returns its path.
 */
export async function writeEgressWrapper(dir: string, stateDir: string): Promise<string> {
  const path = `${dir}/${EGRESS_BINARY}`;
  const argv = roleCommand("egress", egressGrants({ stateDir }), []);
  const q = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\n# Test fixture: the egress proxy with its exact grants.\nexec ${
      argv.map(q).join(" ")
    } "$@"\n`,
    { mode: 0o755 },
  );
  await Deno.chmod(path, 0o755);
  return path;
}

/** A gateway process under test. */
export interface TestGateway {
  /** `http://127.0.0.1:PORT` (`https://` with `tls`): the user API. */
  endpoint: string;
  port: number;
  /** Port of the supervisor plane. */
  supervisorPort: number;
  /** URL of the supervisor plane (what supervisors dial). */
  supervisorEndpoint: string;
  /** With `tls`: the automatic PKI's files (CA, operator client bundle). */
  pki?: { dir: string; ca: string; clientCert: string; clientKey: string };
  stateDir: string;
  /** The process id. */
  pid: number;
  /** Everything the gateway wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number>;
  /** SIGKILL; resolves when it is gone. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL when it has not exited after `graceMs` (default 5 s). */
  shutdown(graceMs?: number): Promise<void>;
  /** Resolves with the exit code whenever the process ends. */
  exited: Promise<number>;
}

/** The gateway's flags for `options` with its state dir and egress binary dir (`options.args` last: they win). */
export function gatewayArgs(
  options: TestGatewayOptions,
  stateDir: string,
  egressDir?: string,
): string[] {
  return [
    "--bind",
    "127.0.0.1",
    "--port",
    String(options.port ?? 0),
    "--state-dir",
    stateDir,
    "--db-url",
    options.dbUrl ?? "sqlite::memory:",
    "--supervisor-port",
    String(options.supervisorPort ?? 0),
    ...(options.tls ? [] : ["--disable-tls", "--disable-gateway-auth"]),
    "--log-level",
    "debug",
    ...(options.driverDir
      ? [
        "--drivers",
        "vm",
        "--driver-dir",
        options.driverDir,
        "--vm-driver-state-dir",
        options.vmDriverStateDir ?? `${stateDir}/vm`,
      ]
      : ["--drivers", "none"]),
    ...(egressDir
      ? ["--egress", ...(options.driverDir ? [] : ["--driver-dir", egressDir])]
      : ["--no-egress"]),
    ...(options.args ?? []),
  ];
}

/** Where the automatic PKI of a TLS gateway with `stateDir` keeps its files. */
export function gatewayPkiFiles(stateDir: string): NonNullable<TestGateway["pki"]> {
  const dir = `${stateDir}/pki`;
  return {
    dir,
    ca: `${dir}/ca.crt`,
    clientCert: `${dir}/client.crt`,
    clientKey: `${dir}/client.key`,
  };
}

/** A spawned gateway process whose stderr is being collected. */
interface GatewayProcess {
  child: Deno.ChildProcess;
  /** Everything it wrote to stderr so far. */
  log(): string;
  /** Resolves with [user API port, supervisor plane port] once it logged them. */
  listening: Promise<[number, number]>;
  /** Resolves with the exit code once it ended and its stderr is read. */
  status: Promise<number>;
}

/** Starts the gateway with exactly the grants its flags imply and collects its stderr. */
function spawnGatewayProcess(args: string[], env?: Record<string, string>): GatewayProcess {
  const parsed = parseGatewayConfig(args, (k) => env?.[k]);
  if (parsed.help) throw new Error("--help given to the test gateway");
  const [exe, ...rest] = roleCommand(
    "gateway",
    gatewayGrants(gatewayGrantParams(parsed.config)),
    args,
  );
  const child = new Deno.Command(exe, {
    args: rest,
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const listening = Promise.withResolvers<[number, number]>();
  const pump = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      log += decoder.decode(chunk, { stream: true });
      const m = /Server listening on [^\s]*:(\d+).* supervisor_plane=[^\s]*:(\d+)/.exec(log);
      if (m) listening.resolve([Number(m[1]), Number(m[2])]);
    }
  })();
  const status = child.status.then(async (s) => {
    await pump;
    return s.code;
  });
  return { child, log: () => log, listening: listening.promise, status };
}

/**
 * The gateway's two ports once it is listening; rejects (after SIGKILL and
 * its exit) when it exits first or `timeoutMs` passes, with its stderr.
 */
async function waitListening(
  proc: GatewayProcess,
  exited: Promise<number>,
  timeoutMs: number,
): Promise<[number, number]> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      proc.listening,
      exited.then((code) => {
        throw new Error(`gateway exited with status ${code} before listening:\n${proc.log()}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`gateway did not start in ${timeoutMs} ms:\n${proc.log()}`)),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    try {
      proc.child.kill("SIGKILL");
    } catch { /* gone */ }
    await exited;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Spawns a gateway and waits until it logged `Server listening on HOST:PORT`. */
export async function spawnGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const ownDir = options.stateDir === undefined;
  const stateDir = options.stateDir ?? await Deno.makeTempDir({ prefix: "osgw" });
  let egressDir = options.egressDir;
  let ownEgressDir: string | undefined;
  if (options.egress && !egressDir) {
    egressDir = options.driverDir ?? (ownEgressDir = await Deno.makeTempDir({ prefix: "osegb" }));
    await writeEgressWrapper(egressDir, `${stateDir}/egress`);
  }
  const proc = spawnGatewayProcess(gatewayArgs(options, stateDir, egressDir), options.env);
  const exited = proc.status.then(async (code) => {
    if (ownDir) await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    if (ownEgressDir) await Deno.remove(ownEgressDir, { recursive: true }).catch(() => {});
    return code;
  });
  const [port, supervisorPort] = await waitListening(
    proc,
    exited,
    options.startTimeoutMs ?? 30_000,
  );
  const signal = (sig: Deno.Signal) => {
    try {
      proc.child.kill(sig);
    } catch { /* already gone */ }
  };
  const scheme = options.tls ? "https" : "http";
  return {
    endpoint: `${scheme}://127.0.0.1:${port}`,
    port,
    supervisorPort,
    supervisorEndpoint: `${scheme}://127.0.0.1:${supervisorPort}`,
    pki: options.tls ? gatewayPkiFiles(stateDir) : undefined,
    stateDir,
    pid: proc.child.pid,
    stderr: proc.log,
    stop: () => {
      signal("SIGTERM");
      return exited;
    },
    kill: async () => {
      signal("SIGKILL");
      await exited;
    },
    shutdown: async (graceMs = 5_000) => {
      signal("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const graced = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((r) => timer = setTimeout(() => r(false), graceMs)),
      ]);
      clearTimeout(timer);
      if (!graced) signal("SIGKILL");
      await exited;
    },
    exited,
  };
}

/** An in-process stand-in for a supervisor: one session, relays handed to a callback. */
export interface FakeSupervisor {
  /** Messages received from the gateway. */
  received: GatewayMessage[];
  /** Resolves with the session id once `session_accepted` arrived (rejects on stream error). */
  accepted: Promise<string>;
  /** Resolves with the stream's end status (code 0 for a clean end). */
  ended: Promise<{ code: number; details: string }>;
  /** Sends one heartbeat. */
  heartbeat(): void;
  /** Cancels the session stream (the grpc client stays open). */
  cancel(): void;
  /** Closes the session and the client channel (sends GOAWAY). */
  close(): void;
}

/** Options of {@link connectFakeSupervisor}. */
export interface FakeSupervisorOptions {
  /** Gateway port on 127.0.0.1. */
  port: number;
  sandboxId: string;
  /** Called with a byte stream for each relay the gateway opens. */
  onRelay?: (relay: Duplex, channelId: string) => void;
  /** Send `hello` (default true); false sends a heartbeat first instead. */
  hello?: boolean;
  /** gRPC metadata to send (e.g. the supervisor token). */
  metadata?: Record<string, string>;
  /** Use this client instead of a new one (several sessions over one connection). */
  client?: OpenShellClient;
  /** Never answer `relay_open` (to test what happens when no relay comes). */
  ignoreRelays?: boolean;
  /** Called with every message from the gateway. */
  onMessage?: (message: GatewayMessage) => void;
  /** PEM CA of a TLS supervisor plane (default: plaintext). */
  tlsCa?: string;
  /** Fingerprint sent in the hello. */
  hostKeyFingerprint?: string;
  /** Largest relay frame payload this supervisor sends; default `RELAY_CHUNK_BYTES`. */
  chunkBytes?: number;
}

/** Connects a {@link FakeSupervisor} to a gateway on loopback. */
export function connectFakeSupervisor(options: FakeSupervisorOptions): FakeSupervisor {
  const secure = options.tlsCa ? grpcTlsCredentials("127.0.0.1", { ca: options.tlsCa }) : undefined;
  const client = options.client ??
    new OpenShellClient(
      `127.0.0.1:${options.port}`,
      secure?.credentials ?? grpc.credentials.createInsecure(),
      secure?.options ?? {},
    );
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(options.metadata ?? {})) md.set(k, v);
  const session = client.ConnectSupervisor(md);
  const received: GatewayMessage[] = [];
  let resolveAccepted!: (id: string) => void;
  let rejectAccepted!: (err: Error) => void;
  const accepted = new Promise<string>((res, rej) => {
    resolveAccepted = res;
    rejectAccepted = rej;
  });
  accepted.catch(() => {});
  let resolveEnded!: (s: { code: number; details: string }) => void;
  const ended = new Promise<{ code: number; details: string }>((r) => resolveEnded = r);
  session.on("data", (m: GatewayMessage) => {
    received.push(m);
    options.onMessage?.(m);
    if (m.payload === "session_accepted") resolveAccepted(m.session_accepted.session_id);
    if (m.payload === "relay_open" && !options.ignoreRelays) {
      const relay = client.RelayStream(md);
      relay.write({ init: { channel_id: m.relay_open.channel_id } });
      const bytes = relayFrameDuplex(relay, {
        abort: () => relay.cancel(),
        chunkBytes: options.chunkBytes,
      });
      bytes.on("error", () => {});
      options.onRelay?.(bytes, m.relay_open.channel_id);
    }
  });
  session.on(
    "status",
    (s: grpc.StatusObject) => resolveEnded({ code: s.code, details: s.details }),
  );
  session.on("error", (err: Error) => rejectAccepted(err));
  if (options.hello === false) session.write({ heartbeat: {} });
  else {session.write({
      hello: {
        sandbox_id: options.sandboxId,
        instance_id: crypto.randomUUID(),
        ssh_host_key_fingerprint: options.hostKeyFingerprint ?? "",
      },
    });}
  return {
    received,
    accepted,
    ended,
    heartbeat: () => session.write({ heartbeat: {} }),
    cancel: () => session.cancel(),
    close: () => {
      session.cancel();
      if (!options.client) client.close();
    },
  };
}

/** A bring-your-own supervisor's identity: see {@link byoSupervisor}. */
export interface ByoSupervisor {
  sandbox: Sandbox;
  /** The supervisor token (`x-openshell-supervisor-token`). */
  token: string;
  /** What `IssueSupervisorCredentials` answered (endpoint, CA). */
  credentials: IssueSupervisorCredentialsResponse;
  /** The supervisor's host key; its fingerprint is pinned at the first hello. */
  hostKey: HostKey;
  /** gRPC metadata carrying the token. */
  metadata: Record<string, string>;
  /**
   * Connects a {@link FakeSupervisor} for this sandbox to the supervisor plane
   * with the token and the host key's fingerprint (`options` override).
   */
  connect(options?: Partial<FakeSupervisorOptions>): FakeSupervisor;
}

/**
 * Prepares a sandbox on a `--drivers none` gateway for a supervisor that runs
 * elsewhere: creates `name` (unless `create: false`: it exists already),
 * issues its supervisor credentials and makes it a host key.
 */
export async function byoSupervisor(
  gw: TestGateway,
  name: string,
  options: {
    create?: boolean;
    environment?: Record<string, string>;
    /** Client TLS files of the user API when not `gw.pki` (a gateway with `--tls-cert`). */
    clientPki?: TestGateway["pki"];
  } = {},
): Promise<ByoSupervisor> {
  const api = apiClient(gw.port, options.clientPki ?? gw.pki);
  try {
    const sandbox = options.create === false
      ? (await api.call(api.raw.GetSandbox, { name })).sandbox!
      : (await api.call(api.raw.CreateSandbox, {
        name,
        spec: { environment: options.environment ?? {} },
      })).sandbox!;
    const credentials = await api.call(api.raw.IssueSupervisorCredentials, { name });
    const hostKey = generateHostKey();
    const metadata = { [SUPERVISOR_TOKEN_METADATA]: credentials.token };
    return {
      sandbox,
      token: credentials.token,
      credentials,
      hostKey,
      metadata,
      connect: (o = {}) =>
        connectFakeSupervisor({
          port: gw.supervisorPort,
          sandboxId: sandbox.id,
          tlsCa: credentials.ca_cert_pem || undefined,
          hostKeyFingerprint: hostKey.fingerprint,
          metadata,
          ...o,
        }),
    };
  } finally {
    api.close();
  }
}

/** Result of {@link sendConnect}. */
export interface ConnectReply {
  /** HTTP status of the CONNECT reply. */
  status: number;
  /** The reply head. */
  head: string;
  /** The socket, carrying raw bytes after a 200 (destroyed otherwise); paused: call `resume()`. */
  socket: net.Socket;
}

/**
 * Sends `CONNECT path` (or `method`) with the given headers through
 * `node:http`'s client and reads the reply head.
 */
export function sendConnect(
  port: number,
  headers: Record<string, string>,
  options: { method?: string; path?: string } = {},
): Promise<ConnectReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      method: options.method ?? "CONNECT",
      path: options.path ?? "/connect/ssh",
      headers: { Host: "gateway", ...headers },
      createConnection: () => net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }),
    });
    const reply = (res: http.IncomingMessage, socket: net.Socket, rest?: Uint8Array) => {
      socket.pause();
      if (rest && rest.length > 0) socket.unshift(rest);
      const status = res.statusCode ?? 0;
      const lines = [`HTTP/${res.httpVersion} ${status} ${res.statusMessage ?? ""}`];
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
        lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
      }
      if (status !== 200) socket.destroy();
      resolve({ status, head: lines.join("\r\n"), socket });
    };
    req.once("connect", reply);
    req.once("response", (res: http.IncomingMessage) => reply(res, res.socket as net.Socket));
    req.once("error", reject);
    req.end();
  });
}

/** A promisified `OpenShell` client for tests. */
export interface ApiClient {
  /**
   * Calls a unary method of {@link raw}, e.g. `api.call(api.raw.GetSandbox, { name })`;
   * rejects with the grpc-js ServiceError.
   */
  call<Req, Res>(method: UnaryMethod<Req, Res>, request: NoInfer<Req>): Promise<Res>;
  /** The underlying grpc-js client (for streaming calls). */
  raw: OpenShellClient;
  close(): void;
}

/**
 * Opens an {@link ApiClient} to a gateway on 127.0.0.1:`port`: plaintext, or
 * with `pki` (a {@link TestGateway}'s) TLS with the operator's client certificate.
 */
export function apiClient(port: number, pki?: TestGateway["pki"]): ApiClient {
  const secure = pki
    ? grpcTlsCredentials("127.0.0.1", {
      ca: Deno.readTextFileSync(pki.ca),
      cert: Deno.readTextFileSync(pki.clientCert),
      key: Deno.readTextFileSync(pki.clientKey),
    })
    : undefined;
  const raw = new OpenShellClient(
    `127.0.0.1:${port}`,
    secure?.credentials ?? grpc.credentials.createInsecure(),
    secure?.options ?? {},
  );
  return {
    raw,
    call: (method, request) => unaryCall(raw, method, request),
    close: () => raw.close(),
  };
}

/**
 * The largest spec validation accepts: environment values of the largest
 * size until {@link MAX_SPEC_BYTES} is all but used (within a byte).
 */
export function largestSpec(): SandboxSpec {
  const environment: Record<string, string> = {};
  const spec: SandboxSpec = {
    log_level: "",
    environment,
    template: null,
    policy: null,
    providers: [],
    gpu: false,
  };
  for (let i = 0; i < 1000; i++) {
    const key = `VALUE_${i}`;
    environment[key] = "v".repeat(MAX_VALUE_BYTES);
    if (specBytes(spec) <= MAX_SPEC_BYTES) continue;
    let lo = 0;
    let hi = MAX_VALUE_BYTES;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      environment[key] = "v".repeat(mid);
      if (specBytes(spec) <= MAX_SPEC_BYTES) lo = mid;
      else hi = mid - 1;
    }
    environment[key] = "v".repeat(lo);
    return spec;
  }
  throw new Error("unreachable: the spec budget is finite");
}
