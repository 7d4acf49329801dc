import assert from "node:assert/strict";
import { fromStruct, limitsStruct, toStruct } from "../core/resources.ts";
import type { Duplex } from "node:stream";
import { Logger } from "../core/log.ts";
import type {
  DriverGetCapabilitiesResponse,
  DriverSandbox,
  DriverWatchSandboxesEvent,
  PlatformEvent,
  SandboxCondition,
  SandboxLogLine,
  SandboxSpec,
  Wire,
} from "../core/protocol.ts";
import {
  PROVISION_SSH_HOST_KEY,
  PROVISION_SUPERVISOR_TOKEN,
  PROVISION_TLS_CA,
} from "../core/provisioning.ts";
import { SessionRegistry, type SessionSink } from "../core/registry.ts";
import { fingerprintOfPublicKey, publicKeyOfPrivate } from "../core/ssh_keys.ts";
import { Code, StatusError } from "../core/status.ts";
import { hashToken } from "./tokens.ts";
import { LOG_LINE_BURST } from "../core/rate_limit.ts";
import { MAX_LINE_BYTES } from "../core/text.ts";
import v8 from "node:v8";
import vm from "node:vm";
import {
  ComputeRuntime,
  consoleLogLine,
  generateSandboxName,
  LOG_BYTES_KEPT,
  logLineBytes,
  platformConfigOf,
  resourcesOf,
  SANDBOX_NAMESPACE,
  toDriverSandbox,
} from "./compute.ts";
import type { ComputeDriver, WatchHandlers } from "./driver.ts";
import { REASON_CONNECTED, REASON_DISCONNECTED } from "./readiness.ts";
import { SqliteStore } from "./store.ts";

// ---- an in-process fake driver ----------------------------------------------

interface Call {
  method: string;
  args: unknown[];
}

/** Records calls, lets the test drive its watch stream, can fail on request. */
class FakeDriver implements ComputeDriver {
  readonly calls: Call[] = [];
  failValidate?: Error;
  failCreate?: Error;
  failDelete?: Error;
  failStop?: Error;
  /** Fails `start()` for these ids (all when "*"). */
  failStart = new Map<string, Error>();
  /** `gateway_manages_lifecycle` in its capabilities. */
  managesLifecycle = false;
  /** Runs inside `stop()` before it returns. */
  onStop?: (id: string) => Promise<void>;
  /** What `list()` returns. */
  listed: DriverSandbox[] = [];
  /** Runs inside `delete()` before it returns (to look at the store mid-delete). */
  onDelete?: (id: string) => Promise<void>;
  readonly watches: { handlers: WatchHandlers; cancelled: boolean }[] = [];
  #waiters: { method: string; count: number; resolve: () => void }[] = [];

  #record(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    this.#wake();
  }

  #wake(): void {
    this.#waiters = this.#waiters.filter((w) => {
      if (this.count(w.method) < w.count) return true;
      w.resolve();
      return false;
    });
  }

  /** Number of calls of `method`. */
  count(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  /** Resolves once `method` has been called `count` times; rejects after `timeoutMs`. */
  until(method: string, count: number, timeoutMs = 2_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${method} was called ${this.count(method)} times, not ${count}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#waiters.push({ method, count, resolve: done });
      this.#wake();
    });
  }

  capabilities(): Promise<DriverGetCapabilitiesResponse> {
    this.#record("capabilities");
    return Promise.resolve({
      driver_name: "fake",
      driver_version: "0",
      default_image: "",
      supports_gpu: false,
      gateway_manages_lifecycle: this.managesLifecycle,
    });
  }

  async stop(sandboxId: string, sandboxName: string): Promise<void> {
    this.#record("stop", sandboxId, sandboxName);
    await this.onStop?.(sandboxId);
    if (this.failStop) throw this.failStop;
  }

  start(sandboxId: string, sandboxName: string): Promise<void> {
    this.#record("start", sandboxId, sandboxName);
    const fail = this.failStart.get(sandboxId) ?? this.failStart.get("*");
    return fail ? Promise.reject(fail) : Promise.resolve();
  }

  validateCreate(sandbox: Wire<DriverSandbox>): Promise<void> {
    this.#record("validateCreate", sandbox);
    return this.failValidate ? Promise.reject(this.failValidate) : Promise.resolve();
  }

  create(sandbox: Wire<DriverSandbox>): Promise<void> {
    this.#record("create", sandbox);
    return this.failCreate ? Promise.reject(this.failCreate) : Promise.resolve();
  }

  async delete(sandboxId: string, sandboxName: string): Promise<boolean> {
    this.#record("delete", sandboxId, sandboxName);
    await this.onDelete?.(sandboxId);
    if (this.failDelete) throw this.failDelete;
    return true;
  }

  list(): Promise<DriverSandbox[]> {
    this.#record("list");
    return Promise.resolve(this.listed);
  }

  watch(handlers: WatchHandlers): () => void {
    const w = { handlers, cancelled: false };
    this.watches.push(w);
    this.#record("watch");
    return () => w.cancelled = true;
  }

  close(): Promise<void> {
    this.#record("close");
    return Promise.resolve();
  }

  /** Pushes an event on the newest watch. */
  emit(event: DriverWatchSandboxesEvent): void {
    const w = this.watches.at(-1);
    assert.ok(w && !w.cancelled, "no open watch");
    w.handlers.event(event);
  }

  /** Ends the newest watch. */
  endWatch(err?: Error): void {
    this.watches.at(-1)!.handlers.end(err);
  }
}

// ---- fixtures ----------------------------------------------------------------

interface Harness {
  store: SqliteStore;
  registry: SessionRegistry<Duplex>;
  driver: FakeDriver;
  runtime: ComputeRuntime;
  logLines: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

function harness(
  options: {
    driver?: boolean;
    lateDriver?: boolean;
    driverWaitMs?: number;
    watchRestartMs?: number;
    reconcileIntervalMs?: number;
    now?: () => number;
    /** Leave `runtime.start()` to the test (to seed the store first). */
    startLater?: boolean;
  } = {},
): Harness {
  const store = SqliteStore.open();
  const registry = new SessionRegistry<Duplex>();
  const driver = new FakeDriver();
  const logLines: string[] = [];
  const runtime = new ComputeRuntime({
    store,
    registry,
    driver: options.driver === false || options.lateDriver ? undefined : driver,
    driverExpected: options.lateDriver ? true : undefined,
    driverWaitMs: options.driverWaitMs,
    log: new Logger({ level: "debug", sink: (l) => logLines.push(l) }),
    watchRestartMs: options.watchRestartMs,
    now: options.now,
    // far beyond any test, so only the reconciles a test provokes happen
    reconcileIntervalMs: options.reconcileIntervalMs ?? 3_600_000,
  });
  if (!options.startLater) runtime.start();
  return {
    store,
    registry,
    driver,
    runtime,
    logLines,
    async [Symbol.asyncDispose]() {
      await runtime.stop();
      registry.close();
      store.close();
    },
  };
}

function spec(environment: Record<string, string> = {}): SandboxSpec {
  return { log_level: "", environment, template: null, policy: null, providers: [], gpu: false };
}

function fakeSink(): SessionSink & { stopped: number } {
  const sink = {
    stopped: 0,
    send: () => true,
    stop() {
      sink.stopped++;
    },
  };
  return sink;
}

function cond(status: string, reason: string, message = ""): SandboxCondition {
  return { type: "Ready", status, reason, message, last_transition_time: "" };
}

function snapshot(
  id: string,
  name: string,
  conditions: SandboxCondition[],
): DriverWatchSandboxesEvent {
  return {
    payload: "sandbox",
    sandbox: {
      sandbox: {
        id,
        name,
        namespace: SANDBOX_NAMESPACE,
        spec: null,
        status: {
          sandbox_name: name,
          instance_id: "vm-1",
          agent_fd: "",
          sandbox_fd: "",
          conditions,
          deleting: false,
        },
      },
    },
  };
}

function platformEvent(id: string, event: Partial<PlatformEvent>): DriverWatchSandboxesEvent {
  return {
    payload: "platform_event",
    platform_event: {
      sandbox_id: id,
      event: {
        timestamp_ms: 0,
        source: "vm",
        type: "Normal",
        reason: "",
        message: "",
        metadata: {},
        ...event,
      },
    },
  };
}

function messages(lines: SandboxLogLine[]): string[] {
  return lines.map((l) => l.message);
}

// ---- pure mapping -------------------------------------------------------------

Deno.test("generateSandboxName: sandbox- plus six lower-case letters or digits", () => {
  const names = new Set(Array.from({ length: 20 }, generateSandboxName));
  for (const n of names) assert.match(n, /^sandbox-[a-z0-9]{6}$/);
  assert.ok(names.size > 1);
});

Deno.test("toDriverSandbox: user settings plus provisioning secrets in spec.environment", () => {
  const d = toDriverSandbox(
    {
      id: "id-1",
      name: "alpha",
      namespace: "default",
      spec: {
        log_level: "debug",
        environment: { FOO: "bar" },
        gpu: true,
        policy: null,
        providers: [],
        template: {
          image: "img:1",
          runtime_class_name: "",
          agent_socket: "/run/agent.sock",
          labels: { team: "a" },
          annotations: {},
          environment: { TPL: "1" },
          resources: { fields: { cpu: { kind: "stringValue", stringValue: "2" } } },
          volume_claim_templates: null,
        },
      },
      status: null,
      phase: "SANDBOX_PHASE_PROVISIONING",
      created_at_ms: 1,
      current_policy_version: 0,
    },
    { sshHostKey: "KEY", supervisorToken: "TOK", tlsCa: "CA" },
  );
  assert.deepEqual(d, {
    id: "id-1",
    name: "alpha",
    namespace: "default",
    spec: {
      log_level: "debug",
      environment: {
        FOO: "bar",
        [PROVISION_SSH_HOST_KEY]: "KEY",
        [PROVISION_SUPERVISOR_TOKEN]: "TOK",
        [PROVISION_TLS_CA]: "CA",
      },
      gpu: true,
      template: {
        image: "img:1",
        agent_socket_path: "/run/agent.sock",
        labels: { team: "a" },
        environment: { TPL: "1" },
        resources: { cpu_request: "2", cpu_limit: "2", memory_request: "", memory_limit: "" },
      },
    },
  });
});

Deno.test("toDriverSandbox: no spec, no secrets → empty environment, no template", () => {
  const d = toDriverSandbox({
    id: "id-2",
    name: "beta",
    namespace: "default",
    spec: null,
    status: null,
    phase: "SANDBOX_PHASE_PROVISIONING",
    created_at_ms: 1,
    current_policy_version: 0,
  }, {});
  assert.deepEqual(d.spec, { log_level: "", environment: {}, gpu: false, template: null });
});

Deno.test("resourcesOf: specific keys beat cpu/memory; numbers become strings; empty is null", () => {
  assert.equal(resourcesOf(null), null);
  assert.equal(resourcesOf(undefined), null);
  assert.equal(resourcesOf({}), null);
  assert.equal(resourcesOf({ fields: {} }), null);
  assert.deepEqual(
    resourcesOf({ fields: { cpu: { numberValue: 2 }, memory: { stringValue: "1Gi" } } }),
    { cpu_request: "2", cpu_limit: "2", memory_request: "1Gi", memory_limit: "1Gi" },
  );
  assert.deepEqual(
    resourcesOf({
      fields: {
        cpu: { stringValue: "1" },
        cpu_limit: { stringValue: "4" },
        memory_request: { numberValue: 256 },
      },
    }),
    { cpu_request: "1", cpu_limit: "4", memory_request: "256", memory_limit: "" },
  );
});

Deno.test("resourcesOf: upstream's limits/requests shape; platformConfigOf carries the rest (the disk)", () => {
  const struct = toStruct({
    limits: { cpu: "2", memory: "2Gi", "ephemeral-storage": "20Gi" },
    requests: { cpu: "1", memory: 1073741824 },
  });
  assert.deepEqual(resourcesOf(struct), {
    cpu_request: "1",
    cpu_limit: "2",
    memory_request: "1073741824",
    memory_limit: "2Gi",
  });
  assert.deepEqual(fromStruct(platformConfigOf(struct)), {
    resources_raw: { limits: { "ephemeral-storage": "20Gi" } },
  });
  // Only CPU and memory: no platform config.
  assert.equal(platformConfigOf(toStruct({ limits: { cpu: "2" }, cpu: "1" })), null);
  assert.equal(platformConfigOf(null), null);
  // Anything else passes through for the driver to accept or refuse.
  assert.deepEqual(fromStruct(platformConfigOf(toStruct({ claims: ["a"], limits: "x" }))), {
    resources_raw: { claims: ["a"], limits: "x" },
  });
  // What `openshell sandbox create --disk-gib 12` sends reaches the driver's template.
  const d = toDriverSandbox({
    id: "i",
    name: "n",
    namespace: "default",
    spec: {
      log_level: "",
      environment: {},
      policy: null,
      providers: [],
      gpu: false,
      template: {
        image: "",
        runtime_class_name: "",
        agent_socket: "",
        labels: {},
        annotations: {},
        environment: {},
        resources: limitsStruct({ disk: "12Gi" })!,
        volume_claim_templates: null,
      },
    },
    status: null,
    phase: "SANDBOX_PHASE_PROVISIONING",
    created_at_ms: 1,
    current_policy_version: 0,
  });
  assert.equal(d.spec!.template!.resources, null);
  assert.deepEqual(fromStruct(d.spec!.template!.platform_config), {
    resources_raw: { limits: { "ephemeral-storage": "12Gi" } },
  });
});

// ---- create --------------------------------------------------------------------

Deno.test("create stores PROVISIONING and hands the driver the provisioning secrets", async () => {
  await using h = harness();
  const created = await h.runtime.createSandbox({ name: "alpha", spec: spec({ FOO: "bar" }) });
  assert.equal(created.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.equal(created.namespace, SANDBOX_NAMESPACE);

  assert.deepEqual(
    h.driver.calls.map((c) => c.method).filter((m) => m !== "watch" && m !== "capabilities"),
    ["validateCreate", "create"],
  );
  const sent = h.driver.calls.find((c) => c.method === "create")!.args[0] as Wire<DriverSandbox>;
  assert.equal(sent.id, created.id);
  assert.equal(sent.name, "alpha");
  const env = sent.spec?.environment as Record<string, string>;
  assert.equal(env.FOO, "bar");

  const record = (await h.store.getSandbox(created.id))!;
  assert.equal(record.sandbox.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.match(env[PROVISION_SSH_HOST_KEY], /BEGIN OPENSSH PRIVATE KEY/);
  assert.ok(env[PROVISION_SUPERVISOR_TOKEN].length >= 32);
  // Stored: the token's hash and the key's fingerprint only, never the secrets themselves.
  assert.equal(record.secrets.supervisorTokenHash, hashToken(env[PROVISION_SUPERVISOR_TOKEN]));
  assert.equal(
    record.secrets.hostKeyFingerprint,
    fingerprintOfPublicKey(publicKeyOfPrivate(env[PROVISION_SSH_HOST_KEY])),
  );
  assert.deepEqual(Object.keys(record.secrets).sort(), [
    "hostKeyFingerprint",
    "supervisorTokenHash",
  ]);
  // the secrets never reach the public resource
  assert.deepEqual(record.sandbox.spec?.environment, { FOO: "bar" });
  assert.ok(!JSON.stringify(created).includes(env[PROVISION_SUPERVISOR_TOKEN]));
  // validate saw the same description
  assert.deepEqual(h.driver.calls.find((c) => c.method === "validateCreate")!.args[0], sent);
  assert.deepEqual(messages(h.runtime.logTopics.buffered(created.id)), ["sandbox alpha created"]);
});

Deno.test("create: a name that exists is ALREADY_EXISTS and the driver is not asked", async () => {
  await using h = harness();
  await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  await assert.rejects(
    h.runtime.createSandbox({ name: "alpha", spec: spec() }),
    (e: unknown) => e instanceof StatusError && e.code === Code.ALREADY_EXISTS,
  );
  assert.equal(h.driver.count("create"), 1);
  assert.equal(await h.store.countSandboxes(), 1);
});

Deno.test("create: a failing driver create leaves no record behind", async () => {
  await using h = harness();
  h.driver.failCreate = new StatusError(Code.RESOURCE_EXHAUSTED, "no room for a VM");
  await assert.rejects(
    h.runtime.createSandbox({ name: "alpha", spec: spec() }),
    (e: unknown) =>
      e instanceof StatusError && e.code === Code.RESOURCE_EXHAUSTED && /no room/.test(e.message),
  );
  const id = (h.driver.calls.find((c) => c.method === "create")!.args[0] as { id: string }).id;
  assert.equal(await h.store.getSandbox(id), undefined);
  assert.equal(await h.store.getSandboxByName("alpha"), undefined);
  assert.equal(await h.store.countSandboxes(), 0);
  assert.deepEqual(h.runtime.logTopics.buffered(id), [], "its log topic is dropped too");
  // the name is free again
  h.driver.failCreate = undefined;
  await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  assert.equal(await h.store.countSandboxes(), 1);
});

Deno.test("create: a failing driver validate stores nothing and never creates", async () => {
  await using h = harness();
  h.driver.failValidate = new StatusError(Code.INVALID_ARGUMENT, "image not allowed");
  await assert.rejects(
    h.runtime.createSandbox({ name: "alpha", spec: spec() }),
    (e: unknown) => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT,
  );
  assert.equal(h.driver.count("create"), 0);
  assert.equal(await h.store.countSandboxes(), 0);
});

Deno.test("create without a driver (--drivers none): a record without secrets", async () => {
  await using h = harness({ driver: false });
  assert.equal(h.runtime.hasDriver, false);
  const created = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const record = (await h.store.getSandbox(created.id))!;
  assert.equal(record.sandbox.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.deepEqual(record.secrets, {});
  assert.equal(h.driver.calls.length, 0);
  // a session still promotes it
  h.registry.register(created.id, "s1", fakeSink());
  await h.runtime.settled();
  assert.equal((await h.store.getSandbox(created.id))?.sandbox.phase, "SANDBOX_PHASE_READY");
});

// ---- sessions ------------------------------------------------------------------

Deno.test("sessions: register promotes to READY, remove demotes to PROVISIONING", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  let signals = 0;
  const unsubscribe = h.runtime.statusTopics.subscribe(id, { next: () => signals++, end() {} });

  h.registry.register(id, "s1", fakeSink());
  await h.runtime.settled();
  let r = (await h.store.getSandbox(id))!.sandbox;
  assert.equal(r.phase, "SANDBOX_PHASE_READY");
  let ready = r.status?.conditions.find((c) => c.type === "Ready");
  assert.equal(ready?.status, "True");
  assert.equal(ready?.reason, REASON_CONNECTED);
  assert.equal(signals, 1);

  h.registry.removeIfCurrent(id, "s1");
  await h.runtime.settled();
  r = (await h.store.getSandbox(id))!.sandbox;
  assert.equal(r.phase, "SANDBOX_PHASE_PROVISIONING");
  ready = r.status?.conditions.find((c) => c.type === "Ready");
  assert.equal(ready?.status, "False");
  assert.equal(ready?.reason, REASON_DISCONNECTED);
  assert.equal(signals, 2);
  assert.deepEqual(messages(h.runtime.logTopics.buffered(id)).slice(1), [
    "supervisor session connected",
    "supervisor session disconnected",
  ]);
  unsubscribe();
});

Deno.test("sessions: a Starting snapshot after the session keeps READY (backfill race)", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.registry.register(id, "s1", fakeSink());
  h.driver.emit(snapshot(id, "alpha", [cond("False", "Starting", "VM booting")]));
  await h.runtime.settled();
  const r = (await h.store.getSandbox(id))!.sandbox;
  assert.equal(r.phase, "SANDBOX_PHASE_READY");
  assert.equal(r.status?.conditions.find((c) => c.type === "Ready")?.reason, REASON_CONNECTED);
  assert.equal(r.status?.agent_pod, "", "the driver's instance id (a host pid) is not published");
});

Deno.test("sessions: ERROR is not overridden by a new session", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.emit(snapshot(id, "alpha", [cond("False", "ProcessExited", "exit 1")]));
  await h.runtime.settled();
  h.registry.register(id, "s1", fakeSink());
  await h.runtime.settled();
  assert.equal((await h.store.getSandbox(id))?.sandbox.phase, "SANDBOX_PHASE_ERROR");
});

// ---- the driver's watch --------------------------------------------------------

Deno.test("watch: a ProcessExited snapshot makes ERROR, logs it and signals watchers", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  let signals = 0;
  const unsubscribe = h.runtime.statusTopics.subscribe(id, { next: () => signals++, end() {} });
  h.driver.emit(
    snapshot(id, "alpha", [cond("False", "ProcessExited", "VM process exited with status 1")]),
  );
  await h.runtime.settled();
  const r = (await h.store.getSandbox(id))!.sandbox;
  assert.equal(r.phase, "SANDBOX_PHASE_ERROR");
  assert.equal(r.status?.conditions.find((c) => c.type === "Ready")?.reason, "ProcessExited");
  assert.equal(signals, 1);
  const last = h.runtime.logTopics.buffered(id).at(-1)!;
  assert.equal(last.level, "ERROR");
  assert.equal(last.source, "gateway");
  assert.equal(
    last.message,
    "phase PROVISIONING -> ERROR (ProcessExited: VM process exited with status 1)",
  );

  // the same snapshot again changes nothing and signals nobody
  h.driver.emit(
    snapshot(id, "alpha", [cond("False", "ProcessExited", "VM process exited with status 1")]),
  );
  await h.runtime.settled();
  assert.equal(signals, 1);
  unsubscribe();
});

Deno.test("watch: a driver 'deleted' event for a live sandbox makes ERROR DriverDeleted", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.emit({ payload: "deleted", deleted: { sandbox_id: id } });
  await h.runtime.settled();
  const r = (await h.store.getSandbox(id))!.sandbox;
  assert.equal(r.phase, "SANDBOX_PHASE_ERROR");
  assert.equal(r.status?.conditions.find((c) => c.type === "Ready")?.reason, "DriverDeleted");
});

Deno.test("watch: console platform events become console log lines", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.emit(
    platformEvent(id, { source: "console", message: "[    0.1] booting", timestamp_ms: 42 }),
  );
  const line = h.runtime.logTopics.buffered(id).at(-1)!;
  assert.equal(line.source, "console");
  assert.equal(line.target, "console");
  assert.equal(line.message, "[    0.1] booting");
  assert.equal(line.timestamp_ms, 42);
  assert.equal(line.sandbox_id, id);
  assert.deepEqual(h.runtime.eventTopics.buffered(id), [], "console lines are not events");
});

Deno.test("consoleLogLine: supervisor lines once (no second timestamp), OCSF by severity, the rest as is", () => {
  const sup = consoleLogLine(
    "sb-1",
    "2020-01-01T00:00:00.000Z WARN  openshell-sandbox: relay refused: at capacity max_relays=8 sandbox_id=sb-1",
    42,
  );
  assert.deepEqual(sup, {
    sandbox_id: "sb-1",
    timestamp_ms: 42,
    source: "console",
    level: "WARN",
    target: "openshell-sandbox",
    message: "relay refused: at capacity max_relays=8",
    fields: {},
  });
  const json = consoleLogLine(
    "sb-1",
    '{"time":"2020-01-01T00:00:00.000Z","level":"error","target":"openshell-sandbox",' +
      '"message":"boom","sandbox_id":"sb-1","n":3}',
    43,
  );
  assert.deepEqual([json.level, json.target, json.message, json.fields], [
    "ERROR",
    "openshell-sandbox",
    "boom",
    { n: "3" },
  ]);
  const ocsf = '{"class_uid":4001,"message":"relay failed channel_id=c: x","severity_id":2,' +
    '"status_id":2}';
  const event = consoleLogLine("sb-1", ocsf, 44);
  assert.deepEqual([event.level, event.target, event.message, event.source], [
    "WARN",
    "ocsf",
    ocsf,
    "console",
  ]);
  const kernel = consoleLogLine("sb-1", "[    0.1] booting", 45);
  assert.deepEqual([kernel.level, kernel.target, kernel.message], [
    "INFO",
    "console",
    "[    0.1] booting",
  ]);
  // A guest claiming to be the gateway is still a console line.
  const fake = consoleLogLine("sb-1", "2020-01-01T00:00:00.000Z ERROR gateway: all is lost", 46);
  assert.deepEqual([fake.source, fake.target], ["console", "gateway"]);
});

Deno.test("watch: other platform events go to eventTopics and the gateway log", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const seen: PlatformEvent[] = [];
  const unsubscribe = h.runtime.eventTopics.subscribe(id, { next: (e) => seen.push(e), end() {} });
  h.driver.emit(
    platformEvent(id, { source: "vm", type: "Warning", reason: "Exited", message: "status 1" }),
  );
  assert.equal(seen.length, 1);
  assert.equal(seen[0].reason, "Exited");
  assert.deepEqual(h.runtime.eventTopics.buffered(id), seen);
  const line = h.runtime.logTopics.buffered(id).at(-1)!;
  assert.equal(line.source, "gateway");
  assert.equal(line.level, "WARN");
  assert.equal(line.message, "vm Exited: status 1");
  assert.ok(!h.runtime.logTopics.buffered(id).some((l) => l.source === "console"));
  unsubscribe();
});

Deno.test("watch: reopened after it ends, followed by a reconcile", async () => {
  await using h = harness({ watchRestartMs: 5 });
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  assert.equal(h.driver.count("watch"), 1);
  h.driver.endWatch(new Error("driver went away"));
  await h.driver.until("watch", 2);
  await h.driver.until("list", 1);
  await h.runtime.settled();
  assert.ok(h.logLines.some((l) => l.includes("driver watch ended; reopening")));
  // the reconcile after the reopen saw an empty driver: the sandbox was lost
  assert.equal((await h.store.getSandbox(id))?.sandbox.phase, "SANDBOX_PHASE_ERROR");
  // events on the new watch are applied
  const { id: id2 } = await h.runtime.createSandbox({ name: "beta", spec: spec() });
  h.driver.emit(snapshot(id2, "beta", [cond("False", "ProcessExited")]));
  await h.runtime.settled();
  assert.equal((await h.store.getSandbox(id2))?.sandbox.phase, "SANDBOX_PHASE_ERROR");
});

Deno.test("watch: stop cancels the watch and an end afterwards opens none", async () => {
  // A reopen scheduled after the stop would be a timer left running when the test ends,
  // which the op sanitizer reports; the end handler logs synchronously when it reopens.
  const h = harness({ watchRestartMs: 60_000 });
  try {
    await h.runtime.stop();
    assert.equal(h.driver.watches[0].cancelled, true);
    h.driver.endWatch();
    assert.ok(!h.logLines.some((l) => l.includes("driver watch ended; reopening")));
    assert.equal(h.driver.count("watch"), 1);
  } finally {
    h.registry.close();
    h.store.close();
  }
});

Deno.test("the periodic reconcile runs on its interval", async () => {
  await using h = harness({ reconcileIntervalMs: 5 });
  await h.driver.until("list", 2);
});

// ---- delete ----------------------------------------------------------------------

Deno.test("delete: DELETING first, driver delete, session ended, record and topics gone", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const sink = fakeSink();
  h.registry.register(id, "s1", sink);
  await h.runtime.settled();
  h.runtime.logTopics.publish(id, {
    sandbox_id: id,
    timestamp_ms: 1,
    level: "INFO",
    target: "t",
    message: "m",
    source: "gateway",
    fields: {},
  });

  const ends: string[] = [];
  const signals: string[] = [];
  const unsubs = [
    h.runtime.statusTopics.subscribe(id, {
      next: () => signals.push("status"),
      end: () => ends.push("status"),
    }),
    h.runtime.logTopics.subscribe(id, { next() {}, end: () => ends.push("log") }),
    h.runtime.eventTopics.subscribe(id, { next() {}, end: () => ends.push("event") }),
  ];
  let phaseDuringDelete = "";
  h.driver.onDelete = async (sid) => {
    phaseDuringDelete = (await h.store.getSandbox(sid))?.sandbox.phase ?? "gone";
  };

  const record = (await h.store.getSandbox(id))!;
  assert.equal(await h.runtime.deleteSandbox(record), true);
  await h.runtime.settled();

  assert.equal(phaseDuringDelete, "SANDBOX_PHASE_DELETING");
  assert.deepEqual(h.driver.calls.find((c) => c.method === "delete")?.args, [id, "alpha"]);
  assert.equal(sink.stopped, 1, "the supervisor session was told to stop");
  assert.equal(h.registry.hasSession(id), false);
  assert.equal(await h.store.getSandbox(id), undefined);
  assert.deepEqual(ends.sort(), ["event", "log", "status"]);
  assert.ok(signals.length >= 1, "DELETING was published");
  assert.deepEqual(h.runtime.logTopics.buffered(id), []);
  assert.equal(h.runtime.statusTopics.subscriberCount(id), 0);
  for (const u of unsubs) u();
});

Deno.test("delete: a driver NOT_FOUND still removes the record; other errors keep it", async () => {
  await using h = harness();
  const a = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.failDelete = new StatusError(Code.NOT_FOUND, "no such VM");
  assert.equal(await h.runtime.deleteSandbox((await h.store.getSandbox(a.id))!), true);
  assert.equal(await h.store.getSandbox(a.id), undefined);

  const b = await h.runtime.createSandbox({ name: "beta", spec: spec() });
  h.driver.failDelete = new StatusError(Code.UNAVAILABLE, "driver busy");
  await assert.rejects(
    h.runtime.deleteSandbox((await h.store.getSandbox(b.id))!),
    (e: unknown) => e instanceof StatusError && e.code === Code.UNAVAILABLE,
  );
  assert.equal((await h.store.getSandbox(b.id))?.sandbox.phase, "SANDBOX_PHASE_DELETING");
});

// ---- reconcile -----------------------------------------------------------------

Deno.test("reconcile: a sandbox missing from the driver's list becomes ERROR DriverLost", async () => {
  await using h = harness();
  const kept = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const lost = await h.runtime.createSandbox({ name: "beta", spec: spec() });
  const listed = snapshot(kept.id, "alpha", [cond("False", "Starting")]);
  assert.equal(listed.payload, "sandbox");
  h.driver.listed = [listed.sandbox.sandbox!];

  await h.runtime.reconcile();
  const l = (await h.store.getSandbox(lost.id))!.sandbox;
  assert.equal(l.phase, "SANDBOX_PHASE_ERROR");
  const c = l.status?.conditions.find((x) => x.type === "Ready");
  assert.equal(c?.status, "False");
  assert.equal(c?.reason, "DriverLost");
  assert.equal(h.runtime.logTopics.buffered(lost.id).at(-1)?.level, "ERROR");
  assert.match(h.runtime.logTopics.buffered(lost.id).at(-1)!.message, /^DriverLost: /);

  const k = (await h.store.getSandbox(kept.id))!.sandbox;
  assert.equal(k.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.equal(
    k.status?.conditions.find((x) => x.type === "Ready")?.reason,
    "Starting",
    "the listed snapshot was merged",
  );

  // a second pass leaves the ERROR alone (no new log line)
  const before = h.runtime.logTopics.total(lost.id);
  await h.runtime.reconcile();
  assert.equal(h.runtime.logTopics.total(lost.id), before);
});

Deno.test("reconcile: a failing driver list changes nothing", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.list = () => Promise.reject(new Error("socket closed"));
  await h.runtime.reconcile();
  assert.equal((await h.store.getSandbox(id))?.sandbox.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.ok(h.logLines.some((l) => l.includes("reconcile: driver list failed")));
});

Deno.test("create waits for a driver that is still starting, then uses it", async () => {
  await using h = harness({ lateDriver: true });
  assert.equal(h.runtime.driverReady, false);
  const creating = h.runtime.createSandbox({ name: "early", spec: spec() });
  assert.equal(h.driver.count("create"), 0);
  h.runtime.attachDriver(h.driver);
  const sb = await creating;
  assert.equal(h.runtime.driverReady, true);
  assert.equal(h.driver.count("create"), 1);
  assert.equal((await h.store.getSandbox(sb.id))?.sandbox.name, "early");
});

Deno.test("create is UNAVAILABLE when the expected driver never comes", async () => {
  await using h = harness({ lateDriver: true, driverWaitMs: 20 });
  await assert.rejects(
    h.runtime.createSandbox({ name: "never", spec: spec() }),
    (e: unknown) => e instanceof StatusError && e.code === Code.UNAVAILABLE,
  );
  assert.equal(await h.store.countSandboxes(), 0);
});

// ---- console flood: caps on what a guest controls ------------------------------

/** V8's collector, so heap figures mean retained memory, not garbage. */
function collector(): () => void {
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
}

Deno.test("console: a 1 MiB line is kept as 8 KiB plus a marker", async () => {
  await using h = harness();
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.emit(platformEvent(id, { source: "console", message: "y".repeat(1024 * 1024) }));
  const line = h.runtime.logTopics.buffered(id).at(-1)!;
  assert.equal(
    line.message,
    "y".repeat(MAX_LINE_BYTES) + `…[truncated ${1024 * 1024 - MAX_LINE_BYTES} bytes]`,
  );
});

Deno.test("console: a flood is rate limited; one marker says how many lines were dropped", async () => {
  let now = 1_000_000;
  await using h = harness({ now: () => now });
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const before = h.runtime.logTopics.total(id);
  for (let i = 0; i < 5_000; i++) {
    h.driver.emit(platformEvent(id, { source: "console", message: `line ${i}` }));
  }
  assert.equal(h.runtime.logTopics.total(id) - before, LOG_LINE_BURST, "the burst, then nothing");
  now += 10_000;
  h.driver.emit(platformEvent(id, { source: "console", message: "after the flood" }));
  const [marker, line] = h.runtime.logTopics.buffered(id).slice(-2);
  assert.equal(marker.level, "WARN");
  assert.equal(marker.source, "console");
  assert.match(marker.message, /^3000 console lines dropped: more than 200 lines or 256 KiB/);
  assert.equal(line.message, "after the flood");
  // lines for a deleted sandbox arriving late create nothing
  await h.runtime.deleteSandbox((await h.store.getSandbox(id))!);
  h.driver.emit(platformEvent(id, { source: "console", message: "straggler" }));
  assert.deepEqual(h.runtime.logTopics.buffered(id), []);
  assert.equal(h.runtime.logTopics.totalBufferedBytes(), 0);
});

Deno.test("console flood: 400 distinct 1 MiB lines leave ≤ 1 MiB buffered and the heap bounded", async () => {
  const gc = collector();
  let now = 1_000_000;
  await using h = harness({ now: () => now });
  const { id } = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const { id: other } = await h.runtime.createSandbox({ name: "beta", spec: spec() });
  gc();
  const heapBefore = Deno.memoryUsage().heapUsed;
  for (let i = 0; i < 400; i++) {
    now += 1_000; // slow enough for the rate limit: every line is admitted
    // a fresh flat 1 MiB string each time, as a decoded protobuf message would be
    const message = `${i}:`.padEnd(1024 * 1024, String.fromCharCode(97 + (i % 26)));
    h.driver.emit(platformEvent(id, { source: "console", message }));
    if (i % 100 === 0) h.driver.emit(platformEvent(other, { source: "console", message }));
  }
  const lines = h.runtime.logTopics.buffered(id);
  assert.ok(h.runtime.logTopics.bufferedBytes(id) <= LOG_BYTES_KEPT);
  assert.equal(
    h.runtime.logTopics.bufferedBytes(id),
    lines.reduce((n, l) => n + logLineBytes(l), 0),
    "the accounting matches the lines kept",
  );
  assert.ok(lines.length >= 100, `kept ${lines.length} lines`);
  assert.ok(lines.every((l) => l.message.length <= MAX_LINE_BYTES + 40));
  assert.match(lines.at(-1)!.message, /^399:/);
  assert.ok(h.runtime.logTopics.totalBufferedBytes() <= 2 * LOG_BYTES_KEPT);
  gc();
  const grown = Deno.memoryUsage().heapUsed - heapBefore;
  // 400 MiB went through; what stays is the two rings (≤ 1 MiB of text each)
  assert.ok(grown < 16 * 1024 * 1024, `heap grew by ${(grown / 1048576).toFixed(1)} MiB`);
});

// ---- stop, start and restart reconciliation ---------------------------------

function ready(s: { status: { conditions: SandboxCondition[] } | null }): SandboxCondition {
  return s.status!.conditions.find((c) => c.type === "Ready")!;
}

async function phaseOf(h: Harness, id: string): Promise<string> {
  return (await h.store.getSandbox(id))!.sandbox.phase.replace("SANDBOX_PHASE_", "");
}

Deno.test("stop: STOPPING then STOPPED, the driver stops it, its session ends; idempotent", async () => {
  await using h = harness();
  const sb = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  const sink = fakeSink();
  h.registry.register(sb.id, "s1", sink);
  await h.runtime.settled();
  assert.equal(await phaseOf(h, sb.id), "READY");
  const seen: string[] = [];
  h.driver.onStop = async () => {
    seen.push(await phaseOf(h, sb.id));
    // the VM goes down: its session ends while the sandbox is STOPPING
    h.registry.removeIfCurrent(sb.id, "s1");
    await h.runtime.settled();
    seen.push(await phaseOf(h, sb.id));
  };
  const stopped = await h.runtime.stopSandbox((await h.store.getSandbox(sb.id))!);
  assert.deepEqual(seen, ["STOPPING", "STOPPING"], "a lost session does not demote a stop");
  assert.equal(stopped.phase, "SANDBOX_PHASE_STOPPED");
  assert.deepEqual([ready(stopped).status, ready(stopped).reason], ["False", "Stopped"]);
  assert.match(ready(stopped).message, /openshell sandbox start alpha/);
  assert.deepEqual(h.driver.calls.find((c) => c.method === "stop")!.args, [sb.id, "alpha"]);
  // stopping again asks the driver nothing
  await h.runtime.stopSandbox((await h.store.getSandbox(sb.id))!);
  assert.equal(h.driver.count("stop"), 1);
  assert.ok(
    messages(h.runtime.logTopics.buffered(sb.id)).some((m) =>
      m.startsWith("phase STOPPING -> STOPPED (Stopped: ")
    ),
  );
});

Deno.test("stopped: the driver's snapshots, reconcile and sessions leave STOPPED alone", async () => {
  await using h = harness();
  const sb = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  await h.runtime.stopSandbox((await h.store.getSandbox(sb.id))!);
  const before = (await h.store.getSandbox(sb.id))!.sandbox;
  h.driver.emit(snapshot(sb.id, "alpha", [cond("False", "ProcessExited", "exit 0")]));
  h.driver.emit(snapshot(sb.id, "alpha", [cond("False", "Stopped")]));
  const listed = snapshot(sb.id, "alpha", [cond("False", "Stopped")]);
  assert.equal(listed.payload, "sandbox");
  h.driver.listed = [listed.sandbox.sandbox!];
  await h.runtime.reconcile();
  h.registry.register(sb.id, "late", fakeSink()); // a stale supervisor of the old VM
  await h.runtime.settled();
  assert.deepEqual((await h.store.getSandbox(sb.id))!.sandbox, before, "not demoted to ERROR");
  // A stopped sandbox the driver no longer knows at all is lost, and says what to do.
  h.driver.listed = [];
  await h.runtime.reconcile();
  const lost = (await h.store.getSandbox(sb.id))!.sandbox;
  assert.equal(lost.phase, "SANDBOX_PHASE_ERROR");
  assert.match(ready(lost).message, /openshell sandbox delete alpha/);
});

Deno.test("start: STOPPED → STARTING (kept through the driver's Starting) → READY with a session", async () => {
  await using h = harness();
  const sb = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  await h.runtime.stopSandbox((await h.store.getSandbox(sb.id))!);
  const starting = await h.runtime.startSandbox((await h.store.getSandbox(sb.id))!);
  assert.equal(starting.phase, "SANDBOX_PHASE_STARTING");
  assert.deepEqual([ready(starting).reason, ready(starting).message], [
    "Starting",
    "start requested",
  ]);
  assert.deepEqual(h.driver.calls.find((c) => c.method === "start")!.args, [sb.id, "alpha"]);
  h.driver.emit(snapshot(sb.id, "alpha", [cond("False", "Starting", "VM is starting")]));
  await h.runtime.settled();
  assert.equal(await phaseOf(h, sb.id), "STARTING");
  h.registry.register(sb.id, "s2", fakeSink());
  await h.runtime.settled();
  assert.equal(await phaseOf(h, sb.id), "READY");
  // Starting a READY sandbox asks the driver nothing.
  await h.runtime.startSandbox((await h.store.getSandbox(sb.id))!);
  assert.equal(h.driver.count("start"), 1);
});

Deno.test("start/stop failures become ERROR saying what to do; start recovers an ERROR", async () => {
  await using h = harness();
  const sb = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  h.driver.failStop = new StatusError(Code.INTERNAL, "qemu hung");
  await assert.rejects(h.runtime.stopSandbox((await h.store.getSandbox(sb.id))!), /qemu hung/);
  let s = (await h.store.getSandbox(sb.id))!.sandbox;
  assert.deepEqual([s.phase, ready(s).reason], ["SANDBOX_PHASE_ERROR", "StopFailed"]);
  assert.match(ready(s).message, /qemu hung; try `openshell sandbox stop alpha` again/);
  h.driver.failStart.set("*", new StatusError(Code.FAILED_PRECONDITION, "no runtime"));
  await assert.rejects(h.runtime.startSandbox((await h.store.getSandbox(sb.id))!), /no runtime/);
  s = (await h.store.getSandbox(sb.id))!.sandbox;
  assert.deepEqual([s.phase, ready(s).reason], ["SANDBOX_PHASE_ERROR", "StartFailed"]);
  assert.match(ready(s).message, /no runtime; try `openshell sandbox start alpha` again/);
  h.driver.failStart.clear();
  const again = await h.runtime.startSandbox((await h.store.getSandbox(sb.id))!);
  assert.equal(again.phase, "SANDBOX_PHASE_STARTING", "start retries an ERROR");
  h.driver.failStart.set("*", new StatusError(Code.NOT_FOUND, "sandbox x not found"));
  h.driver.failStop = undefined;
  await h.runtime.stopSandbox((await h.store.getSandbox(sb.id))!);
  await assert.rejects(h.runtime.startSandbox((await h.store.getSandbox(sb.id))!));
  s = (await h.store.getSandbox(sb.id))!.sandbox;
  assert.equal(ready(s).reason, "DriverLost");
  assert.match(ready(s).message, /openshell sandbox delete alpha/);
});

Deno.test("stop/start: FAILED_PRECONDITION while deleting and without a driver", async () => {
  await using h = harness();
  const sb = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  await h.store.updateSandbox(sb.id, (r) => ({
    ...r,
    sandbox: { ...r.sandbox, phase: "SANDBOX_PHASE_DELETING" },
  }));
  const rec = (await h.store.getSandbox(sb.id))!;
  for (const op of [h.runtime.stopSandbox(rec), h.runtime.startSandbox(rec)]) {
    await assert.rejects(op, (e: StatusError) => {
      assert.equal(e.code, Code.FAILED_PRECONDITION);
      assert.match(e.message, /being deleted/);
      return true;
    });
  }
  await using none = harness({ driver: false });
  const byo = await none.runtime.createSandbox({ name: "byo", spec: spec() });
  await assert.rejects(
    none.runtime.stopSandbox((await none.store.getSandbox(byo.id))!),
    (e: StatusError) => e.code === Code.FAILED_PRECONDITION && /--drivers none/.test(e.message),
  );
});

Deno.test("stop and start of one sandbox run one at a time, in order", async () => {
  await using h = harness();
  const sb = await h.runtime.createSandbox({ name: "alpha", spec: spec() });
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  h.driver.onStop = () => held;
  const rec = (await h.store.getSandbox(sb.id))!;
  const stop = h.runtime.stopSandbox(rec);
  const start = h.runtime.startSandbox(rec);
  await h.driver.until("stop", 1);
  assert.equal(h.driver.count("start"), 0, "start waits for the stop");
  release();
  await stop;
  const started = await start;
  assert.equal(started.phase, "SANDBOX_PHASE_STARTING");
  assert.deepEqual(
    h.driver.calls.filter((c) => c.method === "stop" || c.method === "start")
      .map((c) => c.method),
    ["stop", "start"],
  );
});

function storedSandbox(id: string, name: string, phase: string) {
  return {
    sandbox: {
      id,
      name,
      namespace: SANDBOX_NAMESPACE,
      spec: spec(),
      status: {
        sandbox_name: name,
        agent_pod: "",
        agent_fd: "",
        sandbox_fd: "",
        conditions: [cond("True", REASON_CONNECTED)],
      },
      phase: `SANDBOX_PHASE_${phase}` as never,
      created_at_ms: 1,
      current_policy_version: 0,
    },
    secrets: {},
  };
}

function driverSandbox(id: string, name: string, reason = "Stopped"): DriverSandbox {
  const e = snapshot(id, name, [cond("False", reason)]);
  assert.ok(e.payload === "sandbox");
  return e.sandbox.sandbox!;
}

Deno.test("restart: every sandbox is brought in line with the store before the watch applies", async () => {
  await using h = harness({ startLater: true });
  h.driver.managesLifecycle = true;
  const phases: Record<string, string> = {
    run: "READY",
    prov: "PROVISIONING",
    stopped: "STOPPED",
    stopping: "STOPPING",
    failed: "ERROR",
    deleting: "DELETING",
    gone: "READY",
    broken: "READY",
  };
  for (const [id, phase] of Object.entries(phases)) {
    await h.store.createSandbox(storedSandbox(id, `n-${id}`, phase));
  }
  h.driver.listed = [
    ...Object.keys(phases).filter((id) => id !== "gone").map((id) => driverSandbox(id, `n-${id}`)),
    driverSandbox("orphan", "n-orphan"),
  ];
  h.driver.failStart.set("broken", new StatusError(Code.INTERNAL, "qemu: cannot open disk"));
  h.runtime.start();
  await h.driver.until("watch", 1);
  // the watch's first snapshots (every VM stopped) arrive before anything is started again
  for (const d of h.driver.listed) h.driver.emit({ payload: "sandbox", sandbox: { sandbox: d } });
  await h.runtime.settled();

  const started = h.driver.calls.filter((c) => c.method === "start").map((c) => c.args[0]);
  assert.deepEqual(started.sort(), ["broken", "prov", "run"]);
  assert.deepEqual(
    h.driver.calls.filter((c) => c.method === "delete").map((c) => c.args[0]).sort(),
    ["deleting", "orphan"],
    "an unfinished delete is finished; what the store does not know is removed",
  );
  assert.deepEqual(h.driver.calls.filter((c) => c.method === "stop").map((c) => c.args[0]), [
    "stopping",
  ]);
  assert.equal(await phaseOf(h, "run"), "STARTING");
  assert.equal(await phaseOf(h, "prov"), "STARTING");
  assert.equal(await phaseOf(h, "stopped"), "STOPPED");
  assert.equal(await phaseOf(h, "stopping"), "STOPPED");
  assert.equal(await phaseOf(h, "failed"), "ERROR");
  assert.equal(await h.store.getSandbox("deleting"), undefined);
  const gone = (await h.store.getSandbox("gone"))!.sandbox;
  assert.deepEqual([gone.phase, ready(gone).reason], ["SANDBOX_PHASE_ERROR", "DriverLost"]);
  assert.match(ready(gone).message, /openshell sandbox delete n-gone/);
  const broken = (await h.store.getSandbox("broken"))!.sandbox;
  assert.deepEqual([broken.phase, ready(broken).reason], ["SANDBOX_PHASE_ERROR", "StartFailed"]);
  assert.match(
    ready(broken).message,
    /after the gateway restarted: qemu: cannot open disk; try `openshell sandbox start n-broken`/,
  );
  // Its supervisor reconnects: READY again.
  h.registry.register("run", "s-new", fakeSink());
  await h.runtime.settled();
  assert.equal(await phaseOf(h, "run"), "READY");
  assert.ok(
    h.logLines.some((l) => l.includes("sandboxes resumed after a restart")),
    "one summary line",
  );
});

Deno.test("restart: nothing is started or removed for a driver that manages its own lifecycle", async () => {
  await using h = harness({ startLater: true });
  await h.store.createSandbox(storedSandbox("run", "n-run", "READY"));
  h.driver.listed = [driverSandbox("orphan", "n-orphan")];
  h.runtime.start();
  await h.driver.until("watch", 1);
  await h.runtime.settled();
  assert.equal(h.driver.count("capabilities"), 1);
  assert.equal(h.driver.count("start") + h.driver.count("delete") + h.driver.count("list"), 0);
});

Deno.test("restart: a driver attached late is resumed before its watch applies", async () => {
  await using h = harness({ lateDriver: true, startLater: true });
  h.driver.managesLifecycle = true;
  await h.store.createSandbox(storedSandbox("run", "n-run", "READY"));
  h.driver.listed = [driverSandbox("run", "n-run")];
  h.runtime.start();
  await h.runtime.settled();
  assert.equal(h.driver.count("start"), 0);
  h.runtime.attachDriver(h.driver);
  await h.driver.until("start", 1);
  await h.runtime.settled();
  assert.equal(await phaseOf(h, "run"), "STARTING");
});
