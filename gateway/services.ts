/**
 * The gateway's working parts, built before anything listens: the store,
 * the session registry, the compute runtime, the SSH tunnel, the egress
 * policies (with `--egress`), and the gRPC services of both planes with
 * their handlers.
 *
 * @module
 */
import type { Duplex } from "node:stream";
import type { Logger } from "../core/log.ts";
import type { OpenShellHandlers } from "../core/protocol.ts";
import { SessionRegistry } from "../core/registry.ts";
import { ComputeRuntime } from "./compute.ts";
import type { GatewayConfig } from "./config.ts";
import { EgressPolicies } from "./egress.ts";
import { ExecService } from "./exec.ts";
import { ImageService } from "./images.ts";
import { PolicyService } from "./policy_service.ts";
import { SandboxService, type SshEndpoint } from "./sandbox_service.ts";
import { SshTunnel } from "./ssh_tunnel.ts";
import { SqliteStore, type Store } from "./store.ts";
import { SupervisorPlane } from "./supervisor_plane.ts";

/**
 * Where the API sends clients and supervisors: known once the listeners
 * are bound, read by the handlers only after that (nothing is served
 * before).
 */
export interface ServiceEndpoints {
  /** Where CreateSshSession tells clients to connect. */
  ssh?: SshEndpoint;
  /** URL of the supervisor plane (IssueSupervisorCredentials). */
  supervisor?: string;
}

/** Options of {@link createServices}. */
export interface ServicesOptions {
  log: Logger;
  /** PEM CA of the supervisor plane's certificate; absent when plaintext. */
  supervisorCa?: string;
  /** Largest relay frame sent to supervisors (benchmarks; gateway/tuning.ts). */
  relayChunkBytes?: number;
  /** Filled in once listening (see {@link ServiceEndpoints}). */
  endpoints: ServiceEndpoints;
}

/** The parts of a gateway that {@link createServices} builds and starts. */
export interface GatewayServices {
  store: Store;
  registry: SessionRegistry<Duplex>;
  compute: ComputeRuntime;
  tunnel: SshTunnel;
  /** The egress proxy's policies (with `--egress`); attached to its process later. */
  egressPolicies?: EgressPolicies;
  /** The supervisor plane's two RPCs. */
  plane: SupervisorPlane;
  /** Every handler of the user API. */
  handlers: OpenShellHandlers;
}

/** Opens the store that `--db-url` names. */
export function openStore(config: Pick<GatewayConfig, "db">): Store {
  switch (config.db.kind) {
    case "sqlite-memory":
      return SqliteStore.open();
    case "sqlite-file":
      return SqliteStore.open({ path: config.db.path });
    case "postgres":
      throw new Error("postgres is not supported yet");
  }
}

/**
 * Builds the gateway's parts and starts their timers (the registry's
 * reaper, the compute runtime, the tunnel's expiry sweep). The compute
 * runtime expects its driver later with `--drivers vm`: until
 * {@link ComputeRuntime.attachDriver}, create and delete wait for it.
 */
export function createServices(config: GatewayConfig, options: ServicesOptions): GatewayServices {
  const { log, endpoints } = options;
  const store = openStore(config);
  const registry = new SessionRegistry<Duplex>();
  registry.startReaper();
  const compute = new ComputeRuntime({
    store,
    registry,
    log,
    driverExpected: config.drivers === "vm",
    supervisorCa: options.supervisorCa,
  });
  compute.start();
  const tunnel = new SshTunnel({ store, registry, log });
  tunnel.startExpirySweep();
  const egressPolicies = config.egress
    ? new EgressPolicies({
      store,
      log,
      appendLog: (line) => compute.appendLog(line),
      changed: (id) => compute.statusTopics.publish(id),
    })
    : undefined;
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
    sshEndpoint: () => endpoints.ssh!,
    healthy: () => compute.driverReady,
    supervisorPlane: () => ({
      endpoint: endpoints.supervisor!,
      caPem: options.supervisorCa ?? "",
    }),
    onSshSessionRevoked: (token) => tunnel.closeToken(token),
    policy: policies,
  });
  const plane = new SupervisorPlane({
    store,
    registry,
    log,
    heartbeatSecs: config.supervisorHeartbeatSecs,
    relayChunkBytes: options.relayChunkBytes,
  });
  const exec = new ExecService({ store, registry, log });
  const handlers: OpenShellHandlers = {
    ...sandboxes.handlers(),
    ...policies.handlers(),
    ...new ImageService({ compute, log }).handlers(),
    ConnectSupervisor: plane.connectSupervisor,
    RelayStream: plane.relayStream,
    ExecSandbox: exec.execSandbox,
  };
  return { store, registry, compute, tunnel, egressPolicies, plane, handlers };
}
