import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Logger } from "../core/log.ts";
import { policyHash } from "../core/policy.ts";
import {
  type AppliedPolicy,
  type ApplyPolicyResponse,
  type EgressEvent,
  EgressProxyClient,
  type Sandbox,
  type SandboxLogLine,
  type SandboxPolicy,
  type Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { waitFor } from "../core/testing.ts";
import {
  type EgressControl,
  egressLogLine,
  EgressPolicies,
  type EgressWatchHandlers,
  GrpcEgressControl,
  MAX_EGRESS_LINE_BYTES,
} from "./egress.ts";
import { SqliteStore } from "./store.ts";

const quiet = new Logger({ level: "error", sink: () => {} });

function allow(host: string, port = 443): Wire<SandboxPolicy> {
  return { network_policies: { r: { name: "r", endpoints: [{ host, port }] } } };
}

/** An in-memory egress proxy: records calls, refuses host "refuse.invalid". */
class FakeControl implements EgressControl {
  applied: { sandboxId: string; version: number }[] = [];
  removed: string[] = [];
  enforced = new Map<string, AppliedPolicy>();
  watchers: EgressWatchHandlers[] = [];
  closed = false;
  /** Each apply waits for this (tests hold an apply in flight). */
  gate: Promise<void> = Promise.resolve();
  unavailable = false;

  async apply(sandboxId: string, version: number, policy: Wire<SandboxPolicy>) {
    await this.gate;
    if (this.unavailable) throw new StatusError(Code.UNAVAILABLE, "connection refused");
    const hosts = Object.values(policy.network_policies ?? {}).flatMap((r) =>
      (r.endpoints ?? []).map((e) => e.host)
    );
    if (hosts.includes("refuse.invalid")) {
      throw new StatusError(Code.INVALID_ARGUMENT, "endpoints[0].host: refused by the fake");
    }
    this.applied.push({ sandboxId, version });
    this.enforced.set(sandboxId, { sandbox_id: sandboxId, version, loaded_at_ms: 1000 + version });
    return { loaded_version: version, loaded_at_ms: 1000 + version } as ApplyPolicyResponse;
  }
  remove(sandboxId: string) {
    this.removed.push(sandboxId);
    this.enforced.delete(sandboxId);
    return Promise.resolve();
  }
  list() {
    return Promise.resolve([...this.enforced.values()]);
  }
  watch(handlers: EgressWatchHandlers) {
    this.watchers.push(handlers);
    return () => {
      this.watchers = this.watchers.filter((w) => w !== handlers);
    };
  }
  close() {
    this.closed = true;
  }
  emit(event: Partial<EgressEvent>) {
    for (const w of this.watchers) {
      w.event({
        sandbox_id: "",
        time_ms: 5,
        decision: "denied",
        host: "",
        port: 0,
        policy_name: "",
        ocsf_json: "",
        dropped: 0,
        ...event,
      });
    }
  }
}

function sandbox(id: string): Sandbox {
  return {
    id,
    name: id,
    namespace: "default",
    spec: null,
    status: null,
    phase: "SANDBOX_PHASE_READY",
    created_at_ms: 1,
    current_policy_version: 0,
  };
}

async function setup(ids: string[] = ["a"]) {
  const store = SqliteStore.open();
  for (const id of ids) await store.createSandbox({ sandbox: sandbox(id), secrets: {} });
  const lines: SandboxLogLine[] = [];
  const changed: string[] = [];
  const policies = new EgressPolicies({
    store,
    log: quiet,
    appendLog: (l) => lines.push(l),
    changed: (id) => changed.push(id),
    now: () => 42,
    reconcileMs: 3_600_000,
  });
  const add = (id: string, policy: Wire<SandboxPolicy>) =>
    store.addPolicyRevision(id, { hash: policyHash(policy), policy, createdAtMs: 1 });
  const close = async () => {
    await policies.close();
    store.close();
  };
  return { store, lines, changed, policies, add, close };
}

Deno.test("egress: a revision stored while detached stays PENDING; attach loads it", async () => {
  const t = await setup();
  try {
    await t.add("a", allow("pypi.org"));
    await t.policies.policyAdded("a");
    assert.equal((await t.store.getPolicyRevision("a", 1))?.status, "POLICY_STATUS_PENDING");
    const fake = new FakeControl();
    await t.policies.attach(fake);
    const rev = await t.store.getPolicyRevision("a", 1);
    assert.equal(rev?.status, "POLICY_STATUS_LOADED");
    assert.equal(rev?.loadedAtMs, 1001);
    assert.equal((await t.store.getSandbox("a"))?.sandbox.current_policy_version, 1);
    assert.deepEqual(fake.applied, [{ sandboxId: "a", version: 1 }]);
    assert.deepEqual(t.changed, ["a"]);
    assert.ok(
      t.lines.some((l) => l.message === "policy version 1 loaded" && l.source === "gateway"),
    );
  } finally {
    await t.close();
  }
});

Deno.test("egress: INVALID_ARGUMENT from the proxy makes the revision FAILED; the loaded one stays", async () => {
  const t = await setup();
  try {
    const fake = new FakeControl();
    await t.policies.attach(fake);
    await t.add("a", allow("pypi.org"));
    await t.policies.policyAdded("a");
    await t.add("a", allow("refuse.invalid"));
    await t.policies.policyAdded("a");
    const v2 = await t.store.getPolicyRevision("a", 2);
    assert.equal(v2?.status, "POLICY_STATUS_FAILED");
    assert.match(v2!.loadError, /refused by the fake/);
    assert.equal((await t.store.getPolicyRevision("a", 1))?.status, "POLICY_STATUS_LOADED");
    assert.equal((await t.store.getSandbox("a"))?.sandbox.current_policy_version, 1);
    assert.ok(t.lines.some((l) => /policy version 2 was refused/.test(l.message)));
    // An UNAVAILABLE proxy leaves a new revision PENDING (the next reconcile retries it).
    fake.unavailable = true;
    await t.add("a", allow("files.pythonhosted.org"));
    await t.policies.policyAdded("a");
    assert.equal((await t.store.getPolicyRevision("a", 3))?.status, "POLICY_STATUS_PENDING");
    fake.unavailable = false;
    await t.policies.reconcile();
    assert.equal((await t.store.getPolicyRevision("a", 3))?.status, "POLICY_STATUS_LOADED");
    assert.equal((await t.store.getSandbox("a"))?.sandbox.current_policy_version, 3);
  } finally {
    await t.close();
  }
});

Deno.test("egress: applies of one sandbox run one at a time, newest last, superseded skipped", async () => {
  const t = await setup();
  try {
    const fake = new FakeControl();
    await t.policies.attach(fake);
    const held = Promise.withResolvers<void>();
    fake.gate = held.promise;
    await t.add("a", allow("one"));
    const first = t.policies.policyAdded("a");
    await t.add("a", allow("two"));
    const second = t.policies.policyAdded("a");
    await t.add("a", allow("three"));
    const third = t.policies.policyAdded("a");
    // A reconcile meanwhile goes through the same queue.
    const reconciled = t.policies.reconcile();
    held.resolve();
    await Promise.all([first, second, third, reconciled]);
    const versions = fake.applied.map((a) => a.version);
    assert.deepEqual(versions, [...versions].sort((x, y) => x - y), "never an older after a newer");
    assert.equal(versions[0], 1);
    assert.equal(versions.at(-1), 3);
    assert.ok(!versions.includes(2));
    assert.equal((await t.store.getPolicyRevision("a", 2))?.status, "POLICY_STATUS_SUPERSEDED");
    assert.equal((await t.store.getPolicyRevision("a", 3))?.status, "POLICY_STATUS_LOADED");
  } finally {
    await t.close();
  }
});

Deno.test("egress: reconcile re-applies what a restarted proxy lacks, removes what the store lacks", async () => {
  const t = await setup(["a", "b"]);
  try {
    const first = new FakeControl();
    await t.policies.attach(first);
    await t.add("a", allow("a.example"));
    await t.add("b", allow("b.example"));
    await t.policies.policyAdded("a");
    await t.policies.policyAdded("b");
    // The proxy restarts with nothing but a sandbox the store never had.
    t.policies.detach();
    assert.equal(first.closed, true);
    const second = new FakeControl();
    second.enforced.set("ghost", { sandbox_id: "ghost", version: 9, loaded_at_ms: 1 });
    // …and already enforcing b's version 1 (a proxy that outlived its gateway).
    second.enforced.set("b", { sandbox_id: "b", version: 1, loaded_at_ms: 1 });
    await t.policies.attach(second);
    assert.deepEqual(second.applied, [{ sandboxId: "a", version: 1 }]);
    assert.deepEqual(second.removed, ["ghost"]);
    // Deleting a sandbox removes it from the proxy.
    await t.store.deleteSandbox("a");
    await t.policies.sandboxDeleted("a");
    assert.deepEqual(second.removed, ["ghost", "a"]);
  } finally {
    await t.close();
  }
});

Deno.test("egress: events become log lines of source egress for known sandboxes only", async () => {
  const t = await setup();
  try {
    const fake = new FakeControl();
    await t.policies.attach(fake);
    const ocsf = JSON.stringify({
      class_uid: 4001,
      message: "denied example.com:443",
      severity_id: 3,
      status_id: 2,
    });
    fake.emit({ sandbox_id: "a", host: "example.com", port: 443, ocsf_json: ocsf });
    fake.emit({ sandbox_id: "nobody", host: "x", port: 1, ocsf_json: ocsf });
    fake.emit({ sandbox_id: "a", decision: "allowed", host: "pypi.org", port: 443, dropped: 7 });
    const egress = () => t.lines.filter((l) => l.source === "egress");
    await waitFor("three egress lines", () => egress().length === 3);
    const [deny, dropped, plain] = egress();
    assert.equal(deny.target, "ocsf");
    assert.equal(deny.message, ocsf);
    assert.equal(deny.level, "WARN");
    assert.equal(deny.timestamp_ms, 5);
    assert.match(dropped.message, /^7 egress events dropped/);
    assert.equal(plain.message, "allowed pypi.org:443");
    assert.equal(plain.level, "INFO");
    assert.ok(t.lines.every((l) => l.sandbox_id !== "nobody"));
  } finally {
    await t.close();
  }
});

Deno.test("egressLogLine: an oversized or broken OCSF line becomes a bounded plain line", () => {
  const huge = JSON.stringify({ class_uid: 4001, message: "m".repeat(MAX_EGRESS_LINE_BYTES) });
  const line = egressLogLine({
    sandbox_id: "a",
    time_ms: 0,
    decision: "audit",
    host: "h".repeat(10_000),
    port: 80,
    policy_name: "r",
    ocsf_json: huge,
    dropped: 0,
  }, 9);
  assert.equal(line.target, "egress");
  assert.equal(line.timestamp_ms, 9);
  assert.equal(line.level, "WARN");
  assert.ok(new TextEncoder().encode(line.message).length < MAX_EGRESS_LINE_BYTES + 64);
  const broken = egressLogLine({
    sandbox_id: "a",
    time_ms: 1,
    decision: "denied",
    host: "x",
    port: 1,
    policy_name: "",
    ocsf_json: "{not json",
    dropped: 0,
  }, 9);
  assert.equal(broken.message, "denied x:1");
});

Deno.test("GrpcEgressControl: ApplyPolicy, ListPolicies, RemoveSandbox and WatchEvents on the wire", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osegr" });
  const socket = `${dir}/control.sock`;
  const seen: unknown[] = [];
  const server = new grpc.Server();
  server.addService(EgressProxyClient.service, {
    ApplyPolicy: (
      call: grpc.ServerUnaryCall<{ policy: Wire<SandboxPolicy> }, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) => {
      seen.push(call.request);
      const hosts = Object.values(call.request.policy.network_policies ?? {})
        .flatMap((r) => r.endpoints ?? []).map((e) => e.host);
      if (hosts.includes("refuse.invalid")) {
        cb({ code: Code.INVALID_ARGUMENT, details: "no such host" } as grpc.ServiceError, null);
      } else cb(null, { loaded_version: 4, loaded_at_ms: 77 });
    },
    RemoveSandbox: (
      call: grpc.ServerUnaryCall<unknown, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) => {
      seen.push(call.request);
      cb(null, {});
    },
    ListPolicies: (_c: unknown, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, { policies: [{ sandbox_id: "a", version: 4, loaded_at_ms: 77 }] }),
    WatchEvents: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      call.write({ sandbox_id: "a", decision: "denied", host: "x", port: 1, dropped: 2 });
      call.end();
    },
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix:${socket}`,
      grpc.ServerCredentials.createInsecure(),
      (e) => e ? reject(e) : resolve(),
    )
  );
  const control = new GrpcEgressControl(`unix:${socket}`);
  try {
    const res = await control.apply("a", 4, allow("pypi.org", 443));
    assert.equal(res.loaded_at_ms, 77);
    const sent = seen[0] as { sandbox_id: string; version: number; policy: Wire<SandboxPolicy> };
    assert.equal(sent.sandbox_id, "a");
    assert.equal(sent.version, 4);
    assert.equal(sent.policy.network_policies?.r.endpoints?.[0].host, "pypi.org");
    await assert.rejects(
      control.apply("a", 5, allow("refuse.invalid")),
      (e: unknown) => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT,
    );
    assert.deepEqual(await control.list(), [{ sandbox_id: "a", version: 4, loaded_at_ms: 77 }]);
    await control.remove("a");
    assert.deepEqual(seen.at(-1), { sandbox_id: "a" });
    const events: EgressEvent[] = [];
    await new Promise<void>((resolve, reject) =>
      control.watch({ event: (e) => events.push(e), end: (err) => err ? reject(err) : resolve() })
    );
    assert.equal(events.length, 1);
    assert.equal(events[0].dropped, 2);
  } finally {
    control.close();
    server.forceShutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
