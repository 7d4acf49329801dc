/**
 * The wire protocol: service definitions loaded from the generated descriptor
 * module (never from `.proto` files at run time) and TypeScript types for the
 * messages the roles use.
 *
 * Messages are plain objects as `@grpc/proto-loader` decodes them with
 * {@link LOADER_OPTIONS}: field names as in the `.proto` files (snake_case),
 * enums as their names, 64-bit integers as numbers, bytes as `Uint8Array`
 * (Buffer), defaults filled in, and a `payload` key naming the set member of
 * each oneof.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";
import { serviceDefinition } from "./grpc_service.ts";
import {
  COMPUTE_DRIVER_DESCRIPTOR,
  EGRESS_DESCRIPTOR,
  OPENSHELL_DESCRIPTOR,
} from "../proto/descriptors.ts";
import type { SandboxPolicy } from "./policy.ts";

/** How messages are turned into objects (see the module documentation). */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Fully-qualified service names. */
export const OPENSHELL_SERVICE_NAME = "openshell.v1.OpenShell";
/** Fully-qualified name of the compute driver service. */
export const COMPUTE_DRIVER_SERVICE_NAME = "openshell.compute.v1.ComputeDriver";
/** Fully-qualified name of the egress proxy's control service (openshell-deno only). */
export const EGRESS_SERVICE_NAME = "openshell.egress.v1.EgressProxy";

function loadService(
  descriptor: Record<string, unknown>,
  name: string,
): grpc.ServiceClientConstructor {
  // What proto-loader's fromJSON + loadPackageDefinition give, minus their start-up cost.
  return grpc.makeClientConstructor(serviceDefinition(descriptor, name, LOADER_OPTIONS), name);
}

/** Client constructor of `openshell.v1.OpenShell`; `.service` is its server definition. */
export const OpenShellClient: grpc.ServiceClientConstructor = loadService(
  OPENSHELL_DESCRIPTOR,
  OPENSHELL_SERVICE_NAME,
);

/** Client constructor of `openshell.compute.v1.ComputeDriver`; `.service` is its definition. */
export const ComputeDriverClient: grpc.ServiceClientConstructor = loadService(
  COMPUTE_DRIVER_DESCRIPTOR,
  COMPUTE_DRIVER_SERVICE_NAME,
);

/** Client constructor of `openshell.egress.v1.EgressProxy`; `.service` is its definition. */
export const EgressProxyClient: grpc.ServiceClientConstructor = loadService(
  EGRESS_DESCRIPTOR,
  EGRESS_SERVICE_NAME,
);

/** Recursively optional: the shape accepted when *sending* a message. */
export type Wire<T> = T extends Uint8Array ? Uint8Array
  : T extends (infer U)[] ? Wire<U>[]
  : T extends object ? { [K in keyof T]?: Wire<T[K]> | null }
  : T;

// ---- openshell.v1 -----------------------------------------------------------

/** Lifecycle phase of a sandbox; only the gateway decides it. */
export type SandboxPhase =
  | "SANDBOX_PHASE_UNSPECIFIED"
  | "SANDBOX_PHASE_PROVISIONING"
  | "SANDBOX_PHASE_READY"
  | "SANDBOX_PHASE_ERROR"
  | "SANDBOX_PHASE_DELETING"
  | "SANDBOX_PHASE_UNKNOWN"
  | "SANDBOX_PHASE_STOPPING"
  | "SANDBOX_PHASE_STOPPED"
  | "SANDBOX_PHASE_STARTING";

/** `ServiceStatus` enum names. */
export type ServiceStatus =
  | "SERVICE_STATUS_UNSPECIFIED"
  | "SERVICE_STATUS_HEALTHY"
  | "SERVICE_STATUS_DEGRADED"
  | "SERVICE_STATUS_UNHEALTHY";

/** `openshell.v1.HealthResponse`. */
export interface HealthResponse {
  status: ServiceStatus;
  version: string;
}

/** `google.protobuf.Struct` as decoded: opaque to this project. */
export type ProtoStruct = Record<string, unknown>;

/** `openshell.v1.SandboxCondition` (and the driver's `DriverCondition`, same shape). */
export interface SandboxCondition {
  type: string;
  status: string;
  reason: string;
  message: string;
  last_transition_time: string;
}

/** `openshell.v1.SandboxStatus`. */
export interface SandboxStatus {
  sandbox_name: string;
  agent_pod: string;
  agent_fd: string;
  sandbox_fd: string;
  conditions: SandboxCondition[];
}

/** `openshell.v1.SandboxTemplate`. */
export interface SandboxTemplate {
  image: string;
  runtime_class_name: string;
  agent_socket: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  environment: Record<string, string>;
  resources: ProtoStruct | null;
  volume_claim_templates: ProtoStruct | null;
}

/** `openshell.v1.SandboxSpec`. */
export interface SandboxSpec {
  log_level: string;
  environment: Record<string, string>;
  template: SandboxTemplate | null;
  /** The egress policy (network); null = deny everything. */
  policy?: SandboxPolicy | null;
  providers: string[];
  gpu: boolean;
}

/** `openshell.v1.Sandbox`: the public resource. */
export interface Sandbox {
  id: string;
  name: string;
  namespace: string;
  spec: SandboxSpec | null;
  status: SandboxStatus | null;
  phase: SandboxPhase;
  created_at_ms: number;
  current_policy_version: number;
}

/** `openshell.v1.PlatformEvent` (and `DriverPlatformEvent`, same shape). */
export interface PlatformEvent {
  timestamp_ms: number;
  source: string;
  type: string;
  reason: string;
  message: string;
  metadata: Record<string, string>;
}

/** `openshell.v1.CreateSandboxRequest`. */
export interface CreateSandboxRequest {
  spec: SandboxSpec | null;
  name: string;
}

/** `openshell.v1.ListSandboxesRequest`. */
export interface ListSandboxesRequest {
  limit: number;
  offset: number;
}

/** `openshell.v1.SandboxResponse`. */
export interface SandboxResponse {
  sandbox: Sandbox | null;
}

/** `openshell.v1.ListSandboxesResponse`. */
export interface ListSandboxesResponse {
  sandboxes: Sandbox[];
}

/** `openshell.v1.CreateSshSessionResponse`. */
export interface CreateSshSessionResponse {
  sandbox_id: string;
  token: string;
  gateway_host: string;
  gateway_port: number;
  gateway_scheme: string;
  connect_path: string;
  host_key_fingerprint: string;
  expires_at_ms: number;
}

/** `openshell.v1.SshSession`: a stored SSH session token. */
export interface SshSession {
  id: string;
  sandbox_id: string;
  token: string;
  created_at_ms: number;
  revoked: boolean;
  name: string;
  expires_at_ms: number;
}

/** `openshell.v1.ExecSandboxRequest`. */
export interface ExecSandboxRequest {
  sandbox_id: string;
  command: string[];
  workdir: string;
  environment: Record<string, string>;
  timeout_seconds: number;
  stdin: Uint8Array;
  tty: boolean;
}

/** `openshell.v1.ExecSandboxEvent`. */
export type ExecSandboxEvent =
  | { payload: "stdout"; stdout: { data: Uint8Array } }
  | { payload: "stderr"; stderr: { data: Uint8Array } }
  | { payload: "exit"; exit: { exit_code: number } };

/** `openshell.v1.WatchSandboxRequest`. */
export interface WatchSandboxRequest {
  id: string;
  follow_status: boolean;
  follow_logs: boolean;
  follow_events: boolean;
  log_tail_lines: number;
  event_tail: number;
  stop_on_terminal: boolean;
  log_since_ms: number;
  log_sources: string[];
  log_min_level: string;
}

/** `openshell.v1.SandboxLogLine`. */
export interface SandboxLogLine {
  sandbox_id: string;
  timestamp_ms: number;
  level: string;
  target: string;
  message: string;
  source: string;
  fields: Record<string, string>;
}

/** `openshell.v1.SandboxStreamEvent`. */
export type SandboxStreamEvent =
  | { payload: "sandbox"; sandbox: Sandbox }
  | { payload: "log"; log: SandboxLogLine }
  | { payload: "event"; event: PlatformEvent }
  | { payload: "warning"; warning: { message: string } };

/** `openshell.v1.GetSandboxLogsRequest`. */
export interface GetSandboxLogsRequest {
  sandbox_id: string;
  lines: number;
  since_ms: number;
  sources: string[];
  min_level: string;
}

/** `openshell.v1.GetSandboxLogsResponse`. */
export interface GetSandboxLogsResponse {
  logs: SandboxLogLine[];
  buffer_total: number;
}

/** `openshell.v1.IssueSupervisorCredentialsResponse` (openshell-deno only). */
export interface IssueSupervisorCredentialsResponse {
  sandbox_id: string;
  token: string;
  endpoint: string;
  ca_cert_pem: string;
}

/** `openshell.v1.SupervisorMessage`: supervisor → gateway on `ConnectSupervisor`. */
export type SupervisorMessage =
  | {
    payload: "hello";
    hello: { sandbox_id: string; instance_id: string; ssh_host_key_fingerprint: string };
  }
  | { payload: "heartbeat"; heartbeat: Record<string, never> }
  | {
    payload: "relay_open_result";
    relay_open_result: { channel_id: string; success: boolean; error: string };
  }
  | { payload: "relay_close"; relay_close: { channel_id: string; reason: string } };

/** `openshell.v1.GatewayMessage`: gateway → supervisor on `ConnectSupervisor`. */
export type GatewayMessage =
  | {
    payload: "session_accepted";
    session_accepted: { session_id: string; heartbeat_interval_secs: number };
  }
  | { payload: "session_rejected"; session_rejected: { reason: string } }
  | { payload: "heartbeat"; heartbeat: Record<string, never> }
  | { payload: "relay_open"; relay_open: { channel_id: string } }
  | { payload: "relay_close"; relay_close: { channel_id: string; reason: string } };

/** `openshell.v1.RelayFrame`: the first supervisor frame is `init`, then only `data`. */
export type RelayFrame =
  | { payload: "init"; init: { channel_id: string } }
  | { payload: "data"; data: Uint8Array };

// ---- policy (openshell.sandbox.v1 and the policy RPCs) ------------------------

/** The policy messages (`openshell.sandbox.v1`), shared with core/policy.ts. */
export type { NetworkEndpoint, NetworkPolicyRule, SandboxPolicy } from "./policy.ts";
/** `openshell.v1.PolicyStatus` names. */
export type PolicyStatus =
  | "POLICY_STATUS_UNSPECIFIED"
  | "POLICY_STATUS_PENDING"
  | "POLICY_STATUS_LOADED"
  | "POLICY_STATUS_FAILED"
  | "POLICY_STATUS_SUPERSEDED";

/** `openshell.v1.SandboxPolicyRevision`. */
export interface SandboxPolicyRevision {
  version: number;
  policy_hash: string;
  status: PolicyStatus;
  load_error: string;
  created_at_ms: number;
  loaded_at_ms: number;
  policy: SandboxPolicy | null;
}

/** `openshell.v1.UpdateConfigRequest`. */
export interface UpdateConfigRequest {
  name: string;
  policy: SandboxPolicy | null;
  setting_key: string;
  delete_setting: boolean;
  global: boolean;
}

/** `openshell.v1.UpdateConfigResponse`. */
export interface UpdateConfigResponse {
  version: number;
  policy_hash: string;
  settings_revision: number;
  deleted: boolean;
}

/** `openshell.v1.GetSandboxPolicyStatusRequest`. */
export interface GetSandboxPolicyStatusRequest {
  name: string;
  version: number;
  global: boolean;
}

/** `openshell.v1.GetSandboxPolicyStatusResponse`. */
export interface GetSandboxPolicyStatusResponse {
  revision: SandboxPolicyRevision | null;
  active_version: number;
}

/** `openshell.v1.ListSandboxPoliciesRequest`. */
export interface ListSandboxPoliciesRequest {
  name: string;
  limit: number;
  offset: number;
  global: boolean;
}

/** `openshell.v1.ListSandboxPoliciesResponse`. */
export interface ListSandboxPoliciesResponse {
  revisions: SandboxPolicyRevision[];
}

// ---- openshell.compute.v1 ---------------------------------------------------

/** `openshell.compute.v1.DriverResourceRequirements`. */
export interface DriverResourceRequirements {
  cpu_request: string;
  cpu_limit: string;
  memory_request: string;
  memory_limit: string;
}

/** `openshell.compute.v1.DriverSandboxTemplate`. */
export interface DriverSandboxTemplate {
  image: string;
  agent_socket_path: string;
  labels: Record<string, string>;
  environment: Record<string, string>;
  resources: DriverResourceRequirements | null;
  platform_config: ProtoStruct | null;
}

/** `openshell.compute.v1.DriverSandboxSpec`. */
export interface DriverSandboxSpec {
  log_level: string;
  environment: Record<string, string>;
  template: DriverSandboxTemplate | null;
  gpu: boolean;
}

/** `openshell.compute.v1.DriverSandboxStatus`. */
export interface DriverSandboxStatus {
  sandbox_name: string;
  instance_id: string;
  agent_fd: string;
  sandbox_fd: string;
  conditions: SandboxCondition[];
  deleting: boolean;
}

/** `openshell.compute.v1.DriverSandbox`. */
export interface DriverSandbox {
  id: string;
  name: string;
  namespace: string;
  spec: DriverSandboxSpec | null;
  status: DriverSandboxStatus | null;
}

/** `openshell.compute.v1.GetCapabilitiesResponse`. */
export interface GetCapabilitiesResponse {
  driver_name: string;
  driver_version: string;
  default_image: string;
  supports_gpu: boolean;
  /** The gateway stops and (re)starts this driver's sandboxes across its own restarts. */
  gateway_manages_lifecycle: boolean;
}

/** `openshell.compute.v1.WatchSandboxesEvent`. */
export type WatchSandboxesEvent =
  | { payload: "sandbox"; sandbox: { sandbox: DriverSandbox } }
  | { payload: "deleted"; deleted: { sandbox_id: string } }
  | { payload: "platform_event"; platform_event: { sandbox_id: string; event: PlatformEvent } };

// ---- images (openshell-deno only; the same shapes in both packages) -----------

/** `openshell.v1.Image` / `openshell.compute.v1.DriverImage`. */
export interface Image {
  name: string;
  id: string;
  size_bytes: number;
  created_at_ms: number;
  /** `default`, `build` or `import`. */
  source: string;
  packages: string[];
  sandboxes: number;
}

/** `ImageProgress`: build output lines, then the image. */
export type ImageProgress =
  | { payload: "line"; line: string }
  | { payload: "image"; image: Image };

/** `ImportImageChunk`: the header first, then the tarball's bytes. */
export type ImportImageChunk =
  | { payload: "header"; header: { name: string; size_bytes: number } }
  | { payload: "data"; data: Uint8Array };

// ---- openshell.egress.v1 ----------------------------------------------------

/** `openshell.egress.v1.ApplyPolicyResponse`. */
export interface ApplyPolicyResponse {
  loaded_version: number;
  loaded_at_ms: number;
}

/** `openshell.egress.v1.AppliedPolicy`: what the egress proxy enforces for one sandbox. */
export interface AppliedPolicy {
  sandbox_id: string;
  version: number;
  loaded_at_ms: number;
}

/** `openshell.egress.v1.EgressEvent`: one allowed, denied or audited connection. */
export interface EgressEvent {
  sandbox_id: string;
  time_ms: number;
  /** `allowed`, `denied` or `audit`. */
  decision: string;
  host: string;
  port: number;
  policy_name: string;
  ocsf_json: string;
  dropped: number;
}
