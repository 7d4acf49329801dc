/**
 * The public sandbox API of `openshell.v1.OpenShell`: Health, the sandbox
 * lifecycle (create, get, list, stop, start, delete), WatchSandbox,
 * GetSandboxLogs and SSH session tokens.
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { requirePinnedHostKey } from "./exec.ts";
import { hashToken, newToken } from "./tokens.ts";
import type { Logger } from "../core/log.ts";
import type {
  CreateSandboxRequest,
  CreateSshSessionRequest,
  CreateSshSessionResponse,
  DeleteSandboxRequest,
  DeleteSandboxResponse,
  GetSandboxLogsRequest,
  GetSandboxLogsResponse,
  GetSandboxRequest,
  HealthResponse,
  IssueSupervisorCredentialsRequest,
  IssueSupervisorCredentialsResponse,
  ListSandboxesRequest,
  ListSandboxesResponse,
  OpenShellHandlers,
  RevokeSshSessionRequest,
  RevokeSshSessionResponse,
  Sandbox,
  SandboxLogLine,
  SandboxResponse,
  SandboxSpec,
  SandboxStreamEvent,
  StartSandboxRequest,
  StopSandboxRequest,
  WatchSandboxRequest,
  Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho } from "../core/text.ts";
import { VERSION } from "../core/version.ts";
import { type ComputeRuntime, generateSandboxName } from "./compute.ts";
import { isTerminalPhase } from "./readiness.ts";
import { failStream, unary } from "./rpc.ts";
import type { SandboxRecord, Store } from "./store.ts";
import { validateCreateSandbox, validatePage } from "./validation.ts";

/** Log lines GetSandboxLogs returns when the request says 0. */
export const DEFAULT_LOG_LINES = 2_000;

/** Where CreateSshSession tells clients to connect. */
export interface SshEndpoint {
  host: string;
  port: number;
  scheme: "http" | "https";
  connectPath: string;
  /** Token lifetime; 0 = no expiry. */
  ttlSecs: number;
}

/** Options of {@link SandboxService}. */
export interface SandboxServiceOptions {
  store: Store;
  compute: ComputeRuntime;
  log: Logger;
  /** Resolved once the listener is bound. */
  sshEndpoint: () => SshEndpoint;
  /** Whether the gateway is ready to serve (for Health). */
  healthy?: () => boolean;
  /** The supervisor plane, for IssueSupervisorCredentials (resolved once listening). */
  supervisorPlane?: () => SupervisorPlaneInfo;
  now?: () => number;
  /** Called after a token was revoked (the SSH tunnel closes the tunnels using it). */
  onSshSessionRevoked?: (token: string) => void;
  /** The egress policy side of create and delete (gateway/policy_service.ts). */
  policy?: SandboxPolicyHooks;
}

/** What create and delete tell the policy side. */
export interface SandboxPolicyHooks {
  /** Refuses a spec whose policy cannot be enforced here (after validation). */
  checkCreate(spec: SandboxSpec): void;
  /** The sandbox is stored: its first policy revision. */
  sandboxCreated(sandbox: Sandbox): Promise<void>;
  /** The sandbox is gone. */
  sandboxDeleted(sandboxId: string): Promise<void>;
}

const LEVEL_RANK: Record<string, number> = { ERROR: 0, WARN: 1, INFO: 2, DEBUG: 3, TRACE: 4 };

/** Whether a log line passes the since/sources/min-level filters of a request. */
export function logLineMatches(
  line: SandboxLogLine,
  filter: { sinceMs: number; sources: readonly string[]; minLevel: string },
): boolean {
  if (filter.sinceMs > 0 && line.timestamp_ms < filter.sinceMs) return false;
  const source = line.source || "gateway";
  if (filter.sources.length > 0 && !filter.sources.includes(source)) return false;
  if (filter.minLevel) {
    const min = LEVEL_RANK[filter.minLevel.toUpperCase()];
    const rank = LEVEL_RANK[line.level.toUpperCase()] ?? LEVEL_RANK.INFO;
    if (min !== undefined && rank > min) return false;
  }
  return true;
}

function namesOnly(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(env).map((k) => [k, ""]));
}

/**
 * A sandbox as the API shows it: environment values (`spec.environment` and
 * `spec.template.environment`) are write-only, so each name maps to an
 * empty string.
 */
export function publicSandbox(sandbox: Sandbox): Sandbox {
  const spec = sandbox.spec;
  if (!spec) return sandbox;
  const env = spec.environment ?? {};
  const template = spec.template;
  const tenv = (template?.environment ?? {}) as Record<string, string>;
  if (Object.keys(env).length === 0 && Object.keys(tenv).length === 0) return sandbox;
  return {
    ...sandbox,
    spec: {
      ...spec,
      environment: namesOnly(env),
      ...(template ? { template: { ...template, environment: namesOnly(tenv) } } : {}),
    },
  };
}

/** What a bring-your-own supervisor needs besides its token. */
export interface SupervisorPlaneInfo {
  /** URL of the supervisor plane. */
  endpoint: string;
  /** PEM CA of its certificate; "" when plaintext. */
  caPem: string;
}

function randomLetters(n: number): string {
  return Array.from(randomBytes(n), (b) => String.fromCharCode(97 + (b % 26))).join("");
}

/** The methods {@link SandboxService} serves. */
export type SandboxMethod =
  | "Health"
  | "CreateSandbox"
  | "GetSandbox"
  | "ListSandboxes"
  | "DeleteSandbox"
  | "StopSandbox"
  | "StartSandbox"
  | "CreateSshSession"
  | "RevokeSshSession"
  | "IssueSupervisorCredentials"
  | "GetSandboxLogs"
  | "WatchSandbox";

/** Handlers of the public API. */
export class SandboxService {
  readonly #o: SandboxServiceOptions;

  /** Creates the service. */
  constructor(options: SandboxServiceOptions) {
    this.#o = options;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  async #byName(name: string): Promise<SandboxRecord> {
    if (!name) throw new StatusError(Code.INVALID_ARGUMENT, "name is required");
    const r = await this.#o.store.getSandboxByName(name);
    if (!r) throw new StatusError(Code.NOT_FOUND, `sandbox "${truncateForEcho(name)}" not found`);
    return r;
  }

  async #byId(id: string, field = "sandbox_id"): Promise<SandboxRecord> {
    if (!id) throw new StatusError(Code.INVALID_ARGUMENT, `${field} is required`);
    const r = await this.#o.store.getSandbox(id) ?? await this.#o.store.getSandboxByName(id);
    if (!r) throw new StatusError(Code.NOT_FOUND, `sandbox ${truncateForEcho(id)} not found`);
    return r;
  }

  /** grpc-js handlers keyed by method name. */
  handlers(): Pick<OpenShellHandlers, SandboxMethod> {
    const log = this.#o.log;
    return {
      Health: unary(log, () => this.#health()),
      CreateSandbox: unary(log, (req) => this.#create(req)),
      GetSandbox: unary(log, (req) => this.#get(req)),
      ListSandboxes: unary(log, (req) => this.#list(req)),
      DeleteSandbox: unary(log, (req) => this.#delete(req)),
      StopSandbox: unary(log, (req) => this.#stop(req)),
      StartSandbox: unary(log, (req) => this.#start(req)),
      CreateSshSession: unary(log, (req) => this.#createSshSession(req)),
      RevokeSshSession: unary(log, (req) => this.#revokeSshSession(req)),
      IssueSupervisorCredentials: unary(log, (req) => this.#issueSupervisorCredentials(req)),
      GetSandboxLogs: unary(log, (req) => this.#logs(req)),
      WatchSandbox: (call) => {
        this.#watch(call).catch((err) => failStream(call, err, log));
      },
    };
  }

  #health(): Promise<HealthResponse> {
    return Promise.resolve({
      status: (this.#o.healthy?.() ?? true) ? "SERVICE_STATUS_HEALTHY" : "SERVICE_STATUS_DEGRADED",
      version: VERSION,
    });
  }

  async #create(req: CreateSandboxRequest): Promise<SandboxResponse> {
    const { name, spec } = validateCreateSandbox(req);
    const policy = this.#o.policy;
    policy?.checkCreate(spec);
    let chosen = name;
    if (!chosen) {
      do chosen = generateSandboxName(); while (await this.#o.store.getSandboxByName(chosen));
    }
    const sandbox = await this.#o.compute.createSandbox({
      name: chosen,
      spec,
      ...(policy ? { onStored: (s: Sandbox) => policy.sandboxCreated(s) } : {}),
    });
    this.#o.log.info("sandbox created", { sandbox: sandbox.id, name: sandbox.name });
    return { sandbox: publicSandbox(sandbox) };
  }

  async #get(req: GetSandboxRequest): Promise<SandboxResponse> {
    return { sandbox: publicSandbox((await this.#byName(req.name)).sandbox) };
  }

  async #list(req: ListSandboxesRequest): Promise<ListSandboxesResponse> {
    const page = validatePage(req.limit, req.offset);
    const records = await this.#o.store.listSandboxes(page);
    return { sandboxes: records.map((r) => publicSandbox(r.sandbox)) };
  }

  async #delete(req: DeleteSandboxRequest): Promise<DeleteSandboxResponse> {
    if (!req.name) throw new StatusError(Code.INVALID_ARGUMENT, "name is required");
    const record = await this.#o.store.getSandboxByName(req.name);
    if (!record) return { deleted: false };
    const deleted = await this.#o.compute.deleteSandbox(record);
    await this.#o.policy?.sandboxDeleted(record.sandbox.id);
    this.#o.log.info("sandbox deleted", { sandbox: record.sandbox.id, name: record.sandbox.name });
    return { deleted };
  }

  async #stop(req: StopSandboxRequest): Promise<SandboxResponse> {
    const record = await this.#byName(req.name);
    const sandbox = await this.#o.compute.stopSandbox(record);
    this.#o.log.info("sandbox stopped", { sandbox: sandbox.id, name: sandbox.name });
    return { sandbox: publicSandbox(sandbox) };
  }

  async #start(req: StartSandboxRequest): Promise<SandboxResponse> {
    const record = await this.#byName(req.name);
    const sandbox = await this.#o.compute.startSandbox(record);
    this.#o.log.info("sandbox starting", { sandbox: sandbox.id, name: sandbox.name });
    return { sandbox: publicSandbox(sandbox) };
  }

  async #createSshSession(req: CreateSshSessionRequest): Promise<CreateSshSessionResponse> {
    const record = await this.#byId(req.sandbox_id);
    if (record.sandbox.phase !== "SANDBOX_PHASE_READY") {
      throw new StatusError(Code.FAILED_PRECONDITION, "sandbox is not ready");
    }
    const fingerprint = requirePinnedHostKey(record);
    const ep = this.#o.sshEndpoint();
    const now = this.#now();
    const token = newToken();
    const expires = ep.ttlSecs > 0 ? now + ep.ttlSecs * 1000 : 0;
    await this.#o.store.createSshSession({
      id: token,
      token,
      sandbox_id: record.sandbox.id,
      name: randomLetters(6),
      created_at_ms: now,
      revoked: false,
      expires_at_ms: expires,
    });
    return {
      sandbox_id: record.sandbox.id,
      token,
      gateway_host: ep.host,
      gateway_port: ep.port,
      gateway_scheme: ep.scheme,
      connect_path: ep.connectPath,
      host_key_fingerprint: fingerprint,
      expires_at_ms: expires,
    };
  }

  async #revokeSshSession(req: RevokeSshSessionRequest): Promise<RevokeSshSessionResponse> {
    if (!req.token) throw new StatusError(Code.INVALID_ARGUMENT, "token is required");
    const revoked = await this.#o.store.revokeSshSession(req.token);
    if (revoked) this.#o.onSshSessionRevoked?.(req.token);
    return { revoked };
  }

  async #issueSupervisorCredentials(
    req: IssueSupervisorCredentialsRequest,
  ): Promise<IssueSupervisorCredentialsResponse> {
    const record = await this.#byName(req.name);
    if (this.#o.compute.hasDriver) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `sandbox "${req.name}" is provisioned by the gateway's compute driver, which hands ` +
          "its supervisor a credential; only gateways started with --drivers none issue them",
      );
    }
    const plane = this.#o.supervisorPlane?.();
    if (!plane) throw new StatusError(Code.UNAVAILABLE, "the supervisor plane is not up");
    const token = newToken();
    await this.#o.store.updateSandbox(record.sandbox.id, (r) => ({
      ...r,
      secrets: { ...r.secrets, supervisorTokenHash: hashToken(token) },
    }));
    // A supervisor still using the old token loses its session now, not at its next hello.
    this.#o.compute.endSupervisorSession(record.sandbox.id);
    this.#o.log.info("supervisor credentials issued", { sandbox: record.sandbox.id });
    return {
      sandbox_id: record.sandbox.id,
      token,
      endpoint: plane.endpoint,
      ca_cert_pem: plane.caPem,
    };
  }

  async #logs(req: GetSandboxLogsRequest): Promise<GetSandboxLogsResponse> {
    const record = await this.#byId(req.sandbox_id);
    const id = record.sandbox.id;
    const filter = { sinceMs: req.since_ms, sources: req.sources, minLevel: req.min_level };
    const all = this.#o.compute.logTopics.buffered(id).filter((l) => logLineMatches(l, filter));
    const lines = req.lines > 0 ? req.lines : DEFAULT_LOG_LINES;
    return { logs: all.slice(-lines), buffer_total: this.#o.compute.logTopics.total(id) };
  }

  async #watch(
    call: grpc.ServerWritableStream<WatchSandboxRequest, Wire<SandboxStreamEvent>>,
  ): Promise<void> {
    const req = call.request;
    const record = await this.#byId(req.id, "id");
    const id = record.sandbox.id;
    const compute = this.#o.compute;
    const unsubscribers: (() => void)[] = [];
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      for (const u of unsubscribers) u();
      if (!call.writableEnded && !call.destroyed) call.end();
    };
    call.on("cancelled", finish);
    call.on("close", finish);
    const send = (event: Wire<SandboxStreamEvent>) => {
      if (!done && !call.writableEnded && !call.destroyed) call.write(event);
    };

    let last = "";
    let reading = Promise.resolve();
    const sendStatus = (sandbox: Sandbox | undefined) => {
      if (!sandbox) return finish();
      const json = JSON.stringify(sandbox);
      if (json !== last) {
        last = json;
        if (req.follow_status) send({ sandbox: publicSandbox(sandbox) });
      }
      if (req.stop_on_terminal && isTerminalPhase(sandbox.phase)) finish();
    };
    const refresh = () => {
      reading = reading.then(async () => {
        if (!done) sendStatus((await this.#o.store.getSandbox(id))?.sandbox);
      }).catch(finish);
    };

    // Subscribe before reading so no change between the read and the subscription is lost;
    // the snapshot goes out first, then replays, then live items.
    unsubscribers.push(compute.statusTopics.subscribe(id, { next: refresh, end: finish }));
    refresh();
    await reading;
    if (done) return;
    const logFilter = {
      sinceMs: req.log_since_ms,
      sources: req.log_sources,
      minLevel: req.log_min_level,
    };
    if (req.follow_logs) {
      if (req.log_tail_lines > 0) {
        for (
          const line of compute.logTopics.buffered(id).filter((l) => logLineMatches(l, logFilter))
            .slice(-req.log_tail_lines)
        ) {
          send({ log: line });
        }
      }
      unsubscribers.push(compute.logTopics.subscribe(id, {
        next: (line) => logLineMatches(line, logFilter) && send({ log: line }),
        end: finish,
      }));
    }
    if (req.follow_events) {
      if (req.event_tail > 0) {
        for (const e of compute.eventTopics.buffered(id).slice(-req.event_tail)) send({ event: e });
      }
      unsubscribers.push(
        compute.eventTopics.subscribe(id, { next: (e) => send({ event: e }), end: finish }),
      );
    }
  }
}
