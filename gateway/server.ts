/**
 * Assembles a running gateway from its configuration: store, session
 * registry, compute runtime (and driver), the gRPC services on an internal
 * Unix socket, and the public listener that serves gRPC and HTTP/1.1 on one
 * port.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type { Duplex } from "node:stream";
import { errorMessage, type Logger } from "../core/log.ts";
import { type InjectH2, MAX_CONCURRENT_STREAMS } from "../core/h2_forward.ts";
import { OpenShellClient } from "../core/protocol.ts";
import { SessionRegistry } from "../core/registry.ts";
import { VERSION } from "../core/version.ts";
import { hostForUrl, hostPort } from "../core/endpoint.ts";
import { ensureGatewayPki, serverNames } from "../core/pki.ts";
import { checkPrivateDir } from "../core/secure_fs.ts";
import { Code } from "../core/status.ts";
import { ComputeRuntime } from "./compute.ts";
import {
  driverArgs,
  driverSocketPath,
  egressBinary,
  egressControlSocket,
  type GatewayConfig,
  internalSocketPath,
  pkiDir,
  supervisorSocketPath,
} from "./config.ts";
import { type ComputeDriver, startDriverProcess } from "./driver.ts";
import { EgressPolicies } from "./egress.ts";
import { type EgressProcess, startEgressProcess } from "./egress_process.ts";
import { ImageService } from "./images.ts";
import { ExecService } from "./exec.ts";
import { httpResponse, type RequestHead } from "./http1.ts";
import { GatewayListener } from "./listener.ts";
import { decodeGuard, guardDecoding } from "./rpc.ts";
import { PolicyService } from "./policy_service.ts";
import { SandboxService, type SshEndpoint } from "./sandbox_service.ts";
import { SshTunnel } from "./ssh_tunnel.ts";
import { SqliteStore, type Store } from "./store.ts";
import { SupervisorPlane } from "./supervisor_plane.ts";
import type { RelayTuning } from "./tuning.ts";

/**
 * HTTP/2 flow-control windows of the relay plane (per stream / per connection).
 * `OPENSHELL_H2_DEFAULT_WINDOWS=1` keeps HTTP/2's 64 KiB defaults instead, for
 * the before/after benchmark only (gateway/tuning.ts, docs/benchmarks.md).
 */
export const H2_STREAM_WINDOW = 2 * 1024 * 1024;
/** Connection-level window. */
export const H2_CONNECTION_WINDOW = 4 * 1024 * 1024;
/**
 * Largest gRPC message the gateway sends (and clients accept): every valid
 * page of every list RPC fits in half of it (gateway/validation.ts).
 */
export const MAX_GRPC_MESSAGE = 16 * 1024 * 1024;
/**
 * Largest gRPC message the gateway accepts: the largest valid request is an
 * `ExecSandbox` with 4 MiB of stdin and a 256 KiB command line. Anything
 * bigger is refused from its 5-byte length prefix (`RESOURCE_EXHAUSTED`)
 * before it is buffered; see docs/gateway.md for the memory figures.
 */
export const MAX_GRPC_RECEIVE = 5 * 1024 * 1024;
/**
 * Largest request header list (metadata) accepted, as HTTP/2 counts it:
 * a bigger one gets `RESOURCE_EXHAUSTED` on its stream. Header blocks that
 * nghttp2's HPACK decoder refuses outright (one field past about 64 KiB, or
 * about 1 MiB in all) end that client's connection instead, as HTTP/2
 * requires; see docs/gateway.md.
 */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;
/** Grace for streams to flush their final status at shutdown. */
export const SHUTDOWN_FLUSH_MS = 250;
/** How often expired or revoked SSH tokens are purged. */
export const SSH_SESSION_PRUNE_MS = 3_600_000;

/** A running gateway. */
export interface Gateway {
  /** Bound address. */
  host: string;
  port: number;
  /** URL supervisors dial (the supervisor plane). */
  grpcEndpoint: string;
  /** Bound port of the supervisor plane. */
  supervisorPort: number;
  /** The automatic PKI directory, when the gateway uses one. */
  pkiDir?: string;
  /** Resolves when {@link stop} has finished. */
  stopped: Promise<void>;
  /** Stops accepting, ends streams, stops the driver, closes the store. */
  stop(): Promise<void>;
}

/** Options of {@link startGateway}. */
export interface StartOptions {
  log: Logger;
  /** Keep client GOAWAY frames (reproducing denoland/deno#36788 only). */
  unsafeKeepGoaway?: boolean;
  /** Aborting gives up starting (e.g. SIGTERM while the driver comes up). */
  signal?: AbortSignal;
  /**
   * Benchmark knobs (gateway/tuning.ts; main.ts reads them from
   * `OPENSHELL_H2_DEFAULT_WINDOWS` / `OPENSHELL_RELAY_CHUNK_BYTES` /
   * `OPENSHELL_H2_UNIX_HOP`):
   * `defaultH2Windows` skips raising the HTTP/2 windows to
   * {@link H2_STREAM_WINDOW}/{@link H2_CONNECTION_WINDOW}; `relayChunkBytes`
   * caps the relay frames the gateway sends; `unixHop` forwards HTTP/2
   * through the internal Unix sockets. Production leaves them unset.
   */
  tuning?: Partial<RelayTuning>;
}

function planeEndpoint(config: GatewayConfig, bind: string, port: number): string {
  const scheme = config.disableTls ? "http" : "https";
  const unspecified = ["0.0.0.0", "::", "[::]", ""].includes(bind);
  return `${scheme}://${unspecified ? "127.0.0.1" : hostForUrl(bind)}:${port}`;
}

/** TLS material of both planes. */
interface TlsSetup {
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
async function setupTls(config: GatewayConfig, log: Logger): Promise<TlsSetup> {
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

/** Methods the supervisor plane serves; every other one answers PERMISSION_DENIED there. */
export const SUPERVISOR_PLANE_METHODS: readonly string[] = ["ConnectSupervisor", "RelayStream"];

/** Handlers of the supervisor plane's gRPC server: two real ones, the rest refused. */
function supervisorPlaneHandlers(
  plane: SupervisorPlane,
): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {
    ConnectSupervisor: plane.connectSupervisor,
    RelayStream: plane.relayStream,
  };
  const service = OpenShellClient.service as grpc.ServiceDefinition;
  for (const [name, def] of Object.entries(service)) {
    if (SUPERVISOR_PLANE_METHODS.includes(name)) continue;
    const denied = {
      code: Code.PERMISSION_DENIED,
      details: `${name} is not served on the supervisor plane (use the gateway's user API)`,
    };
    handlers[name] = def.responseStream
      ? (call: grpc.ServerWritableStream<unknown, unknown>) => call.destroy(denied as never)
      : (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(denied, null);
  }
  return handlers;
}

async function bindGrpc(
  server: grpc.Server,
  socketPath: string,
): Promise<void> {
  await removeStale(socketPath);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix:${socketPath}`,
      grpc.ServerCredentials.createInsecure(),
      (err) => err ? reject(new Error(`cannot bind ${socketPath}: ${err.message}`)) : resolve(),
    )
  );
  await Deno.chmod(socketPath, 0o600);
}

function openStore(config: GatewayConfig): Store {
  switch (config.db.kind) {
    case "sqlite-memory":
      return SqliteStore.open();
    case "sqlite-file":
      return SqliteStore.open({ path: config.db.path });
    case "postgres":
      throw new Error("postgres is not supported yet");
  }
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

async function removeStale(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** What {@link tuneSessions} needs of a node:http2 server. */
export interface Http2ServerLike {
  on(event: "session", listener: (session: unknown) => void): unknown;
  emit(event: "connection", stream: Duplex): boolean;
}

/**
 * The node:http2 servers of a bound grpc-js server. grpc-js keeps them in
 * the private field `http2Servers` (a Map keyed by server; 1.14.x) and has
 * no public way to set a server's HTTP/2 windows, so the gateway reaches in.
 * If a grpc-js upgrade removes or reshapes the field this throws at start
 * instead of silently serving with default windows and no header-list cap.
 */
export function http2ServersOf(server: grpc.Server): Http2ServerLike[] {
  const field = (server as unknown as { http2Servers?: unknown }).http2Servers;
  const servers = field instanceof Map ? [...field.keys()] : [];
  if (
    servers.length === 0 ||
    !servers.every((s) => typeof (s as Partial<Http2ServerLike>)?.on === "function")
  ) {
    throw new Error(
      "@grpc/grpc-js has no private Server.http2Servers map of bound node:http2 servers " +
        "(the gateway hooks it to raise HTTP/2 windows and cap header lists): use the " +
        "@grpc/grpc-js version in deno.json, or adapt http2ServersOf in gateway/server.ts",
    );
  }
  return servers as Http2ServerLike[];
}

/**
 * Hands a connection to a bound grpc-js server in this process, as if it
 * had arrived on its socket (the listeners' {@link InjectH2}).
 */
export function grpcInjector(server: grpc.Server): InjectH2 {
  const [h2] = http2ServersOf(server);
  return (stream) => void h2.emit("connection", stream);
}

/**
 * HTTP/2 settings of every session of a bound grpc-js server: the largest
 * header list a client may send ({@link MAX_HEADER_LIST_BYTES}, always) and,
 * unless `defaultWindows`, the raised flow-control windows
 * ({@link H2_STREAM_WINDOW} per stream, {@link H2_CONNECTION_WINDOW} for
 * the connection). Throws when grpc-js's servers cannot be reached (see
 * {@link http2ServersOf}).
 */
export function tuneSessions(server: grpc.Server, log: Logger, defaultWindows: boolean): void {
  for (const h2 of http2ServersOf(server)) {
    h2.on("session", (session) => {
      const s = session as {
        settings(opts: Record<string, number>): void;
        setLocalWindowSize(n: number): void;
      };
      try {
        s.settings(
          defaultWindows
            ? { maxHeaderListSize: MAX_HEADER_LIST_BYTES }
            : { initialWindowSize: H2_STREAM_WINDOW, maxHeaderListSize: MAX_HEADER_LIST_BYTES },
        );
        if (!defaultWindows) s.setLocalWindowSize(H2_CONNECTION_WINDOW);
      } catch (err) {
        log.debug("could not apply HTTP/2 settings", { error: errorMessage(err) });
      }
    });
  }
}

/**
 * Checks that this process may do what `config` asks before doing any of
 * it: a denied listen would otherwise surface as an uncaught exception, and
 * a compiled binary's grants are fixed at build time.
 */
export function checkGrants(config: GatewayConfig): void {
  const host = hostForUrl(config.bind);
  const wanted: [Deno.PermissionDescriptor, string][] = [
    [
      { name: "net", host: config.port === 0 ? host : `${host}:${config.port}` },
      `listen on ${host}:${config.port}`,
    ],
    [
      {
        name: "net",
        host: config.supervisorPort === 0
          ? hostForUrl(config.supervisorBind)
          : `${hostForUrl(config.supervisorBind)}:${config.supervisorPort}`,
      },
      `listen on ${hostForUrl(config.supervisorBind)}:${config.supervisorPort}`,
    ],
    [{ name: "write", path: config.stateDir }, `write its state dir ${config.stateDir}`],
    [{ name: "read", path: config.stateDir }, `read its state dir ${config.stateDir}`],
  ];
  if (config.db.kind === "sqlite-file") {
    wanted.push([{ name: "write", path: config.db.path }, `write its database ${config.db.path}`]);
  }
  if (config.drivers === "vm") {
    const driver = `${config.driverDir}/openshell-driver-vm`;
    wanted.push([{ name: "run", command: driver }, `run its compute driver ${driver}`]);
  }
  if (config.egress) {
    const egress = egressBinary(config);
    wanted.push([{ name: "run", command: egress }, `run its egress proxy ${egress}`]);
  }
  const denied = wanted.filter(([d]) => Deno.permissions.querySync(d).state !== "granted");
  if (denied.length > 0) {
    throw new Error(
      `this gateway is not permitted to ${denied.map(([, what]) => what).join(", ")} ` +
        "(a compiled binary keeps the grants it was built with: rebuild it with matching " +
        "`deno task compile` options, or use `deno task gateway`)",
    );
  }
}

/** Starts a gateway; resolves once its port is bound and it logged `Server listening`. */
export async function startGateway(config: GatewayConfig, options: StartOptions): Promise<Gateway> {
  const log = options.log;
  checkGrants(config);
  await checkPrivateDir(config.stateDir, { create: true, exact0700: true, what: "state dir" });
  if (config.disableGatewayAuth) {
    log.warn(
      "GATEWAY AUTH IS DISABLED: anyone who can reach the user API can list, read, exec into and " +
        "delete every sandbox (--disable-gateway-auth is for development only)",
    );
  }
  const tlsSetup = config.disableTls ? undefined : await setupTls(config, log);
  const store = openStore(config);
  const registry = new SessionRegistry<Duplex>();
  registry.startReaper();

  const endpointRef: { current?: SshEndpoint } = {};
  let driver: ComputeDriver | undefined;
  // The driver learns the gateway's endpoint, so it starts once the port is
  // bound; until then create/delete wait for it (see ComputeRuntime.attachDriver).
  const compute = new ComputeRuntime({
    store,
    registry,
    log,
    driverExpected: config.drivers === "vm",
    supervisorCa: tlsSetup?.caPem,
  });
  compute.start();

  const tunnel = new SshTunnel({ store, registry, log });
  tunnel.startExpirySweep();
  // The egress proxy's policies: attached once its process answers (below).
  const egressPolicies = config.egress
    ? new EgressPolicies({
      store,
      log,
      appendLog: (line) => compute.appendLog(line),
      changed: (id) => compute.statusTopics.publish(id),
    })
    : undefined;
  let egressProcess: EgressProcess | undefined;
  const policies = new PolicyService({
    store,
    log,
    egress: egressPolicies,
    sandboxLog: (id, message) => compute.log(id, "info", message),
  });
  const sandboxes = new SandboxService({
    store,
    compute,
    log,
    sshEndpoint: () => endpointRef.current!,
    healthy: () => compute.driverReady,
    supervisorPlane: () => ({ endpoint: grpcEndpoint, caPem: tlsSetup?.caPem ?? "" }),
    onSshSessionRevoked: (token) => tunnel.closeToken(token),
    policy: policies,
  });
  const plane = new SupervisorPlane({
    store,
    registry,
    log,
    heartbeatSecs: config.supervisorHeartbeatSecs,
    relayChunkBytes: options.tuning?.relayChunkBytes,
  });
  const exec = new ExecService({ store, registry, log });

  const grpcOptions = {
    "grpc.max_receive_message_length": MAX_GRPC_RECEIVE,
    "grpc.max_send_message_length": MAX_GRPC_MESSAGE,
    "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
    interceptors: [decodeGuard],
  };
  const grpcServer = new grpc.Server(grpcOptions);
  grpcServer.addService(guardDecoding(OpenShellClient.service), {
    ...sandboxes.handlers(),
    ...policies.handlers(),
    ...new ImageService({ compute, log }).handlers(),
    ConnectSupervisor: plane.connectSupervisor,
    RelayStream: plane.relayStream,
    ExecSandbox: exec.execSandbox,
  });
  const supervisorServer = new grpc.Server(grpcOptions);
  supervisorServer.addService(
    guardDecoding(OpenShellClient.service),
    supervisorPlaneHandlers(plane),
  );
  const grpcSocket = internalSocketPath(config);
  const supervisorSocket = supervisorSocketPath(config);
  await bindGrpc(grpcServer, grpcSocket);
  await bindGrpc(supervisorServer, supervisorSocket);
  tuneSessions(grpcServer, log, options.tuning?.defaultH2Windows ?? false);
  tuneSessions(supervisorServer, log, options.tuning?.defaultH2Windows ?? false);

  const http = async (head: RequestHead, socket: import("node:net").Socket, rest: Uint8Array) => {
    const path = head.target.split("?")[0];
    if (path === config.sshConnectPath) return await tunnel.handle(head, socket, rest);
    if (head.method === "CONNECT") {
      socket.end(httpResponse(404, { body: "unknown CONNECT target" }));
    } else if (path === "/healthz" && (head.method === "GET" || head.method === "HEAD")) {
      socket.end(httpResponse(200, { body: "ok" }));
    } else if (path === "/readyz" && (head.method === "GET" || head.method === "HEAD")) {
      socket.end(
        compute.driverReady
          ? httpResponse(200, { body: "ready" })
          : httpResponse(503, { body: "compute driver not ready" }),
      );
    } else if (path === "/healthz" || path === "/readyz") {
      socket.end(httpResponse(405, { body: "use GET" }));
    } else {
      socket.end(httpResponse(404, { body: "not found" }));
    }
  };

  const listener = new GatewayListener({
    bind: config.bind,
    port: config.port,
    tls: tlsSetup?.user,
    grpcSocketPath: grpcSocket,
    grpcInject: options.tuning?.unixHop ? undefined : grpcInjector(grpcServer),
    http,
    log,
    filterGoaway: !options.unsafeKeepGoaway,
    limits: {
      maxConnections: config.maxConnections,
      maxConnectionsPerPeer: config.maxConnectionsPerPeer,
      idleTimeoutMs: config.connectionIdleSecs * 1000,
    },
  });
  const supervisorListener = new GatewayListener({
    bind: config.supervisorBind,
    port: config.supervisorPort,
    tls: tlsSetup?.supervisor,
    grpcSocketPath: supervisorSocket,
    grpcInject: options.tuning?.unixHop ? undefined : grpcInjector(supervisorServer),
    http: (_head, socket) => {
      socket.end(httpResponse(403, { body: "the supervisor plane serves gRPC supervisors only" }));
      return Promise.resolve();
    },
    log: log.with({ plane: "supervisor" }),
    filterGoaway: !options.unsafeKeepGoaway,
    limits: {
      maxConnections: config.maxConnections,
      maxConnectionsPerPeer: config.maxConnectionsPerPeer,
      idleTimeoutMs: config.connectionIdleSecs * 1000,
    },
  });
  let bound: { host: string; port: number };
  let supervisorBound: { host: string; port: number };
  try {
    bound = await listener.listen();
    try {
      supervisorBound = await supervisorListener.listen();
    } catch (err) {
      await listener.stopAccepting().catch(() => {});
      throw new Error(
        `supervisor plane on ${config.supervisorBind}:${config.supervisorPort}: ${
          errorMessage(err)
        }`,
      );
    }
  } catch (err) {
    grpcServer.forceShutdown();
    supervisorServer.forceShutdown();
    tunnel.closeAll();
    registry.close();
    store.close();
    const message = errorMessage(err);
    throw new Error(
      message.startsWith("supervisor plane")
        ? `cannot listen: ${message}`
        : `cannot listen on ${config.bind}:${config.port}: ${message}`,
    );
  }
  const grpcEndpoint = config.grpcEndpoint ??
    planeEndpoint(config, supervisorBound.host, supervisorBound.port);
  endpointRef.current = {
    host: config.sshGatewayHost ?? bound.host,
    port: config.sshGatewayPort ?? bound.port,
    scheme: config.disableTls ? "http" : "https",
    connectPath: config.sshConnectPath,
    ttlSecs: config.sshSessionTtlSecs,
  };
  log.info(
    `Server listening on ${hostPort(bound.host, bound.port)}`,
    {
      version: VERSION,
      drivers: config.drivers,
      tls: !config.disableTls,
      mtls: !!tlsSetup?.user.clientCa,
      supervisor_plane: `${hostForUrl(supervisorBound.host)}:${supervisorBound.port}`,
    },
  );

  const prune = setInterval(() => {
    store.pruneSshSessions(Date.now()).catch((err) =>
      log.warn("ssh session prune failed", { error: errorMessage(err) })
    );
  }, SSH_SESSION_PRUNE_MS);

  let stopping: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => resolveStopped = r);

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info("shutting down");
      clearInterval(prune);
      const closed = Promise.all([
        listener.stopAccepting().catch(() => {}),
        supervisorListener.stopAccepting().catch(() => {}),
      ]);
      plane.closeAll();
      tunnel.closeAll();
      await compute.stop();
      registry.close();
      await new Promise((r) => setTimeout(r, SHUTDOWN_FLUSH_MS));
      listener.destroyAll();
      supervisorListener.destroyAll();
      await closed;
      grpcServer.forceShutdown();
      supervisorServer.forceShutdown();
      if (driver) await driver.close();
      // After the driver: no guest connection is left to carry.
      if (egressProcess) await egressProcess.stop();
      else await egressPolicies?.close();
      store.close();
      await removeStale(grpcSocket).catch(() => {});
      await removeStale(supervisorSocket).catch(() => {});
      log.info("stopped");
      resolveStopped();
    })();
    return stopping;
  };

  if (egressPolicies) {
    try {
      // Before the driver: guests' first connections find the proxy there.
      egressProcess = await startEgressProcess({
        binary: egressBinary(config),
        args: [
          "--state-dir",
          config.egressStateDir,
          "--log-level",
          config.logLevel,
        ],
        controlSocket: egressControlSocket(config),
        policies: egressPolicies,
        log,
        signal: options.signal,
      });
    } catch (err) {
      await stop();
      throw err;
    }
  }

  if (config.drivers === "vm") {
    const args = driverArgs(config, grpcEndpoint);
    try {
      // The driver creates its own state dir (the gateway may touch only the socket in it).
      const proc = await startDriverProcess({
        binary: `${config.driverDir}/openshell-driver-vm`,
        args,
        socketPath: driverSocketPath(config),
        log,
        signal: options.signal,
      });
      driver = proc.driver;
      log.info("compute driver ready", {
        driver: proc.capabilities.driver_name,
        version: proc.capabilities.driver_version,
      });
      proc.exited.then((code) => {
        if (!stopping) {
          log.error(`compute driver exited with status ${code}; shutting down`);
          stop();
        }
      });
      compute.attachDriver(driver);
    } catch (err) {
      await stop();
      throw err;
    }
  }

  return {
    host: bound.host,
    port: bound.port,
    grpcEndpoint,
    supervisorPort: supervisorBound.port,
    pkiDir: tlsSetup ? pkiDir(config) : undefined,
    stopped,
    stop,
  };
}
