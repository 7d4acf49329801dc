/**
 * `openshell-sandbox`: the supervisor inside each sandbox.
 *
 * Start-up order (any failure stops it with a one-line message and exit 1;
 * a bad flag exits 2): configuration → token and TLS files → the socket
 * directory (owned, 0700) → the host key and sshd config written into it →
 * `sshd -t` → the session cgroup (a predecessor's leftovers killed) → the
 * socket (0600). Then the session client runs until SIGTERM or SIGINT, which
 * end the session (OCSF session close), the relays, every SSH connection's
 * processes and the socket, and exit 0.
 *
 * The gRPC channel is deliberately not closed at exit: a grpc-js client's
 * GOAWAY after streaming can crash a Deno grpc-js server (denoland/deno
 * #36788); the connection simply ends with the process.
 *
 * @module
 */
import { Logger } from "../core/log.ts";
import { errorMessage } from "../core/log.ts";
import { generateHostKey } from "../core/ssh_keys.ts";
import { VERSION } from "../core/version.ts";
import { denoEnv, FlagError } from "../core/flags.ts";
import { parseSupervisorConfig, socketDirOf, type SupervisorConfig, usage } from "./config.ts";
import { SupervisorEvents } from "./events.ts";
import { RelayManager } from "./relay.ts";
import { grpcChannelFactory, SupervisorSession, type TlsMaterial } from "./session.ts";
import { SessionCgroups } from "./session_cgroup.ts";
import {
  checkSshd,
  clearStaleSocket,
  prepareSocketDir,
  SshdServer,
  writeSshdFiles,
} from "./sshd.ts";

/** The log line (message) written once the sshd socket accepts connections. */
export const READY_MESSAGE = "sshd socket listening";

async function readFile(what: string, path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${errorMessage(err)}`);
  }
}

async function readToken(config: SupervisorConfig): Promise<string | undefined> {
  if (config.token !== undefined) return config.token;
  if (config.tokenFile === undefined) return undefined;
  const token = new TextDecoder().decode(await readFile("token file", config.tokenFile)).trim();
  if (token === "") throw new Error(`token file ${config.tokenFile} is empty`);
  return token;
}

/** Reads the JSON environment file: an object of string values. */
async function readEnvironment(config: SupervisorConfig): Promise<Record<string, string>> {
  if (config.envFile === undefined) return {};
  const text = new TextDecoder().decode(await readFile("environment file", config.envFile));
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`environment file ${config.envFile} is not JSON: ${errorMessage(err)}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`environment file ${config.envFile} must hold a JSON object`);
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") {
      throw new Error(`environment file ${config.envFile}: the value of ${k} is not a string`);
    }
    env[k] = v;
  }
  return env;
}

async function readTls(config: SupervisorConfig): Promise<TlsMaterial | undefined> {
  if (!config.tls) return undefined;
  return {
    ca: await readFile("TLS CA", config.tls.ca),
    ...(config.tls.cert && config.tls.key
      ? {
        cert: await readFile("TLS certificate", config.tls.cert),
        key: await readFile("TLS key", config.tls.key),
      }
      : {}),
  };
}

/**
 * The host key in `path`, generated there (0600, atomically) when the file
 * does not exist yet: a bring-your-own supervisor keeps its key across
 * restarts, so clients that pinned it keep working.
 */
export async function loadOrCreateHostKey(path: string, sandboxId: string): Promise<string> {
  try {
    return new TextDecoder().decode(await Deno.readFile(path));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new Error(`cannot read host key ${path}: ${errorMessage(err)}`);
    }
  }
  const key = generateHostKey(`openshell-${sandboxId}`).privateKey;
  // Written in place, never through a temp file beside it: the supervisor's grants
  // cover exactly this path (`filesWritten`). createNew: a concurrent start wins.
  try {
    await Deno.writeTextFile(path, key.endsWith("\n") ? key : key + "\n", {
      mode: 0o600,
      createNew: true,
    });
    await Deno.chmod(path, 0o600);
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return await Deno.readTextFile(path);
    throw new Error(`cannot write host key ${path}: ${errorMessage(err)}`);
  }
  return key;
}

/**
 * The configuration `args` give, or the exit status when there is nothing
 * to run: 0 after `--help` or `--version`, 2 after a bad flag (one line).
 */
function readConfig(args: readonly string[]): SupervisorConfig | number {
  try {
    const parsed = parseSupervisorConfig(args, denoEnv);
    if (parsed.kind === "help") {
      console.log(usage());
      return 0;
    }
    if (parsed.kind === "version") {
      console.log(`openshell-sandbox ${VERSION}`);
      return 0;
    }
    return parsed.config;
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    console.error(`openshell-sandbox: ${err.message}`);
    return 2;
  }
}

/**
 * The cgroup that contains each SSH session's processes, or undefined
 * (with a warning: processes a session leaves running outlive it) when
 * `--session-cgroup` is `none` or cannot be used.
 */
async function openSessionCgroups(
  config: SupervisorConfig,
  logger: Logger,
): Promise<SessionCgroups | undefined> {
  if (config.sessionCgroup === undefined) {
    logger.warn(
      "SSH sessions are NOT contained (--session-cgroup none): processes a session leaves " +
        "running outlive it",
    );
    return undefined;
  }
  const opened = await SessionCgroups.open(config.sessionCgroup);
  if (!opened.ok) {
    logger.warn(
      `SSH sessions are NOT contained (${opened.reason}): processes a session leaves ` +
        "running outlive it; give --session-cgroup a directory on a cgroup2 mount",
    );
    return undefined;
  }
  logger.info("SSH sessions contained", { cgroup: config.sessionCgroup });
  return opened.cgroups;
}

/** What start-up prepared for the session. */
interface Prepared {
  /** Serves the sshd socket. */
  server: SshdServer;
  /** SHA-256 fingerprint of the host key (announced to the gateway). */
  fingerprint: string;
  /** The supervisor token, when one is configured. */
  token?: string;
  /** Client TLS to the gateway, when its endpoint is https. */
  tls?: TlsMaterial;
}

/**
 * Start-up in order: token and TLS files, the socket directory (owned,
 * 0700; a live supervisor's socket refuses the start), the host key and
 * sshd config written into it, `sshd -t`, the session cgroup, the socket.
 */
async function prepare(config: SupervisorConfig, logger: Logger): Promise<Prepared> {
  const token = await readToken(config);
  const tls = await readTls(config);
  const dir = socketDirOf(config.socketPath);
  await prepareSocketDir(dir);
  // Before touching any file: a live supervisor on this socket keeps its files.
  await clearStaleSocket(config.socketPath);
  const hostKey = config.hostKeyPath
    ? await loadOrCreateHostKey(config.hostKeyPath, config.sandboxId)
    : generateHostKey().privateKey;
  const files = await writeSshdFiles(dir, {
    hostKey,
    logLevel: config.logLevel,
    environment: await readEnvironment(config),
  });
  await checkSshd(config.sshd, files.configPath);
  const sessions = await openSessionCgroups(config, logger);
  const server = await SshdServer.listen({
    socketPath: config.socketPath,
    sshd: config.sshd,
    configPath: files.configPath,
    logger,
    sessions,
  });
  return { server, fingerprint: files.fingerprint, token, tls };
}

/**
 * Runs the session with the gateway until SIGTERM or SIGINT, then closes
 * the relays and the sshd server (every SSH connection's processes).
 */
async function serve(config: SupervisorConfig, prepared: Prepared, logger: Logger): Promise<void> {
  const events = new SupervisorEvents({ sandboxId: config.sandboxId, endpoint: config.endpoint });
  // Relays reach sshd in process, not through its socket (the socket stays for everyone else).
  const sshd = prepared.server;
  const relays = new RelayManager({
    socketPath: config.socketPath,
    events,
    logger,
    connect: () => sshd.connect(),
  });
  const session = new SupervisorSession({
    sandboxId: config.sandboxId,
    hostKeyFingerprint: prepared.fingerprint,
    channels: grpcChannelFactory({
      host: config.host,
      port: config.port,
      tls: prepared.tls,
      token: prepared.token,
    }),
    relays,
    events,
    logger: logger.with({ endpoint: config.endpoint }),
  });

  const stop = new AbortController();
  const onSignal = (signal: Deno.Signal) => () => {
    if (!stop.signal.aborted) logger.info("stopping", { signal });
    stop.abort();
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", onSignal("SIGTERM")],
    ["SIGINT", onSignal("SIGINT")],
  ];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);

  logger.info("connecting to the gateway", { endpoint: config.endpoint });
  await session.run(stop.signal);
  await relays.closeAll();
  await prepared.server.close();
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
}

/** Runs the supervisor with `args`; resolves with the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  // ms since the process started: Deno's own start-up plus loading this module graph.
  const loadedMs = performance.now();
  const config = readConfig(args);
  if (typeof config === "number") return config;
  const logger = new Logger(
    { level: config.logLevel, format: config.logFormat, target: "openshell-sandbox" },
    { sandbox_id: config.sandboxId },
  );
  let prepared: Prepared;
  try {
    prepared = await prepare(config, logger);
    logger.info(READY_MESSAGE, {
      path: config.socketPath,
      host_key: prepared.fingerprint,
      host_key_source: config.hostKeyPath ? "file" : "generated",
      // Boot stages (e2e/bench_boot.ts): process start → main() → this line.
      loaded_ms: Math.round(loadedMs),
      startup_ms: Math.round(performance.now()),
    });
  } catch (err) {
    logger.error(`cannot start: ${errorMessage(err)}`);
    return 1;
  }
  await serve(config, prepared, logger);
  logger.info("stopped");
  return 0;
}

if (import.meta.main) {
  // Last line of defence: a stray error in a callback must not take the
  // supervisor (and every SSH session of the sandbox) down.
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    console.error(`openshell-sandbox: unexpected error (continuing): ${errorMessage(event.error)}`);
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    console.error(
      `openshell-sandbox: unhandled rejection (continuing): ${errorMessage(event.reason)}`,
    );
  });
  Deno.exit(await main(Deno.args));
}
