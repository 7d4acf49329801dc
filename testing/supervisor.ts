/**
 * Test fixtures for the supervisor: run it as a child process with exactly
 * its grants, prepare the host for OpenSSH (`sandbox` user, `/run/sshd`),
 * and drive OpenSSH's `ssh`/`sftp` through a relay.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { type Grants, renderFlags, supervisorGrants } from "../core/grants.ts";
import { parseGatewayUrl } from "../core/endpoint.ts";
import { grpcTlsCredentials } from "../core/tls.ts";
import { REPO_ROOT, roleCommand } from "../core/launcher.ts";
import type { LogLevel } from "../core/log.ts";
import type { NetworkActivityEvent } from "../core/ocsf.ts";
import {
  type CreateSshSessionResponse,
  type IssueSupervisorCredentialsResponse,
  OpenShellClient,
  type Sandbox,
  type SandboxPhase,
  type SandboxStreamEvent,
  unaryCall,
} from "../core/protocol.ts";
import { shellJoin } from "../core/shell.ts";
import { waitFor } from "../core/testing.ts";
import { READY_MESSAGE } from "../supervisor/main.ts";
import { killAndRemove } from "../supervisor/session_cgroup.ts";
import { SANDBOX_USER } from "../supervisor/sshd_config.ts";

/** The OpenSSH daemon the tests use. */
export const TEST_SSHD = "/usr/sbin/sshd";

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const o = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
    return { ok: o.success, out: text.trim() };
  } catch (err) {
    return { ok: false, out: String(err) };
  }
}

function isRoot(): boolean {
  return Deno.uid() === 0;
}

let hostReady: Promise<void> | undefined;

/**
 * Makes sure this host can run the sandbox's sshd: the `sandbox` user
 * exists with an empty password, OpenSSH's privilege-separation user exists
 * and `/run/sshd` is there. Creates what is missing when running as root;
 * otherwise throws a message saying what to set up.
 */
export function ensureSandboxUser(): Promise<void> {
  hostReady ??= prepareHost().catch((err) => {
    hostReady = undefined;
    throw err;
  });
  return hostReady;
}

async function prepareHost(): Promise<void> {
  const setup = `useradd -m -s /bin/bash ${SANDBOX_USER} && passwd -d ${SANDBOX_USER}`;
  if (!(await run("getent", ["passwd", SANDBOX_USER])).ok) {
    if (!isRoot()) {
      throw new Error(`these tests need a user "${SANDBOX_USER}" with an empty password: ${setup}`);
    }
    const made = await run("useradd", ["-m", "-s", "/bin/bash", SANDBOX_USER]);
    if (!made.ok) throw new Error(`useradd ${SANDBOX_USER} failed: ${made.out}`);
  }
  const status = await run("passwd", ["-S", SANDBOX_USER]);
  if (!/^\S+ NP /.test(status.out)) {
    if (!isRoot()) {
      throw new Error(
        `user "${SANDBOX_USER}" must have an empty password: passwd -d ${SANDBOX_USER}`,
      );
    }
    const cleared = await run("passwd", ["-d", SANDBOX_USER]);
    if (!cleared.ok) throw new Error(`passwd -d ${SANDBOX_USER} failed: ${cleared.out}`);
  }
  if (!(await run("getent", ["passwd", "sshd"])).ok) {
    throw new Error(
      'OpenSSH\'s privilege-separation user "sshd" is missing (apt install openssh-server)',
    );
  }
  try {
    await Deno.stat("/run/sshd");
  } catch {
    if (!isRoot()) throw new Error("/run/sshd is missing: mkdir -p /run/sshd (as root)");
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  }
}

let cgroupRoot: Promise<string | undefined> | undefined;

/**
 * A cgroup v2 directory this process may create sub-cgroups in (the first
 * writable cgroup2 mount in `/proc/self/mountinfo` whose children offer
 * `cgroup.kill`), or undefined.
 */
export function writableCgroup2Root(): Promise<string | undefined> {
  cgroupRoot ??= (async () => {
    let info: string;
    try {
      info = await Deno.readTextFile("/proc/self/mountinfo");
    } catch {
      return undefined;
    }
    for (const line of info.split("\n")) {
      const [pre, post] = line.split(" - ");
      if (!post || post.split(" ")[0] !== "cgroup2") continue;
      const mountPoint = pre.split(" ")[4];
      const probe = `${mountPoint}/openshell-probe-${crypto.randomUUID().slice(0, 8)}`;
      try {
        await Deno.mkdir(probe);
        const ok = await Deno.stat(`${probe}/cgroup.kill`).then(() => true, () => false);
        await Deno.remove(probe);
        if (ok) return mountPoint;
      } catch {
        // read-only or not ours: try the next one
      }
    }
    return undefined;
  })();
  return cgroupRoot;
}

async function isMountPoint(path: string): Promise<boolean> {
  const info = await Deno.readTextFile("/proc/self/mountinfo");
  return info.split("\n").some((l) => l.split(" ")[4] === path);
}

/** A test supervisor's session cgroup: a cgroup bind-mounted into its dir. */
export interface TestSessionCgroup {
  /** What the supervisor gets as `--session-cgroup` (the bind mount). */
  mountPoint: string;
  /** The cgroup itself, below the host's cgroup2 mount. */
  cgroup: string;
  /** Kills what is left, unmounts, removes both. */
  release(): Promise<void>;
}

/**
 * The session cgroup of a test supervisor working in `dir`, as in the
 * guest: a cgroup bind-mounted outside `/sys` (Deno wants `--allow-all` for
 * anything under `/sys`). Derived from `dir`, so a supervisor restarted on
 * the same dir finds its predecessor's sessions. Undefined when this host
 * has no writable cgroup2 or refuses the mount.
 */
export async function testSessionCgroup(dir: string): Promise<TestSessionCgroup | undefined> {
  const root = await writableCgroup2Root();
  if (root === undefined) return undefined;
  const cgroup = `${root}/openshell-test-${dir.replace(/[^A-Za-z0-9]+/g, "_").slice(-60)}`;
  const mountPoint = `${dir}/sessions`;
  await Deno.mkdir(cgroup).catch((err) => {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  });
  await Deno.mkdir(mountPoint, { recursive: true });
  if (!(await isMountPoint(mountPoint))) {
    const out = await run("mount", ["--bind", cgroup, mountPoint]);
    if (!out.ok) {
      await Deno.remove(mountPoint).catch(() => {});
      await Deno.remove(cgroup).catch(() => {});
      return undefined;
    }
  }
  return {
    mountPoint,
    cgroup,
    release: async () => {
      if (await isMountPoint(mountPoint)) {
        for await (const e of Deno.readDir(mountPoint)) {
          if (e.isDirectory) await killAndRemove(`${mountPoint}/${e.name}`).catch(() => {});
        }
      }
      for (let i = 0; i < 5 && await isMountPoint(mountPoint); i++) {
        await run("umount", [mountPoint]);
      }
      await Deno.remove(mountPoint).catch(() => {});
      await killAndRemove(cgroup).catch(() => {});
    },
  };
}

/** Options of {@link startSupervisor}. */
export interface StartSupervisorOptions {
  /** Gateway endpoint (`http://127.0.0.1:PORT`). */
  endpoint: string;
  /** Sandbox id it serves. */
  sandboxId: string;
  /**
   * Working directory: the socket dir is `<dir>/run`, key and token files
   * live beside it. Default: a fresh temp dir, removed by `close()`.
   */
  dir?: string;
  /** Socket path; default `<dir>/run/ssh.sock`. */
  socketPath?: string;
  /** Host private key (OpenSSH); written to `<dir>/host_key` and passed by flag. */
  hostKey?: string;
  /**
   * `--ssh-host-key` path the supervisor itself generates the key into when
   * it is missing (granted read and write, like `launch.ts` does); kept
   * across restarts. Not with `hostKey`.
   */
  hostKeyFile?: string;
  /** Supervisor token (see `byoSupervisor` in testing/gateway.ts); written to `<dir>/token` and passed by flag. */
  token?: string;
  /** Sandbox environment; written to `<dir>/environment.json` and passed by flag. */
  environment?: Record<string, string>;
  /** Default `info`. */
  logLevel?: LogLevel;
  /** Extra arguments. */
  args?: readonly string[];
  /** More files it reads (e.g. TLS files given in `args`). */
  readFiles?: readonly string[];
  /** Files outside its dir it may create (e.g. a host key file named in `args`). */
  writeFiles?: readonly string[];
  /** Addresses of a host-name endpoint (see `SupervisorGrantParams`). */
  gatewayAddresses?: readonly string[];
  /** Wait until the socket is listening (default true). */
  waitReady?: boolean;
  /**
   * `--session-cgroup`: default {@link testSessionCgroup} of the dir
   * (released by `close()`), or `none` when the host has no writable cgroup2.
   */
  sessionCgroup?: string;
}

/** A running supervisor child. */
export interface SupervisorProcess {
  /** Its pid. */
  readonly pid: number;
  /** Working directory (see {@link StartSupervisorOptions.dir}). */
  readonly dir: string;
  /** The sshd socket. */
  readonly socketPath: string;
  /** The grants it runs with. */
  readonly grants: Grants;
  /** Its session cgroup directory, or undefined (`none`). */
  readonly sessionCgroup: string | undefined;
  /** Resolves when it exits. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** The OCSF events it emitted so far. */
  events(): NetworkActivityEvent[];
  /** Resolves with the first stderr line (past or future) matching; rejects on exit/timeout. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves with the first OCSF event matching. */
  waitForEvent(
    match: (e: NetworkActivityEvent) => boolean,
    timeoutMs?: number,
  ): Promise<NetworkActivityEvent>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<Deno.CommandStatus>;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<Deno.CommandStatus>;
  /** Stops it if running and removes a temp dir the fixture made. */
  close(): Promise<void>;
  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Environment for children: the test's own, minus every `OPENSHELL_*` setting. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("OPENSHELL_")),
  );
  return { ...env, ...extra };
}

/** Starts the supervisor through `roleCommand` with exactly `supervisorGrants(...)`. */
export async function startSupervisor(options: StartSupervisorOptions): Promise<SupervisorProcess> {
  await ensureSandboxUser();
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "osup-" });
  const socketPath = options.socketPath ?? `${dir}/run/ssh.sock`;
  const args = [
    "--sandbox-id",
    options.sandboxId,
    "--openshell-endpoint",
    options.endpoint,
    "--ssh-socket-path",
    socketPath,
    "--sshd",
    TEST_SSHD,
    "--log-level",
    options.logLevel ?? "info",
  ];
  const readFiles: string[] = [...(options.readFiles ?? [])];
  const writeFiles: string[] = [...(options.writeFiles ?? [])];
  if (options.hostKeyFile !== undefined) {
    args.push("--ssh-host-key", options.hostKeyFile);
    readFiles.push(options.hostKeyFile);
    writeFiles.push(options.hostKeyFile);
  } else if (options.hostKey !== undefined) {
    await Deno.writeTextFile(`${dir}/host_key`, options.hostKey, { mode: 0o600 });
    args.push("--ssh-host-key", `${dir}/host_key`);
    readFiles.push(`${dir}/host_key`);
  }
  if (options.token !== undefined) {
    await Deno.writeTextFile(`${dir}/token`, options.token, { mode: 0o600 });
    args.push("--supervisor-token-file", `${dir}/token`);
    readFiles.push(`${dir}/token`);
  }
  if (options.environment !== undefined) {
    await Deno.writeTextFile(`${dir}/environment.json`, JSON.stringify(options.environment));
    args.push("--env-file", `${dir}/environment.json`);
    readFiles.push(`${dir}/environment.json`);
  }
  const own = options.sessionCgroup === undefined ? await testSessionCgroup(dir) : undefined;
  const chosen = options.sessionCgroup ?? own?.mountPoint ?? "none";
  const sessionCgroup = chosen === "none" ? undefined : chosen;
  args.push("--session-cgroup", chosen);
  args.push(...(options.args ?? []));
  const { host, port } = parseGatewayUrl(options.endpoint);
  const grants = supervisorGrants({
    gateway: { host, port },
    gatewayAddresses: options.gatewayAddresses,
    socketPath,
    sshd: TEST_SSHD,
    readFiles,
    writeFiles,
    sessionCgroup,
  });
  const [exe, ...rest] = roleCommand("supervisor", grants, args);
  const child = new Deno.Command(exe, {
    args: rest,
    clearEnv: true,
    env: cleanEnv(),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();

  let text = "";
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  const reader = (async () => {
    let partial = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      lines.push(...parts);
      for (const l of listeners) l();
    }
    if (partial) lines.push(partial);
  })();
  let exited = false;
  const status = child.status.then(async (s) => {
    await reader.catch(() => {});
    exited = true;
    for (const l of listeners) l();
    return s;
  });

  const waitForLine = (match: (line: string) => boolean, timeoutMs = 20_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const found = lines.find(match);
        if (found !== undefined) return done(() => resolve(found));
        if (exited) {
          return done(() => reject(new Error(`supervisor exited; stderr:\n${text}`)));
        }
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out waiting for a line; stderr:\n${text}`))),
        timeoutMs,
      );
      const done = (f: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        f();
      };
      listeners.add(check);
      check();
    });
  const events = () =>
    lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as NetworkActivityEvent);

  const signal = async (sig: Deno.Signal) => {
    if (!exited) {
      try {
        child.kill(sig);
      } catch {
        // already gone
      }
    }
    return await status;
  };
  const close = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graced = await Promise.race([
      signal("SIGTERM").then(() => true),
      new Promise<boolean>((r) => timer = setTimeout(() => r(false), 10_000)),
    ]);
    clearTimeout(timer);
    if (!graced) await signal("SIGKILL");
    await own?.release();
    if (ownDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const proc: SupervisorProcess = {
    pid: child.pid,
    dir,
    socketPath,
    grants,
    sessionCgroup,
    status,
    stderr: () => text,
    events,
    waitForLine,
    waitForEvent: async (match, timeoutMs) => {
      const line = await waitForLine(
        (l) => l.startsWith("{") && match(JSON.parse(l) as NetworkActivityEvent),
        timeoutMs,
      );
      return JSON.parse(line) as NetworkActivityEvent;
    },
    stop: () => signal("SIGTERM"),
    kill: () => signal("SIGKILL"),
    close,
    [Symbol.asyncDispose]: close,
  };
  if (options.waitReady ?? true) {
    try {
      await waitForLine((l) => l.includes(READY_MESSAGE));
    } catch (err) {
      await close();
      throw err;
    }
  }
  return proc;
}

/** How `ssh`/`sftp` reach the sandbox: a `ProxyCommand` line. */
export interface SshRoute {
  proxyCommand: string;
  /** A known_hosts file listing the host key under the alias `sandbox`: pin it. */
  knownHostsFile?: string;
}

/** A route through the gateway's `CONNECT` endpoint with an SSH session token. */
export function connectRoute(options: {
  host: string;
  port: number;
  connectPath: string;
  sandboxId: string;
  token: string;
}): SshRoute {
  return {
    proxyCommand: shellJoin([
      Deno.execPath(),
      "run",
      "--quiet",
      "--no-config",
      `--allow-net=${options.host}:${options.port}`,
      `${REPO_ROOT}/supervisor/testdata/connect_proxy.ts`,
      "connect",
      options.host,
      String(options.port),
      options.connectPath,
      options.sandboxId,
      options.token,
    ]),
  };
}

/** A route straight to the sshd socket (no gateway). */
export function unixRoute(socketPath: string): SshRoute {
  return {
    proxyCommand: shellJoin([
      Deno.execPath(),
      "run",
      "--quiet",
      "--no-config",
      `--allow-read=${socketPath}`,
      `--allow-write=${socketPath}`,
      `--allow-net=unix:${socketPath}`,
      `${REPO_ROOT}/supervisor/testdata/connect_proxy.ts`,
      "unix",
      socketPath,
    ]),
  };
}

/** OpenSSH client options for a route (no config files, batch mode, host key pinned or ignored). */
export function sshOptions(route: SshRoute): string[] {
  const hostKeys = route.knownHostsFile
    ? [
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      `UserKnownHostsFile=${route.knownHostsFile}`,
      "-o",
      "HostKeyAlias=sandbox",
    ]
    : ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"];
  return [
    "-F",
    "/dev/null",
    "-o",
    `ProxyCommand=${route.proxyCommand}`,
    ...hostKeys,
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=20",
  ];
}

/** Result of {@link ssh}. */
export interface SshResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `ssh sandbox@sandbox CMD` over `route`. */
export async function ssh(
  route: SshRoute,
  command: string,
  options: { tty?: boolean; stdin?: string } = {},
): Promise<SshResult> {
  const child = new Deno.Command("ssh", {
    args: [
      ...sshOptions(route),
      ...(options.tty ? ["-tt"] : []),
      `${SANDBOX_USER}@sandbox`,
      command,
    ],
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Runs an `sftp` batch (`-b -`) over `route`. */
export async function sftp(route: SshRoute, batch: string): Promise<SshResult> {
  const child = new Deno.Command("sftp", {
    args: [...sshOptions(route), "-b", "-", `${SANDBOX_USER}@sandbox`],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(batch));
  await w.close();
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** The `deno run` argv (executable first) of a module run with `grants` (e.g. a probe). */
export function moduleCommand(
  grants: Grants,
  module: string,
  args: readonly string[] = [],
): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    `--config=${REPO_ROOT}/deno.json`,
    ...renderFlags(grants),
    module,
    ...args,
  ];
}

/** The few gateway calls the supervisor tests make. */
export interface GatewayApi {
  /** Resolves once `Health` says HEALTHY (e.g. its compute driver is up); polls, no event exists. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** `CreateSandbox{name}`. */
  create(name: string, environment?: Record<string, string>): Promise<Sandbox>;
  /** `GetSandbox{name}`. */
  get(name: string): Promise<Sandbox>;
  /** `DeleteSandbox{name}`. */
  delete(name: string): Promise<boolean>;
  /** `CreateSshSession{sandbox_id}`. */
  sshSession(sandboxId: string): Promise<CreateSshSessionResponse>;
  /** `IssueSupervisorCredentials{name}` (bring-your-own supervisors). */
  credentials(name: string): Promise<IssueSupervisorCredentialsResponse>;
  /** Resolves once the sandbox reaches `phase`, from `WatchSandbox` (no polling). */
  waitForPhase(sandboxId: string, phase: SandboxPhase, timeoutMs?: number): Promise<Sandbox>;
  /** Closes the client. */
  close(): void;
}

/** Client TLS files (PEM paths) for {@link gatewayApi}. */
export interface ClientTlsFiles {
  ca: string;
  cert?: string;
  key?: string;
}

/** A client for the gateway at `127.0.0.1:port` (plaintext, or mTLS with `tls`). */
export function gatewayApi(port: number, tls?: ClientTlsFiles): GatewayApi {
  const secure = tls
    ? grpcTlsCredentials("127.0.0.1", {
      ca: Deno.readFileSync(tls.ca),
      ...(tls.cert && tls.key
        ? { cert: Deno.readFileSync(tls.cert), key: Deno.readFileSync(tls.key) }
        : {}),
    })
    : undefined;
  const credentials = secure?.credentials ?? grpc.credentials.createInsecure();
  const options = secure?.options ?? {};
  const client = new OpenShellClient(`127.0.0.1:${port}`, credentials, options);
  return {
    waitHealthy: async (timeoutMs = 30_000) => {
      await waitFor("the gateway to be healthy", async () => {
        const h = await unaryCall(client, client.Health, {}).catch(() => ({ status: "" }));
        return h.status === "SERVICE_STATUS_HEALTHY";
      }, { timeoutMs, intervalMs: 100 });
    },
    create: async (name, environment = {}) =>
      (await unaryCall(client, client.CreateSandbox, { name, spec: { environment } })).sandbox!,
    get: async (name) => (await unaryCall(client, client.GetSandbox, { name })).sandbox!,
    delete: async (name) => (await unaryCall(client, client.DeleteSandbox, { name })).deleted,
    sshSession: (sandboxId) =>
      unaryCall(client, client.CreateSshSession, { sandbox_id: sandboxId }),
    credentials: (name) => unaryCall(client, client.IssueSupervisorCredentials, { name }),
    waitForPhase: (sandboxId, phase, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const call = client.WatchSandbox({ id: sandboxId, follow_status: true });
        let last: SandboxPhase | undefined;
        const timer = setTimeout(
          () => finish(new Error(`sandbox not ${phase} within ${timeoutMs} ms (last: ${last})`)),
          timeoutMs,
        );
        let done = false;
        const finish = (result: Sandbox | Error) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          call.cancel();
          result instanceof Error ? reject(result) : resolve(result);
        };
        call.on("data", (e: SandboxStreamEvent) => {
          if (e.payload !== "sandbox") return;
          last = e.sandbox.phase;
          if (e.sandbox.phase === phase) finish(e.sandbox);
        });
        call.on("error", (err) => finish(err));
        call.on("end", () => finish(new Error(`watch ended before ${phase} (last: ${last})`)));
      }),
    close: () => client.close(),
  };
}

/** A throw-away PKI for mTLS tests (PEM files). */
export interface TestPki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here: trusting it must fail. */
  otherCa: string;
}

/**
 * Makes a CA, a server certificate for `127.0.0.1`/`localhost` and a client
 * certificate in `dir`, with the `openssl` command.
 */
export async function makeTestPki(dir: string): Promise<TestPki> {
  const openssl = async (args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    })
      .output().catch((err) => {
        throw new Error(`the TLS test needs the openssl command: ${err}`);
      });
    if (!out.success) {
      throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  for (const ca of ["ca", "other-ca"]) {
    await openssl([
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.crt`,
      "-days",
      "2",
      "-subj",
      `/CN=${ca}`,
    ]);
  }
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  );
  await Deno.writeTextFile(`${dir}/client.ext`, "extendedKeyUsage=clientAuth\n");
  for (const who of ["server", "client"]) {
    await openssl([
      "req",
      ...ec,
      "-keyout",
      `${who}.key`,
      "-out",
      `${who}.csr`,
      "-subj",
      `/CN=${who}`,
    ]);
    await openssl([
      "x509",
      "-req",
      "-in",
      `${who}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${who}.crt`,
      "-days",
      "2",
      "-extfile",
      `${who}.ext`,
    ]);
  }
  return {
    ca: `${dir}/ca.crt`,
    serverCert: `${dir}/server.crt`,
    serverKey: `${dir}/server.key`,
    clientCert: `${dir}/client.crt`,
    clientKey: `${dir}/client.key`,
    otherCa: `${dir}/other-ca.crt`,
  };
}
