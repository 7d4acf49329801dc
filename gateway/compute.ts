/**
 * The compute runtime: the one place that changes a sandbox's state.
 *
 * It creates, stops, starts and deletes sandboxes (store first, then the
 * driver), applies gateway-owned readiness when supervisor sessions come
 * and go (the registry's observer), merges the driver's watch stream and
 * periodic reconciliation, persists every change and publishes it to
 * watchers.
 *
 * Restart: the phase stored for each sandbox is the gateway's intent. When a
 * driver that asks for it (`gateway_manages_lifecycle`) is attached,
 * {@link ComputeRuntime.resume} brings the driver in line with the store
 * before anything else: every sandbox that should run is started again
 * (STARTING, then READY when its supervisor reconnects), an interrupted
 * stop or delete is finished, a sandbox the driver has no state for — or
 * whose VM cannot start — becomes ERROR with a reason that says what to do,
 * and sandboxes the store does not know (an in-memory database starts
 * empty) are deleted from the driver.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { hashToken, newToken } from "./tokens.ts";
import type { Duplex } from "node:stream";
import { errorMessage, type Logger, type LogLevel, parseLogLine } from "../core/log.ts";
import { readOcsfLine } from "../core/ocsf.ts";
import { LogRateLimiter } from "../core/rate_limit.ts";
import { capLine, utf8Length } from "../core/text.ts";
import type {
  DriverResourceRequirements,
  DriverSandbox,
  PlatformEvent,
  ProtoStruct,
  Sandbox,
  SandboxLogLine,
  SandboxSpec,
  Wire,
} from "../core/protocol.ts";
import {
  PROVISION_SSH_HOST_KEY,
  PROVISION_SUPERVISOR_TOKEN,
  PROVISION_TLS_CA,
} from "../core/provisioning.ts";
import type { SessionRegistry } from "../core/registry.ts";
import { fromStruct, type JsonValue, toStruct } from "../core/resources.ts";
import { generateHostKey } from "../core/ssh_keys.ts";
import { Code, StatusError } from "../core/status.ts";
import type { ComputeDriver } from "./driver.ts";
import {
  applyDriverSnapshot,
  applySessionChange,
  REASON_STARTING,
  REASON_STOPPED,
  REASON_STOPPING,
  shouldRun,
  withLifecycle,
} from "./readiness.ts";
import type { SandboxRecord, SandboxSecrets, Store } from "./store.ts";
import { SandboxTopics } from "./topics.ts";

/** Namespace reported for every sandbox. */
export const SANDBOX_NAMESPACE = "default";
/** How often the runtime reconciles against the driver's list. */
export const RECONCILE_INTERVAL_MS = 60_000;
/** How long create/delete wait for a driver that is still starting. */
export const DRIVER_WAIT_MS = 60_000;
/** Delay before re-opening a driver watch that ended. */
export const WATCH_RESTART_MS = 2_000;
/** Log lines kept per sandbox for replay (`GetSandboxLogs`, `WatchSandbox` tails). */
export const LOG_LINES_KEPT = 2_000;
/** Bytes of log lines kept per sandbox (as {@link logLineBytes} counts them). */
export const LOG_BYTES_KEPT = 1024 * 1024;
/** Platform events kept per sandbox. */
export const EVENTS_KEPT = 200;
/** Bytes of platform events kept per sandbox. */
export const EVENT_BYTES_KEPT = 256 * 1024;
/** Longest log field value kept, in bytes. */
export const MAX_LOG_FIELD_BYTES = 1024;
/** Deleted sandboxes remembered so that late console lines for them are ignored. */
export const GONE_REMEMBERED = 4096;

/** Bytes one log line accounts for: its strings in UTF-8 plus a fixed 32 for the rest. */
export function logLineBytes(line: SandboxLogLine): number {
  let n = 32 + utf8Length(line.sandbox_id) + utf8Length(line.level) + utf8Length(line.target) +
    utf8Length(line.message) + utf8Length(line.source);
  for (const [k, v] of Object.entries(line.fields ?? {})) n += utf8Length(k) + utf8Length(v) + 4;
  return n;
}

/** Bytes one platform event accounts for, like {@link logLineBytes}. */
export function platformEventBytes(event: PlatformEvent): number {
  let n = 32 + utf8Length(event.source) + utf8Length(event.type) + utf8Length(event.reason) +
    utf8Length(event.message);
  for (const [k, v] of Object.entries(event.metadata ?? {})) n += utf8Length(k) + utf8Length(v) + 4;
  return n;
}

function boundFields(fields: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) {
    out[capLine(k, 128)] = capLine(v, MAX_LOG_FIELD_BYTES);
  }
  return out;
}

/**
 * One line of a guest's console (already capped and cleaned by the driver)
 * as a log line, passed through once: a line the supervisor's logger wrote
 * keeps its level, target and message but not its own timestamp (the
 * driver's is used) nor the `sandbox_id=` every supervisor line repeats; an
 * OCSF event line keeps its JSON as the message under target `ocsf`, with a
 * level from its severity; anything else (the kernel, the init) is an INFO
 * `console` line. The source stays `console` whatever the guest wrote, so
 * a guest cannot pass its lines off as the gateway's.
 */
export function consoleLogLine(
  sandboxId: string,
  text: string,
  timestampMs: number,
): SandboxLogLine {
  const base = { sandbox_id: sandboxId, timestamp_ms: timestampMs, source: "console" };
  const event = readOcsfLine(text);
  if (event) {
    return {
      ...base,
      level: event.level.toUpperCase(),
      target: "ocsf",
      message: text.trim(),
      fields: {},
    };
  }
  const parsed = parseLogLine(text);
  if (!parsed) return { ...base, level: "INFO", target: "console", message: text, fields: {} };
  const { sandbox_id: own, ...fields } = parsed.fields;
  return {
    ...base,
    level: parsed.level.toUpperCase(),
    target: capLine(parsed.target, 64) || "console",
    message: parsed.message.replace(` sandbox_id=${sandboxId}`, ""),
    fields: boundFields(own === undefined || own === sandboxId ? fields : parsed.fields),
  };
}

/** Options of {@link ComputeRuntime}. */
export interface ComputeRuntimeOptions {
  store: Store;
  registry: SessionRegistry<Duplex>;
  /** Absent with `--drivers none`, or until {@link ComputeRuntime.attachDriver}. */
  driver?: ComputeDriver;
  /** A driver will be attached later (default: whether `driver` is given). */
  driverExpected?: boolean;
  /** How long requests wait for that driver; default {@link DRIVER_WAIT_MS}. */
  driverWaitMs?: number;
  log: Logger;
  /** Clock; default `Date.now`. */
  now?: () => number;
  /** Reconcile period; default {@link RECONCILE_INTERVAL_MS}. */
  reconcileIntervalMs?: number;
  /** Delay before re-opening a watch that ended; default {@link WATCH_RESTART_MS}. */
  watchRestartMs?: number;
  /** PEM CA handed to each new sandbox's supervisor (TLS to the supervisor plane). */
  supervisorCa?: string;
}

/** A request to create a sandbox, already validated. */
export interface CreateInput {
  name: string;
  spec: SandboxSpec;
  /**
   * Runs once the sandbox is stored, before the driver provisions it (its
   * egress policy is stored and pushed before its guest can connect).
   */
  onStored?: (sandbox: Sandbox) => Promise<void>;
}

/** Generates a sandbox name like `sandbox-k3x9qa`. */
export function generateSandboxName(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(6);
  return `sandbox-${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("")}`;
}

/** Secrets a driver gets once, at create time; the gateway keeps none of them in plain text. */
export interface ProvisioningSecrets {
  /** The sandbox's SSH host private key. */
  sshHostKey?: string;
  /** The token its supervisor presents. */
  supervisorToken?: string;
  /** PEM CA the supervisor verifies the gateway's supervisor plane with. */
  tlsCa?: string;
}

/** The driver-side description of a sandbox (user settings + provisioning secrets). */
export function toDriverSandbox(
  sandbox: Sandbox,
  provisioning: ProvisioningSecrets = {},
): Wire<DriverSandbox> {
  const spec = sandbox.spec;
  const template = spec?.template;
  const environment: Record<string, string> = { ...(spec?.environment ?? {}) };
  if (provisioning.sshHostKey) environment[PROVISION_SSH_HOST_KEY] = provisioning.sshHostKey;
  if (provisioning.supervisorToken) {
    environment[PROVISION_SUPERVISOR_TOKEN] = provisioning.supervisorToken;
  }
  if (provisioning.tlsCa) environment[PROVISION_TLS_CA] = provisioning.tlsCa;
  return {
    id: sandbox.id,
    name: sandbox.name,
    namespace: sandbox.namespace,
    spec: {
      log_level: spec?.log_level ?? "",
      environment,
      gpu: spec?.gpu ?? false,
      template: template
        ? {
          image: template.image,
          agent_socket_path: template.agent_socket,
          labels: template.labels,
          environment: template.environment,
          resources: resourcesOf(template.resources),
          ...(platformConfigOf(template.resources)
            ? { platform_config: platformConfigOf(template.resources) }
            : {}),
        }
        : null,
    },
  };
}

/**
 * Maps a public `template.resources` Struct onto the driver's typed
 * requirements: upstream's Kubernetes shape (`limits`/`requests` with `cpu`
 * and `memory`), and the flat keys (`cpu`, `memory`, `cpu_limit` …) this
 * gateway took before. Numbers become strings; all empty → null.
 */
export function resourcesOf(struct: unknown): DriverResourceRequirements | null {
  const json = fromStruct(struct);
  if (!json || Object.keys(json).length === 0) return null;
  const str = (v: JsonValue | undefined) =>
    typeof v === "string" ? v : typeof v === "number" ? String(v) : "";
  const limits = sectionOf(json, "limits");
  const requests = sectionOf(json, "requests");
  const r: DriverResourceRequirements = {
    cpu_request: str(requests.cpu) || str(json.cpu_request) || str(json.cpu),
    cpu_limit: str(limits.cpu) || str(json.cpu_limit) || str(json.cpu),
    memory_request: str(requests.memory) || str(json.memory_request) || str(json.memory),
    memory_limit: str(limits.memory) || str(json.memory_limit) || str(json.memory),
  };
  return Object.values(r).some((v) => v !== "") ? r : null;
}

function sectionOf(json: Record<string, JsonValue>, name: string): Record<string, JsonValue> {
  const v = json[name];
  return v && typeof v === "object" && !Array.isArray(v) ? v : {};
}

const TYPED_KEYS = new Set([
  "cpu",
  "memory",
  "cpu_request",
  "cpu_limit",
  "memory_request",
  "memory_limit",
]);

/**
 * The driver's `platform_config` for a template (upstream's shape): every
 * resource beyond the typed CPU and memory — such as the disk,
 * `limits["ephemeral-storage"]` — under `resources_raw`; null when none.
 */
export function platformConfigOf(struct: unknown): ProtoStruct | null {
  const json = fromStruct(struct);
  if (!json) return null;
  const raw: Record<string, JsonValue> = {};
  for (const [k, v] of Object.entries(json)) {
    if (k === "limits" || k === "requests") {
      if (!v || typeof v !== "object" || Array.isArray(v)) {
        raw[k] = v;
        continue;
      }
      const rest = Object.fromEntries(
        Object.entries(v).filter(([name, q]) =>
          !((name === "cpu" || name === "memory") &&
            (typeof q === "string" || typeof q === "number"))
        ),
      );
      if (Object.keys(rest).length) raw[k] = rest;
    } else if (!TYPED_KEYS.has(k)) {
      raw[k] = v;
    }
  }
  return Object.keys(raw).length ? toStruct({ resources_raw: raw }) : null;
}

/** Owns sandbox state changes. */
export class ComputeRuntime {
  /** Status-change signals per sandbox (subscribers re-read the store). */
  readonly statusTopics: SandboxTopics<void> = new SandboxTopics<void>(0);
  /**
   * Log lines per sandbox (gateway and console), with replay of the last
   * {@link LOG_LINES_KEPT} lines and at most {@link LOG_BYTES_KEPT} bytes.
   */
  readonly logTopics: SandboxTopics<SandboxLogLine> = new SandboxTopics<SandboxLogLine>(
    LOG_LINES_KEPT,
    { maxBytes: LOG_BYTES_KEPT, sizeOf: logLineBytes },
  );
  /** Platform events per sandbox, with replay (count and bytes bounded). */
  readonly eventTopics: SandboxTopics<PlatformEvent> = new SandboxTopics<PlatformEvent>(
    EVENTS_KEPT,
    { maxBytes: EVENT_BYTES_KEPT, sizeOf: platformEventBytes },
  );

  readonly #store: Store;
  readonly #registry: SessionRegistry<Duplex>;
  #driver?: ComputeDriver;
  readonly #expectDriver: boolean;
  readonly #driverWaitMs: number;
  readonly #driverWaiters = new Set<() => void>();
  #started = false;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #reconcileMs: number;
  readonly #watchRestartMs: number;
  readonly #supervisorCa?: string;
  #unobserve?: () => void;
  #cancelWatch?: () => void;
  #watchTimer?: ReturnType<typeof setTimeout>;
  #reconcileTimer?: ReturnType<typeof setInterval>;
  #stopped = false;
  /** Console rate limit per sandbox. */
  readonly #consoleRates = new Map<string, LogRateLimiter>();
  /** Recently deleted sandboxes (insertion order, bounded). */
  readonly #gone = new Set<string>();
  /** Sequential queue so session changes and driver events apply in order. */
  #queue: Promise<void> = Promise.resolve();
  /** The last stop/start of each sandbox (they run one at a time per sandbox). */
  readonly #lifecycles = new Map<string, Promise<unknown>>();

  /** Creates the runtime; call {@link start} to begin observing. */
  constructor(options: ComputeRuntimeOptions) {
    this.#store = options.store;
    this.#registry = options.registry;
    this.#driver = options.driver;
    this.#expectDriver = options.driverExpected ?? options.driver !== undefined;
    this.#driverWaitMs = options.driverWaitMs ?? DRIVER_WAIT_MS;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#reconcileMs = options.reconcileIntervalMs ?? RECONCILE_INTERVAL_MS;
    this.#watchRestartMs = options.watchRestartMs ?? WATCH_RESTART_MS;
    this.#supervisorCa = options.supervisorCa;
  }

  /** Ends the sandbox's supervisor session, if any (its credential changed). */
  endSupervisorSession(id: string): void {
    this.#registry.endSession(id);
  }

  /** Whether a compute driver provisions sandboxes (false with `--drivers none`). */
  get hasDriver(): boolean {
    return this.#expectDriver;
  }

  /** Whether the expected driver is attached (or none is expected). */
  get driverReady(): boolean {
    return !this.#expectDriver || this.#driver !== undefined;
  }

  /**
   * Starts observing sessions and, with a driver, resumes its sandboxes
   * ({@link resume}), then its watch stream and reconciliation.
   */
  start(): void {
    this.#started = true;
    this.#unobserve = this.#registry.observe((id, connected) =>
      this.#enqueue(() => this.#onSession(id, connected))
    );
    if (this.#driver) this.#watchDriver();
  }

  /**
   * Attaches the driver once its process answered (the gateway binds its port
   * first, so sandboxes learn the endpoint); requests waiting for it proceed.
   */
  attachDriver(driver: ComputeDriver): void {
    if (this.#driver) throw new Error("a compute driver is already attached");
    this.#driver = driver;
    for (const wake of [...this.#driverWaiters]) wake();
    if (this.#started && !this.#stopped) this.#watchDriver();
  }

  #watchDriver(): void {
    // Queued first: the watch's events (queued after it) apply to the resumed state.
    this.#enqueue(() => this.resume());
    this.#openWatch();
    this.#reconcileTimer = setInterval(() => {
      this.#enqueue(() => this.reconcile());
    }, this.#reconcileMs);
  }

  /**
   * The driver, waiting up to `driverWaitMs` for it to be attached;
   * undefined with `--drivers none`; UNAVAILABLE when it does not come.
   */
  async #requireDriver(): Promise<ComputeDriver | undefined> {
    if (this.#driver || !this.#expectDriver) return this.#driver;
    if (this.#stopped) throw new StatusError(Code.UNAVAILABLE, "the gateway is shutting down");
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#driverWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, this.#driverWaitMs);
      this.#driverWaiters.add(wake);
    });
    if (!this.#driver) {
      throw new StatusError(Code.UNAVAILABLE, "the compute driver is not ready yet");
    }
    return this.#driver;
  }

  /** Stops timers and watches and ends every subscription; the driver itself is closed by its owner. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const wake of [...this.#driverWaiters]) wake();
    this.#unobserve?.();
    this.#cancelWatch?.();
    clearTimeout(this.#watchTimer);
    clearInterval(this.#reconcileTimer);
    await this.#queue;
    this.statusTopics.close();
    this.logTopics.close();
    this.eventTopics.close();
  }

  /** Waits until every queued state change has been applied (tests use it). */
  settled(): Promise<void> {
    return this.#queue;
  }

  /** Appends a gateway log line for `sandboxId`. */
  log(
    sandboxId: string,
    level: LogLevel,
    message: string,
    fields: Record<string, string> = {},
  ): void {
    this.logTopics.publish(sandboxId, {
      sandbox_id: sandboxId,
      timestamp_ms: this.#now(),
      level: level.toUpperCase(),
      target: "openshell_gateway",
      message: capLine(message),
      source: "gateway",
      fields: boundFields(fields),
    });
  }

  /**
   * Appends a line from elsewhere (the egress proxy's events) to a
   * sandbox's log ring; lines for a deleted sandbox are ignored.
   */
  appendLog(line: SandboxLogLine): void {
    if (this.#gone.has(line.sandbox_id) || this.#stopped) return;
    this.logTopics.publish(line.sandbox_id, { ...line, fields: boundFields(line.fields ?? {}) });
  }

  /** Forgets a sandbox's topics and rate limit; its late console lines are ignored. */
  #forget(sandboxId: string): void {
    this.statusTopics.drop(sandboxId);
    this.logTopics.drop(sandboxId);
    this.eventTopics.drop(sandboxId);
    this.#consoleRates.delete(sandboxId);
    this.#gone.add(sandboxId);
    if (this.#gone.size > GONE_REMEMBERED) this.#gone.delete(this.#gone.values().next().value!);
  }

  /**
   * Creates a sandbox: checks with the driver, stores it as PROVISIONING,
   * asks the driver to provision it. If provisioning cannot start, nothing
   * is left behind and the driver's error is returned.
   */
  async createSandbox(input: CreateInput): Promise<Sandbox> {
    const sandbox: Sandbox = {
      id: crypto.randomUUID(),
      name: input.name,
      namespace: SANDBOX_NAMESPACE,
      spec: input.spec,
      status: {
        sandbox_name: input.name,
        agent_pod: "",
        agent_fd: "",
        sandbox_fd: "",
        conditions: [],
      },
      phase: "SANDBOX_PHASE_PROVISIONING",
      created_at_ms: this.#now(),
      current_policy_version: 0,
    };
    const secrets: SandboxSecrets = {};
    const provisioning: ProvisioningSecrets = {};
    const driver = await this.#requireDriver();
    if (driver) {
      const key = generateHostKey(`openshell-${input.name}`);
      provisioning.sshHostKey = key.privateKey;
      provisioning.supervisorToken = newToken();
      provisioning.tlsCa = this.#supervisorCa;
      secrets.hostKeyFingerprint = key.fingerprint;
      secrets.supervisorTokenHash = hashToken(provisioning.supervisorToken);
      await driver.validateCreate(toDriverSandbox(sandbox, provisioning));
    }
    if (await this.#store.getSandboxByName(input.name)) {
      throw new StatusError(Code.ALREADY_EXISTS, `sandbox "${input.name}" already exists`);
    }
    await this.#store.createSandbox({ sandbox, secrets });
    this.log(sandbox.id, "info", `sandbox ${sandbox.name} created`);
    this.statusTopics.publish(sandbox.id);
    if (input.onStored) {
      try {
        await input.onStored(sandbox);
      } catch (err) {
        await this.#store.deleteSandbox(sandbox.id);
        this.#forget(sandbox.id);
        throw err;
      }
    }
    if (driver) {
      try {
        await driver.create(toDriverSandbox(sandbox, provisioning));
      } catch (err) {
        await this.#store.deleteSandbox(sandbox.id);
        this.#forget(sandbox.id);
        throw err;
      }
    }
    return (await this.#store.getSandbox(sandbox.id))?.sandbox ?? sandbox;
  }

  /**
   * Deletes a sandbox: DELETING is stored and published first, its SSH
   * sessions and supervisor session end, the driver tears it down, then the
   * record goes. False when there is no such sandbox.
   */
  async deleteSandbox(record: SandboxRecord): Promise<boolean> {
    const id = record.sandbox.id;
    const driver = await this.#requireDriver();
    await this.#store.updateSandbox(
      id,
      (r) =>
        r.sandbox.phase === "SANDBOX_PHASE_DELETING"
          ? undefined
          : { ...r, sandbox: { ...r.sandbox, phase: "SANDBOX_PHASE_DELETING" } },
    );
    this.log(id, "info", `sandbox ${record.sandbox.name} deleting`);
    this.statusTopics.publish(id);
    if (driver) {
      try {
        await driver.delete(id, record.sandbox.name);
      } catch (err) {
        this.#log.warn("driver failed to delete sandbox", {
          sandbox: id,
          error: errorMessage(err),
        });
        if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
      }
    }
    this.#registry.endSession(id);
    const removed = await this.#store.deleteSandbox(id);
    this.#forget(id);
    return removed;
  }

  /**
   * The compute driver, for requests that only it can answer (images);
   * FAILED_PRECONDITION with `--drivers none`.
   */
  async driverFor(what: string): Promise<ComputeDriver> {
    const driver = await this.#requireDriver();
    if (!driver) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `this gateway runs no compute driver (--drivers none): it has no ${what}`,
      );
    }
    return driver;
  }

  /** Runs `op` after every earlier stop/start of sandbox `id`. */
  #locked<T>(id: string, op: () => Promise<T>): Promise<T> {
    const run = (this.#lifecycles.get(id) ?? Promise.resolve()).then(op);
    const tail = run.catch(() => {});
    this.#lifecycles.set(id, tail);
    tail.then(() => {
      if (this.#lifecycles.get(id) === tail) this.#lifecycles.delete(id);
    });
    return run;
  }

  /**
   * Moves a sandbox to a lifecycle phase with its `Ready=False` reason,
   * when `from` (the current phase) allows it; persists, logs and
   * publishes. Returns the stored sandbox (changed or not).
   */
  async #transition(
    id: string,
    to: { phase: Sandbox["phase"]; reason: string; message: string },
    from: (phase: Sandbox["phase"]) => boolean,
  ): Promise<Sandbox | undefined> {
    let changed = false;
    const updated = await this.#store.updateSandbox(id, (r) => {
      if (!from(r.sandbox.phase)) return undefined;
      changed = true;
      const next = withLifecycle(
        r.sandbox,
        to.phase,
        to.reason,
        to.message,
        new Date(this.#now()),
      );
      this.log(
        id,
        "info",
        `phase ${r.sandbox.phase.replace("SANDBOX_PHASE_", "")} -> ${
          to.phase.replace("SANDBOX_PHASE_", "")
        } (${to.reason}: ${to.message})`,
      );
      return { ...r, sandbox: next };
    });
    if (changed) this.statusTopics.publish(id);
    return updated?.sandbox;
  }

  /** The compute driver for a lifecycle request; FAILED_PRECONDITION with `--drivers none`. */
  async #lifecycleDriver(name: string, verb: string): Promise<ComputeDriver> {
    const driver = await this.#requireDriver();
    if (!driver) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `sandbox "${name}" cannot be ${verb} by this gateway: it runs no compute driver ` +
          "(--drivers none), so the sandbox's supervisor runs elsewhere; stop or start it there",
      );
    }
    return driver;
  }

  /**
   * Stops a sandbox: STOPPING, the driver shuts its VM down keeping its
   * disk, then STOPPED (`Ready=False reason=Stopped`). Idempotent for a
   * stopped sandbox; FAILED_PRECONDITION while it is being deleted. A
   * driver failure makes it ERROR (StopFailed) and is returned.
   */
  async stopSandbox(record: SandboxRecord): Promise<Sandbox> {
    const { id, name } = record.sandbox;
    const driver = await this.#lifecycleDriver(name, "stopped");
    return await this.#locked(id, async () => {
      const current = (await this.#store.getSandbox(id))?.sandbox;
      if (!current) throw new StatusError(Code.NOT_FOUND, `sandbox "${name}" not found`);
      if (current.phase === "SANDBOX_PHASE_DELETING") {
        throw new StatusError(Code.FAILED_PRECONDITION, `sandbox "${name}" is being deleted`);
      }
      if (current.phase === "SANDBOX_PHASE_STOPPED") return current;
      await this.#transition(
        id,
        { phase: "SANDBOX_PHASE_STOPPING", reason: REASON_STOPPING, message: "stop requested" },
        (p) => p !== "SANDBOX_PHASE_DELETING",
      );
      try {
        await driver.stop(id, name);
      } catch (err) {
        const lost = err instanceof StatusError && err.code === Code.NOT_FOUND;
        await this.#markError(
          id,
          lost ? "DriverLost" : "StopFailed",
          lost
            ? `the compute driver has no state for this sandbox; delete it with \`openshell sandbox delete ${name}\``
            : `the VM did not stop: ${errorMessage(err)}; try \`openshell sandbox stop ${name}\` ` +
              "again, or delete it",
        );
        throw err;
      }
      const stopped = await this.#transition(
        id,
        {
          phase: "SANDBOX_PHASE_STOPPED",
          reason: REASON_STOPPED,
          message: `stopped; its disk is kept (\`openshell sandbox start ${name}\` boots it again)`,
        },
        (p) => p === "SANDBOX_PHASE_STOPPING",
      );
      // Whatever is left of its supervisor session goes with the VM.
      this.#registry.endSession(id);
      return stopped ?? current;
    });
  }

  /**
   * Starts a sandbox's compute again: a STOPPED (or ERROR) sandbox becomes
   * STARTING and the driver boots its VM from its disk; the supervisor's
   * session then makes it READY. Idempotent for a running one;
   * FAILED_PRECONDITION while it is being deleted. A driver failure makes
   * it ERROR (StartFailed) and is returned.
   */
  async startSandbox(record: SandboxRecord): Promise<Sandbox> {
    const { id, name } = record.sandbox;
    const driver = await this.#lifecycleDriver(name, "started");
    return await this.#locked(id, async () => {
      const current = (await this.#store.getSandbox(id))?.sandbox;
      if (!current) throw new StatusError(Code.NOT_FOUND, `sandbox "${name}" not found`);
      if (current.phase === "SANDBOX_PHASE_DELETING") {
        throw new StatusError(Code.FAILED_PRECONDITION, `sandbox "${name}" is being deleted`);
      }
      if (current.phase === "SANDBOX_PHASE_READY") return current;
      await this.#startCompute(
        driver,
        current,
        "start requested",
        false,
        (message) =>
          `the VM could not start: ${message}; try \`openshell sandbox start ${name}\` again ` +
          "(`openshell sandbox logs " + name + "` shows its console), or delete it",
      );
      return (await this.#store.getSandbox(id))?.sandbox ?? current;
    });
  }

  /**
   * STARTING (unless it is already coming up), then the driver's
   * StartSandbox; a failure becomes ERROR StartFailed with `explain(message)`
   * and is rethrown.
   */
  async #startCompute(
    driver: ComputeDriver,
    current: Sandbox,
    why: string,
    restarted: boolean,
    explain: (message: string) => string,
  ): Promise<void> {
    const { id, name } = current;
    await this.#transition(
      id,
      { phase: "SANDBOX_PHASE_STARTING", reason: REASON_STARTING, message: why },
      // A sandbox coming up already is left as it is, unless its VM is new (a restart).
      (p) =>
        p !== "SANDBOX_PHASE_DELETING" && p !== "SANDBOX_PHASE_STARTING" &&
        (restarted || p !== "SANDBOX_PHASE_PROVISIONING"),
    );
    try {
      await driver.start(id, name);
    } catch (err) {
      const lost = err instanceof StatusError && err.code === Code.NOT_FOUND;
      await this.#markError(
        id,
        lost ? "DriverLost" : "StartFailed",
        lost
          ? "the compute driver has no state (disk) for this sandbox; delete it with " +
            `\`openshell sandbox delete ${name}\` and create it again`
          : explain(errorMessage(err)),
      );
      throw err;
    }
    // A supervisor that never went away (the VM kept running) makes it READY at once.
    if (this.#registry.hasSession(id)) this.#enqueue(() => this.#onSession(id, true));
  }

  /**
   * Brings the driver in line with the store (see the module docs). Runs
   * first whenever a driver is attached; a no-op for drivers that do not
   * ask the gateway to manage their lifecycle.
   */
  async resume(): Promise<void> {
    const driver = this.#driver;
    if (!driver || this.#stopped) return;
    let known: DriverSandbox[];
    try {
      if (!(await driver.capabilities()).gateway_manages_lifecycle) return;
      known = await driver.list();
    } catch (err) {
      this.#log.warn("resume: the compute driver did not answer", { error: errorMessage(err) });
      return;
    }
    const total = await this.#store.countSandboxes();
    const records = await this.#store.listSandboxes({ limit: total + 1, offset: 0 });
    const stored = new Set(records.map((r) => r.sandbox.id));
    const present = new Set(known.map((d) => d.id));
    const orphans = await this.#removeUnknown(driver, known.filter((d) => !stored.has(d.id)));
    let started = 0;
    let failed = 0;
    for (const r of records) {
      if (this.#stopped) return;
      try {
        const outcome = await this.#resumeOne(driver, r.sandbox, present.has(r.sandbox.id));
        if (outcome === "started") started++;
        if (outcome === "lost") failed++;
      } catch (err) {
        failed++;
        this.#log.warn("resume: a sandbox did not come back", {
          sandbox: r.sandbox.id,
          name: r.sandbox.name,
          error: errorMessage(err),
        });
      }
    }
    if (orphans || started || failed) {
      this.#log.info("sandboxes resumed after a restart", {
        started,
        failed,
        removed_unknown: orphans,
      });
    }
  }

  /** Deletes the driver's sandboxes that the store does not know; returns how many went. */
  async #removeUnknown(driver: ComputeDriver, unknown: readonly DriverSandbox[]): Promise<number> {
    let removed = 0;
    for (const d of unknown) {
      try {
        await driver.delete(d.id, d.name);
        removed++;
        this.#log.info("removed a sandbox the gateway's store does not know", {
          sandbox: d.id,
          name: d.name,
        });
      } catch (err) {
        this.#log.warn("cannot remove a sandbox the store does not know", {
          sandbox: d.id,
          error: errorMessage(err),
        });
      }
    }
    return removed;
  }

  /**
   * Brings one stored sandbox in line after a restart: finishes a delete
   * or a stop, starts the VM of one that should run, marks one the driver
   * (`present`: whether it knows it) lost as ERROR; leaves an ERROR one
   * alone (`sandbox start` retries it, `sandbox delete` removes it).
   */
  async #resumeOne(
    driver: ComputeDriver,
    sandbox: Sandbox,
    present: boolean,
  ): Promise<"started" | "lost" | "done"> {
    const { id, name, phase } = sandbox;
    if (phase === "SANDBOX_PHASE_DELETING") {
      // A delete the gateway did not finish before it went down.
      if (present) await driver.delete(id, name);
      this.#registry.endSession(id);
      await this.#store.deleteSandbox(id);
      this.#forget(id);
      this.#log.info("finished deleting a sandbox", { sandbox: id, name });
      return "done";
    }
    if (phase === "SANDBOX_PHASE_ERROR") return "done";
    if (!present) {
      await this.#markError(
        id,
        "DriverLost",
        "the compute driver has no state (disk) for this sandbox after the gateway restarted; " +
          `delete it with \`openshell sandbox delete ${name}\` and create it again`,
      );
      return "lost";
    }
    if (phase === "SANDBOX_PHASE_STOPPING") {
      await this.#locked(id, async () => {
        await driver.stop(id, name);
        await this.#transition(
          id,
          {
            phase: "SANDBOX_PHASE_STOPPED",
            reason: REASON_STOPPED,
            message: `stopped; its disk is kept (\`openshell sandbox start ${name}\` boots ` +
              "it again)",
          },
          (p) => p === "SANDBOX_PHASE_STOPPING",
        );
      });
      return "done";
    }
    if (!shouldRun(phase)) return "done";
    await this.#locked(id, () =>
      this.#startCompute(
        driver,
        sandbox,
        "the gateway restarted; starting the VM again",
        true,
        (message) =>
          `the VM could not be started again after the gateway restarted: ${message}; ` +
          `try \`openshell sandbox start ${name}\`, or delete it`,
      ));
    return "started";
  }

  /** Compares the store with the driver's list; sandboxes the driver lost become ERROR. */
  async reconcile(): Promise<void> {
    if (!this.#driver || this.#stopped) return;
    let known: DriverSandbox[];
    try {
      known = await this.#driver.list();
    } catch (err) {
      this.#log.warn("reconcile: driver list failed", { error: errorMessage(err) });
      return;
    }
    const byId = new Map(known.map((d) => [d.id, d]));
    const total = await this.#store.countSandboxes();
    const records = await this.#store.listSandboxes({ limit: total + 1, offset: 0 });
    for (const r of records) {
      const d = byId.get(r.sandbox.id);
      if (d) {
        await this.#applySnapshot(d);
      } else if (
        r.sandbox.phase !== "SANDBOX_PHASE_ERROR" && r.sandbox.phase !== "SANDBOX_PHASE_DELETING"
      ) {
        await this.#markError(
          r.sandbox.id,
          "DriverLost",
          "the compute driver does not know this sandbox; delete it with " +
            `\`openshell sandbox delete ${r.sandbox.name}\``,
        );
      }
    }
  }

  #enqueue(task: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(task).catch((err) => {
      this.#log.error("compute runtime update failed", { error: errorMessage(err) });
    });
    this.#queue = next;
    return next;
  }

  async #onSession(sandboxId: string, connected: boolean): Promise<void> {
    const updated = await this.#store.updateSandbox(sandboxId, (r) => {
      const next = applySessionChange(r.sandbox, connected);
      return next ? { ...r, sandbox: next } : undefined;
    });
    if (!updated) return;
    this.log(
      sandboxId,
      "info",
      connected ? "supervisor session connected" : "supervisor session disconnected",
      { phase: updated.sandbox.phase },
    );
    this.statusTopics.publish(sandboxId);
  }

  async #applySnapshot(driverSandbox: DriverSandbox): Promise<void> {
    let changed = false;
    await this.#store.updateSandbox(driverSandbox.id, (r) => {
      const next = applyDriverSnapshot(
        r.sandbox,
        driverSandbox,
        this.#registry.hasSession(driverSandbox.id),
      );
      if (!next) return undefined;
      changed = true;
      if (next.phase !== r.sandbox.phase) {
        const ready = next.status?.conditions.find((c) => c.type === "Ready");
        this.log(
          driverSandbox.id,
          next.phase === "SANDBOX_PHASE_ERROR" ? "error" : "info",
          `phase ${r.sandbox.phase.replace("SANDBOX_PHASE_", "")} -> ${
            next.phase.replace("SANDBOX_PHASE_", "")
          }${ready ? ` (${ready.reason}: ${ready.message})` : ""}`,
        );
      }
      return { ...r, sandbox: next };
    });
    if (changed) this.statusTopics.publish(driverSandbox.id);
  }

  async #markError(sandboxId: string, reason: string, message: string): Promise<void> {
    const updated = await this.#store.updateSandbox(sandboxId, (r) => {
      const conditions = (r.sandbox.status?.conditions ?? []).filter((c) => c.type !== "Ready");
      conditions.push({
        type: "Ready",
        status: "False",
        reason,
        message,
        last_transition_time: new Date(this.#now()).toISOString(),
      });
      return {
        ...r,
        sandbox: {
          ...r.sandbox,
          phase: "SANDBOX_PHASE_ERROR",
          status: {
            ...(r.sandbox.status ??
              { sandbox_name: r.sandbox.name, agent_pod: "", agent_fd: "", sandbox_fd: "" }),
            conditions,
          },
        },
      };
    });
    if (!updated) return;
    this.log(sandboxId, "error", `${reason}: ${message}`);
    this.statusTopics.publish(sandboxId);
  }

  #openWatch(): void {
    if (this.#stopped || !this.#driver) return;
    this.#cancelWatch = this.#driver.watch({
      event: (e) => {
        switch (e.payload) {
          case "sandbox":
            this.#enqueue(() => this.#applySnapshot(e.sandbox.sandbox!));
            break;
          case "deleted":
            this.#enqueue(async () => {
              const r = await this.#store.getSandbox(e.deleted.sandbox_id);
              if (r && r.sandbox.phase !== "SANDBOX_PHASE_DELETING") {
                await this.#markError(
                  r.sandbox.id,
                  "DriverDeleted",
                  "the compute driver removed this sandbox",
                );
              }
            });
            break;
          case "platform_event":
            this.#onPlatformEvent(e.platform_event.sandbox_id, e.platform_event.event!);
            break;
        }
      },
      end: (err) => {
        if (this.#stopped) return;
        this.#log.warn("driver watch ended; reopening", {
          error: err ? errorMessage(err) : "stream closed",
        });
        this.#watchTimer = setTimeout(() => {
          this.#openWatch();
          this.#enqueue(() => this.reconcile());
        }, this.#watchRestartMs);
      },
    });
  }

  #onPlatformEvent(sandboxId: string, event: PlatformEvent): void {
    if (this.#gone.has(sandboxId)) return;
    if (event.source === "console") {
      this.#onConsoleLine(sandboxId, event);
      return;
    }
    const bounded: PlatformEvent = {
      ...event,
      reason: capLine(event.reason, 256),
      message: capLine(event.message),
      metadata: boundFields(event.metadata ?? {}),
    };
    this.eventTopics.publish(sandboxId, bounded);
    this.log(
      sandboxId,
      event.type === "Warning" ? "warn" : "info",
      `${capLine(event.source, 64)} ${bounded.reason}: ${bounded.message}`,
    );
  }

  /**
   * One line of a guest's console: cut to 8 KiB, then through the sandbox's
   * rate limit; when lines were dropped, one marker line says how many.
   */
  #onConsoleLine(sandboxId: string, event: PlatformEvent): void {
    const message = capLine(event.message);
    let limiter = this.#consoleRates.get(sandboxId);
    if (!limiter) {
      limiter = new LogRateLimiter({ now: this.#now });
      this.#consoleRates.set(sandboxId, limiter);
    }
    const line = consoleLogLine(sandboxId, message, event.timestamp_ms || this.#now());
    const { admit, dropped } = limiter.admit(logLineBytes(line));
    if (!admit) return;
    if (dropped > 0) {
      this.logTopics.publish(sandboxId, {
        ...line,
        level: "WARN",
        target: "openshell_gateway",
        message: limiter.droppedMessage(dropped, "console lines"),
      });
    }
    this.logTopics.publish(sandboxId, line);
  }
}
