import assert from "node:assert/strict";
import { Logger } from "../core/log.ts";
import type { AppliedPolicy, ApplyPolicyResponse, SandboxPolicy, Wire } from "../core/protocol.ts";
import { alive, waitFor } from "../core/testing.ts";
import { type EgressControl, EgressPolicies } from "./egress.ts";
import { startEgressProcess } from "./egress_process.ts";
import { SqliteStore } from "./store.ts";

/** A control that answers like an empty proxy and records applies. */
class Recorder implements EgressControl {
  applied: number[] = [];
  closed = false;
  apply(_id: string, version: number, _p: Wire<SandboxPolicy>): Promise<ApplyPolicyResponse> {
    this.applied.push(version);
    return Promise.resolve({ loaded_version: version, loaded_at_ms: 1 });
  }
  remove(): Promise<void> {
    return Promise.resolve();
  }
  list(): Promise<AppliedPolicy[]> {
    return Promise.resolve([]);
  }
  watch(): () => void {
    return () => {};
  }
  close(): void {
    this.closed = true;
  }
}

Deno.test("egress process: restarted with backoff when it exits; policies applied again; stop leaves nothing", async () => {
  const store = SqliteStore.open();
  const dir = await Deno.makeTempDir({ prefix: "osegp" });
  const lines: string[] = [];
  const log = new Logger({ level: "info", sink: (l) => lines.push(l) });
  const policies = new EgressPolicies({ store, log, appendLog: () => {} });
  const controls: Recorder[] = [];
  await store.createSandbox({
    sandbox: {
      id: "a",
      name: "a",
      namespace: "default",
      spec: null,
      status: null,
      phase: "SANDBOX_PHASE_READY",
      created_at_ms: 1,
      current_policy_version: 0,
    },
    secrets: {},
  });
  await store.addPolicyRevision("a", { hash: "h", policy: {}, createdAtMs: 1 });
  // A stand-in process (the real proxy is tested end to end elsewhere).
  const proc = await startEgressProcess({
    binary: "/bin/sh",
    args: ["-c", "echo egress up; exec sleep 600"],
    controlSocket: `${dir}/control.sock`,
    policies,
    log,
    backoff: { initialMs: 10, maxMs: 20 },
    connect: () => {
      const c = new Recorder();
      controls.push(c);
      return c;
    },
  });
  try {
    await waitFor("the first proxy applied version 1", () => controls[0]?.applied.length === 1);
    const first = proc.pid;
    Deno.kill(first, "SIGKILL");
    await waitFor("a restart", () => proc.starts === 2, { timeoutMs: 10_000 });
    assert.notEqual(proc.pid, first);
    assert.equal(controls[0].closed, true, "the dead proxy's client is closed");
    // The restarted proxy got the sandbox's policy again.
    await waitFor("re-applied", () => controls.at(-1)!.applied.length === 1);
    assert.ok(lines.some((l) => /egress proxy exited with status/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => l.includes("egress up") && l.includes("component=egress")));
  } finally {
    const pid = proc.pid;
    await proc.stop();
    assert.equal(await alive(pid), false);
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A control whose proxy never answers. */
class Unanswering extends Recorder {
  override list(): Promise<AppliedPolicy[]> {
    return Promise.reject(new Error("no socket"));
  }
}

Deno.test("egress process: a first start that exits is an error, nothing left running", async () => {
  const store = SqliteStore.open();
  const log = new Logger({ level: "error", sink: () => {} });
  try {
    await assert.rejects(
      startEgressProcess({
        binary: "/bin/sh",
        args: ["-c", "exit 4"],
        controlSocket: "/nonexistent/control.sock",
        policies: new EgressPolicies({ store, log, appendLog: () => {} }),
        log,
        connect: () => new Unanswering(),
      }),
      /egress proxy exited with status 4 before it was ready/,
    );
  } finally {
    store.close();
  }
});
