/**
 * Assembles a running gateway from its configuration: the services
 * (gateway/services.ts) and their gRPC servers on internal Unix sockets,
 * the public listeners of both planes (gRPC and HTTP/1.1 on one port each),
 * TLS from gateway/tls_setup.ts, the helper processes (egress proxy,
 * compute driver) and the orderly shutdown of all of it.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { hostForUrl, hostPort } from "../core/endpoint.ts";
import { MAX_CONCURRENT_STREAMS } from "../core/h2_forward.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import { OpenShellClient } from "../core/protocol.ts";
import { checkPrivateDir } from "../core/secure_fs.ts";
import { Code } from "../core/status.ts";
import { VERSION } from "../core/version.ts";
import { removeSocket } from "./child_process.ts";
import type { ComputeRuntime } from "./compute.ts";
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
import type { EgressPolicies } from "./egress.ts";
import { type EgressProcess, startEgressProcess } from "./egress_process.ts";
import { httpResponse } from "./http1.ts";
import { GatewayListener, type HttpHandler } from "./listener.ts";
import { decodeGuard, guardDecoding } from "./rpc.ts";
import type { SshEndpoint } from "./sandbox_service.ts";
import { createServices, type GatewayServices, type ServiceEndpoints } from "./services.ts";
import type { Store } from "./store.ts";
import type { SupervisorPlane } from "./supervisor_plane.ts";
import { setupTls, type TlsSetup } from "./tls_setup.ts";
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
   * `OPENSHELL_H2_DEFAULT_WINDOWS` / `OPENSHELL_RELAY_CHUNK_BYTES`):
   * `defaultH2Windows` skips raising the HTTP/2 windows to
   * {@link H2_STREAM_WINDOW}/{@link H2_CONNECTION_WINDOW}; `relayChunkBytes`
   * caps the relay frames the gateway sends. Production leaves both unset.
   */
  tuning?: Partial<RelayTuning>;
}

/** URL supervisors dial for a plane bound on `bind:port` (loopback for an unspecified bind). */
function planeEndpoint(config: GatewayConfig, bind: string, port: number): string {
  const scheme = config.disableTls ? "http" : "https";
  const unspecified = ["0.0.0.0", "::", "[::]", ""].includes(bind);
  return `${scheme}://${unspecified ? "127.0.0.1" : hostForUrl(bind)}:${port}`;
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

/** Binds `server` on a fresh Unix socket at `socketPath`, then makes the socket 0600. */
async function bindGrpc(
  server: grpc.Server,
  socketPath: string,
): Promise<void> {
  await removeSocket(socketPath);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix:${socketPath}`,
      grpc.ServerCredentials.createInsecure(),
      (err) => err ? reject(new Error(`cannot bind ${socketPath}: ${err.message}`)) : resolve(),
    )
  );
  await Deno.chmod(socketPath, 0o600);
}

/** What {@link tuneSessions} needs of a node:http2 server. */
export interface Http2ServerLike {
  on(event: "session", listener: (session: unknown) => void): unknown;
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

/** Options of every gRPC server of the gateway (both planes). */
const GRPC_SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.max_receive_message_length": MAX_GRPC_RECEIVE,
  "grpc.max_send_message_length": MAX_GRPC_MESSAGE,
  "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
  interceptors: [decodeGuard],
};

/** The gRPC servers of both planes, each on its internal Unix socket. */
interface GrpcServers {
  /** The user API. */
  user: grpc.Server;
  userSocket: string;
  /** The supervisor plane. */
  supervisor: grpc.Server;
  supervisorSocket: string;
}

/** Starts both planes' gRPC servers on their Unix sockets, their HTTP/2 sessions tuned. */
async function startGrpcServers(
  config: GatewayConfig,
  services: GatewayServices,
  options: StartOptions,
): Promise<GrpcServers> {
  const user = new grpc.Server(GRPC_SERVER_OPTIONS);
  user.addService(guardDecoding(OpenShellClient.service), services.handlers);
  const supervisor = new grpc.Server(GRPC_SERVER_OPTIONS);
  supervisor.addService(
    guardDecoding(OpenShellClient.service),
    supervisorPlaneHandlers(services.plane),
  );
  const userSocket = internalSocketPath(config);
  const supervisorSocket = supervisorSocketPath(config);
  await bindGrpc(user, userSocket);
  await bindGrpc(supervisor, supervisorSocket);
  const defaultWindows = options.tuning?.defaultH2Windows ?? false;
  tuneSessions(user, options.log, defaultWindows);
  tuneSessions(supervisor, options.log, defaultWindows);
  return { user, userSocket, supervisor, supervisorSocket };
}

/**
 * The user API's HTTP/1.1 routes: the SSH tunnel's `CONNECT` on
 * `--ssh-connect-path`, `/healthz` (200 while up) and `/readyz` (200 once
 * the compute driver is ready, 503 before); anything else 404 (405 for a
 * probe that is not GET or HEAD).
 */
function userHttp(
  connectPath: string,
  services: Pick<GatewayServices, "tunnel" | "compute">,
): HttpHandler {
  const { tunnel, compute } = services;
  return async (head, socket, rest) => {
    const path = head.target.split("?")[0];
    if (path === connectPath) return await tunnel.handle(head, socket, rest);
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
}

/** The supervisor plane's HTTP/1.1: refused. */
const supervisorHttp: HttpHandler = (_head, socket) => {
  socket.end(httpResponse(403, { body: "the supervisor plane serves gRPC supervisors only" }));
  return Promise.resolve();
};

/** The public listeners of both planes. */
interface Listeners {
  user: GatewayListener;
  supervisor: GatewayListener;
}

/** Where both planes' listeners are bound. */
interface BoundPlanes {
  user: { host: string; port: number };
  supervisor: { host: string; port: number };
}

/** Options of {@link createListeners}. */
interface ListenersOptions {
  services: GatewayServices;
  grpc: GrpcServers;
  tls?: TlsSetup;
  log: Logger;
  unsafeKeepGoaway?: boolean;
}

/** Both planes' listeners (not yet listening), in front of their gRPC servers. */
function createListeners(config: GatewayConfig, o: ListenersOptions): Listeners {
  const limits = {
    maxConnections: config.maxConnections,
    maxConnectionsPerPeer: config.maxConnectionsPerPeer,
    idleTimeoutMs: config.connectionIdleSecs * 1000,
  };
  return {
    user: new GatewayListener({
      bind: config.bind,
      port: config.port,
      tls: o.tls?.user,
      grpcSocketPath: o.grpc.userSocket,
      http: userHttp(config.sshConnectPath, o.services),
      log: o.log,
      filterGoaway: !o.unsafeKeepGoaway,
      limits,
    }),
    supervisor: new GatewayListener({
      bind: config.supervisorBind,
      port: config.supervisorPort,
      tls: o.tls?.supervisor,
      grpcSocketPath: o.grpc.supervisorSocket,
      http: supervisorHttp,
      log: o.log.with({ plane: "supervisor" }),
      filterGoaway: !o.unsafeKeepGoaway,
      limits: { ...limits },
    }),
  };
}

/**
 * Binds the user API's listener, then the supervisor plane's (the first
 * stops accepting when the second fails). Throws one line naming the plane
 * and address that could not be bound.
 */
async function listenPlanes(config: GatewayConfig, listeners: Listeners): Promise<BoundPlanes> {
  try {
    const user = await listeners.user.listen();
    try {
      return { user, supervisor: await listeners.supervisor.listen() };
    } catch (err) {
      await listeners.user.stopAccepting().catch(() => {});
      throw new Error(
        `supervisor plane on ${config.supervisorBind}:${config.supervisorPort}: ${
          errorMessage(err)
        }`,
      );
    }
  } catch (err) {
    const message = errorMessage(err);
    throw new Error(
      message.startsWith("supervisor plane")
        ? `cannot listen: ${message}`
        : `cannot listen on ${config.bind}:${config.port}: ${message}`,
    );
  }
}

/** Releases what a start that could not listen had built (nothing is served yet). */
function abandonStart(services: GatewayServices, grpcServers: GrpcServers): void {
  grpcServers.user.forceShutdown();
  grpcServers.supervisor.forceShutdown();
  services.tunnel.closeAll();
  services.registry.close();
  services.store.close();
}

/** Where CreateSshSession sends clients: the bound user API unless `--ssh-gateway-*` say otherwise. */
function sshEndpointOf(config: GatewayConfig, bound: BoundPlanes): SshEndpoint {
  return {
    host: config.sshGatewayHost ?? bound.user.host,
    port: config.sshGatewayPort ?? bound.user.port,
    scheme: config.disableTls ? "http" : "https",
    connectPath: config.sshConnectPath,
    ttlSecs: config.sshSessionTtlSecs,
  };
}

/** Purges expired and revoked SSH session tokens every {@link SSH_SESSION_PRUNE_MS}. */
function startSessionPrune(store: Store, log: Logger): ReturnType<typeof setInterval> {
  return setInterval(() => {
    store.pruneSshSessions(Date.now()).catch((err) =>
      log.warn("ssh session prune failed", { error: errorMessage(err) })
    );
  }, SSH_SESSION_PRUNE_MS);
}

/** What a running gateway is made of, for {@link GatewayShutdown}. */
interface RunningParts {
  services: GatewayServices;
  grpc: GrpcServers;
  listeners: Listeners;
  prune: ReturnType<typeof setInterval>;
  log: Logger;
}

/** Stops a running gateway, once, in order (see {@link GatewayShutdown.stop}). */
class GatewayShutdown {
  /** The compute driver, once its process answers. */
  driver?: ComputeDriver;
  /** The egress proxy's process, once it answers. */
  egressProcess?: EgressProcess;
  readonly #parts: RunningParts;
  readonly #done = Promise.withResolvers<void>();
  #stopping: Promise<void> | undefined;

  /** Prepares the shutdown of `parts` (nothing stops yet). */
  constructor(parts: RunningParts) {
    this.#parts = parts;
  }

  /** Resolves when {@link stop} has finished. */
  get stopped(): Promise<void> {
    return this.#done.promise;
  }

  /** Whether {@link stop} has been called. */
  get stopping(): boolean {
    return this.#stopping !== undefined;
  }

  /**
   * Stops accepting, ends the supervisor sessions, tunnels and the compute
   * runtime, gives streams {@link SHUTDOWN_FLUSH_MS} to flush their final
   * status, closes every connection and both gRPC servers, stops the driver,
   * then the egress proxy (no guest connection is left to carry), closes
   * the store and removes the sockets. Calling it again returns the same
   * promise.
   */
  stop = (): Promise<void> => {
    this.#stopping ??= this.#run();
    return this.#stopping;
  };

  async #run(): Promise<void> {
    const { services, grpc: servers, listeners, prune, log } = this.#parts;
    log.info("shutting down");
    clearInterval(prune);
    const closed = Promise.all([
      listeners.user.stopAccepting().catch(() => {}),
      listeners.supervisor.stopAccepting().catch(() => {}),
    ]);
    services.plane.closeAll();
    services.tunnel.closeAll();
    await services.compute.stop();
    services.registry.close();
    await new Promise((r) => setTimeout(r, SHUTDOWN_FLUSH_MS));
    listeners.user.destroyAll();
    listeners.supervisor.destroyAll();
    await closed;
    servers.user.forceShutdown();
    servers.supervisor.forceShutdown();
    if (this.driver) await this.driver.close();
    // After the driver: no guest connection is left to carry.
    if (this.egressProcess) await this.egressProcess.stop();
    else await services.egressPolicies?.close();
    services.store.close();
    await removeSocket(servers.userSocket).catch(() => {});
    await removeSocket(servers.supervisorSocket).catch(() => {});
    log.info("stopped");
    this.#done.resolve();
  }
}

/** Starts the egress proxy's process, which serves `policies`. */
async function startEgress(
  config: GatewayConfig,
  policies: EgressPolicies,
  options: StartOptions,
): Promise<EgressProcess> {
  return await startEgressProcess({
    binary: egressBinary(config),
    args: ["--state-dir", config.egressStateDir, "--log-level", config.logLevel],
    controlSocket: egressControlSocket(config),
    policies,
    log: options.log,
    signal: options.signal,
  });
}

/**
 * Starts the compute driver's process (it learns the supervisor plane's
 * `grpcEndpoint`) and attaches it to the compute runtime; if it exits
 * before the gateway stops, the gateway stops.
 */
async function startDriver(
  config: GatewayConfig,
  o: { grpcEndpoint: string; compute: ComputeRuntime; shutdown: GatewayShutdown } & StartOptions,
): Promise<void> {
  const { log, shutdown } = o;
  // The driver creates its own state dir (the gateway may touch only the socket in it).
  const proc = await startDriverProcess({
    binary: `${config.driverDir}/openshell-driver-vm`,
    args: driverArgs(config, o.grpcEndpoint),
    socketPath: driverSocketPath(config),
    log,
    signal: o.signal,
  });
  shutdown.driver = proc.driver;
  log.info("compute driver ready", {
    driver: proc.capabilities.driver_name,
    version: proc.capabilities.driver_version,
  });
  proc.exited.then((code) => {
    if (!shutdown.stopping) {
      log.error(`compute driver exited with status ${code}; shutting down`);
      shutdown.stop();
    }
  });
  o.compute.attachDriver(proc.driver);
}

/**
 * Starts the helper processes once the gateway listens: the egress proxy
 * first (guests' first connections find it there), then the compute
 * driver. A failure stops the gateway and is rethrown.
 */
async function startHelpers(
  config: GatewayConfig,
  o: { grpcEndpoint: string; services: GatewayServices; shutdown: GatewayShutdown } & StartOptions,
): Promise<void> {
  const { services, shutdown } = o;
  try {
    if (services.egressPolicies) {
      shutdown.egressProcess = await startEgress(config, services.egressPolicies, o);
    }
    if (config.drivers === "vm") await startDriver(config, { ...o, compute: services.compute });
  } catch (err) {
    await shutdown.stop();
    throw err;
  }
}

/** Checks grants and the state dir, and warns loudly when gateway auth is off. */
async function preflight(config: GatewayConfig, log: Logger): Promise<void> {
  checkGrants(config);
  await checkPrivateDir(config.stateDir, { create: true, exact0700: true, what: "state dir" });
  if (config.disableGatewayAuth) {
    log.warn(
      "GATEWAY AUTH IS DISABLED: anyone who can reach the user API can list, read, exec into and " +
        "delete every sandbox (--disable-gateway-auth is for development only)",
    );
  }
}

/**
 * Starts a gateway: checks, TLS material, the services and their gRPC
 * servers, both planes' listeners, then the helper processes (egress
 * proxy, compute driver). Resolves once its ports are bound and it logged
 * `Server listening`, and its helpers answer.
 */
export async function startGateway(config: GatewayConfig, options: StartOptions): Promise<Gateway> {
  const log = options.log;
  await preflight(config, log);
  const tlsSetup = config.disableTls ? undefined : await setupTls(config, log);
  const endpoints: ServiceEndpoints = {};
  const services = createServices(config, {
    log,
    supervisorCa: tlsSetup?.caPem,
    relayChunkBytes: options.tuning?.relayChunkBytes,
    endpoints,
  });
  const grpcServers = await startGrpcServers(config, services, options);
  const listeners = createListeners(config, {
    services,
    grpc: grpcServers,
    tls: tlsSetup,
    log,
    unsafeKeepGoaway: options.unsafeKeepGoaway,
  });
  let bound: BoundPlanes;
  try {
    bound = await listenPlanes(config, listeners);
  } catch (err) {
    abandonStart(services, grpcServers);
    throw err;
  }
  const grpcEndpoint = config.grpcEndpoint ??
    planeEndpoint(config, bound.supervisor.host, bound.supervisor.port);
  endpoints.supervisor = grpcEndpoint;
  endpoints.ssh = sshEndpointOf(config, bound);
  log.info(`Server listening on ${hostPort(bound.user.host, bound.user.port)}`, {
    version: VERSION,
    drivers: config.drivers,
    tls: !config.disableTls,
    mtls: !!tlsSetup?.user.clientCa,
    supervisor_plane: `${hostForUrl(bound.supervisor.host)}:${bound.supervisor.port}`,
  });
  const shutdown = new GatewayShutdown({
    services,
    grpc: grpcServers,
    listeners,
    prune: startSessionPrune(services.store, log),
    log,
  });
  await startHelpers(config, { ...options, grpcEndpoint, services, shutdown });
  return {
    host: bound.user.host,
    port: bound.user.port,
    grpcEndpoint,
    supervisorPort: bound.supervisor.port,
    pkiDir: tlsSetup ? pkiDir(config) : undefined,
    stopped: shutdown.stopped,
    stop: shutdown.stop,
  };
}
