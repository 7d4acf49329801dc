import assert from "node:assert/strict";
import type {
  DriverSandbox,
  DriverSandboxStatus,
  Sandbox,
  SandboxCondition,
  SandboxPhase,
} from "../core/protocol.ts";
import {
  applyDriverSnapshot,
  applySessionChange,
  derivePhase,
  isTerminalPhase,
  isTerminalReason,
  readyMessage,
  REASON_CONNECTED,
  REASON_DISCONNECTED,
} from "./readiness.ts";

const T0 = new Date("2030-01-01T00:00:00.000Z");
const T1 = new Date("2030-01-01T00:01:00.000Z");

function cond(status: string, reason: string, message = "", time = ""): SandboxCondition {
  return { type: "Ready", status, reason, message, last_transition_time: time };
}

function driverStatus(
  conditions: SandboxCondition[],
  extra: Partial<DriverSandboxStatus> = {},
): DriverSandboxStatus {
  return {
    sandbox_name: "alpha",
    instance_id: "vm-1",
    agent_fd: "",
    sandbox_fd: "",
    conditions,
    deleting: false,
    ...extra,
  };
}

function driverSandbox(status: DriverSandboxStatus | null): DriverSandbox {
  return { id: "sb-1", name: "alpha", namespace: "default", spec: null, status };
}

function sandbox(phase: SandboxPhase, conditions: SandboxCondition[] = []): Sandbox {
  return {
    id: "sb-1",
    name: "alpha",
    namespace: "default",
    spec: null,
    status: { sandbox_name: "alpha", agent_pod: "", agent_fd: "", sandbox_fd: "", conditions },
    phase,
    created_at_ms: 1,
    current_policy_version: 0,
  };
}

function ready(s: Sandbox | undefined): SandboxCondition | undefined {
  return s?.status?.conditions.find((c) => c.type === "Ready");
}

// ---- derivePhase -------------------------------------------------------------

Deno.test("derivePhase: no status is UNKNOWN, deleting wins over conditions", () => {
  assert.equal(derivePhase(null), "SANDBOX_PHASE_UNKNOWN");
  assert.equal(derivePhase(undefined), "SANDBOX_PHASE_UNKNOWN");
  assert.equal(
    derivePhase(driverStatus([cond("True", "Running")], { deleting: true })),
    "SANDBOX_PHASE_DELETING",
  );
});

Deno.test("derivePhase: Ready=True is READY; no Ready condition is PROVISIONING", () => {
  assert.equal(derivePhase(driverStatus([cond("True", "Running")])), "SANDBOX_PHASE_READY");
  assert.equal(derivePhase(driverStatus([])), "SANDBOX_PHASE_PROVISIONING");
  assert.equal(
    derivePhase(driverStatus([{ ...cond("True", "x"), type: "Scheduled" }])),
    "SANDBOX_PHASE_PROVISIONING",
  );
});

Deno.test("derivePhase: Ready=False is ERROR only for terminal reasons (case-insensitive)", () => {
  for (
    const reason of ["Starting", "starting", " DependenciesNotReady ", "ReconcilerError"]
  ) {
    assert.equal(
      derivePhase(driverStatus([cond("False", reason)])),
      "SANDBOX_PHASE_PROVISIONING",
      reason,
    );
  }
  for (const reason of ["ProcessExited", "ProcessPollFailed", "ImagePullFailed", ""]) {
    assert.equal(derivePhase(driverStatus([cond("False", reason)])), "SANDBOX_PHASE_ERROR", reason);
  }
  // an Unknown status is still coming up, whatever the reason
  assert.equal(
    derivePhase(driverStatus([cond("Unknown", "ProcessExited")])),
    "SANDBOX_PHASE_PROVISIONING",
  );
  assert.equal(isTerminalReason("ProcessExited"), true);
  assert.equal(isTerminalReason("STARTING"), false);
});

// ---- applySessionChange ------------------------------------------------------

Deno.test("applySessionChange: connect makes READY with Ready=True SupervisorConnected", () => {
  const before = sandbox("SANDBOX_PHASE_PROVISIONING", [
    cond("False", "Starting", "booting"),
    { ...cond("True", "x"), type: "Scheduled" },
  ]);
  const after = applySessionChange(before, true, T0);
  assert.ok(after);
  assert.equal(after.phase, "SANDBOX_PHASE_READY");
  assert.deepEqual(ready(after), {
    type: "Ready",
    status: "True",
    reason: REASON_CONNECTED,
    message: "Supervisor session connected",
    last_transition_time: T0.toISOString(),
  });
  // the Ready condition is replaced, not duplicated; others are kept
  assert.equal(after.status?.conditions.filter((c) => c.type === "Ready").length, 1);
  assert.ok(after.status?.conditions.some((c) => c.type === "Scheduled"));
  // the input is not mutated
  assert.equal(before.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.equal(ready(before)?.reason, "Starting");
});

Deno.test("applySessionChange: connect creates a status when there is none", () => {
  const after = applySessionChange(
    { ...sandbox("SANDBOX_PHASE_PROVISIONING"), status: null },
    true,
  );
  assert.equal(after?.phase, "SANDBOX_PHASE_READY");
  assert.equal(after?.status?.sandbox_name, "alpha");
  assert.equal(ready(after)?.reason, REASON_CONNECTED);
});

Deno.test("applySessionChange: disconnect from READY demotes with SupervisorDisconnected", () => {
  const readySb = applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), true, T0)!;
  const after = applySessionChange(readySb, false, T1);
  assert.ok(after);
  assert.equal(after.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.equal(ready(after)?.status, "False");
  assert.equal(ready(after)?.reason, REASON_DISCONNECTED);
  assert.equal(ready(after)?.last_transition_time, T1.toISOString());
  assert.equal(after.status?.conditions.length, 1);
});

Deno.test("applySessionChange: ERROR and DELETING are never overridden", () => {
  for (const phase of ["SANDBOX_PHASE_ERROR", "SANDBOX_PHASE_DELETING"] as const) {
    const s = sandbox(phase, [cond("False", "ProcessExited")]);
    assert.equal(applySessionChange(s, true), undefined, `${phase} connect`);
    assert.equal(applySessionChange(s, false), undefined, `${phase} disconnect`);
  }
});

Deno.test("applySessionChange: no-op cases return undefined", () => {
  // already READY through a session
  const readySb = applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), true, T0)!;
  assert.equal(applySessionChange(readySb, true, T1), undefined);
  // a disconnect of a sandbox that was not READY
  assert.equal(applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), false), undefined);
  assert.equal(applySessionChange(sandbox("SANDBOX_PHASE_UNKNOWN"), false), undefined);
  // READY but with a foreign Ready reason: a connect rewrites it
  const foreign = sandbox("SANDBOX_PHASE_READY", [cond("True", "Running")]);
  assert.equal(ready(applySessionChange(foreign, true))?.reason, REASON_CONNECTED);
});

// ---- applyDriverSnapshot -----------------------------------------------------

Deno.test("applyDriverSnapshot: a Starting snapshot after the session keeps READY (backfill race)", () => {
  const readySb = applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), true, T0)!;
  // Nothing to change (undefined): the session's READY stands.
  const after = applyDriverSnapshot(
    readySb,
    driverSandbox(driverStatus([cond("False", "Starting", "VM booting")])),
    true,
    T1,
  ) ?? readySb;
  assert.equal(after.phase, "SANDBOX_PHASE_READY");
  const c = ready(after);
  assert.equal(c?.status, "True");
  assert.equal(c?.reason, REASON_CONNECTED);
  // the existing condition is kept, transition time included
  assert.equal(c?.last_transition_time, T0.toISOString());
  assert.equal(after.status?.conditions.filter((x) => x.type === "Ready").length, 1);
  assert.equal(
    after.status?.agent_pod,
    "",
    "the driver's instance id (a host pid) is not published",
  );
});

Deno.test("applyDriverSnapshot: a session and an UNKNOWN driver status make READY", () => {
  const after = applyDriverSnapshot(
    sandbox("SANDBOX_PHASE_PROVISIONING"),
    driverSandbox(null),
    true,
    T1,
  );
  assert.equal(after?.phase, "SANDBOX_PHASE_READY");
  assert.equal(ready(after)?.reason, REASON_CONNECTED);
  assert.equal(ready(after)?.last_transition_time, T1.toISOString());
});

Deno.test("applyDriverSnapshot: a terminal driver reason is ERROR even with a session", () => {
  const readySb = applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), true, T0)!;
  const after = applyDriverSnapshot(
    readySb,
    driverSandbox(
      driverStatus([cond("False", "ProcessExited", "VM process exited with status 1")]),
    ),
    true,
  );
  assert.equal(after?.phase, "SANDBOX_PHASE_ERROR");
  assert.equal(ready(after)?.reason, "ProcessExited");
  assert.equal(ready(after)?.message, "VM process exited with status 1");
  assert.equal(readyMessage(after!), "ProcessExited: VM process exited with status 1");
});

Deno.test("applyDriverSnapshot: driver Ready=True never yields READY without a session", () => {
  const before = sandbox("SANDBOX_PHASE_PROVISIONING");
  const after = applyDriverSnapshot(
    before,
    driverSandbox(driverStatus([cond("True", "Running", "VM up")])),
    false,
  ) ?? before;
  assert.equal(after.phase, "SANDBOX_PHASE_PROVISIONING");
  // the driver's Ready=True is dropped, so nothing claims readiness
  assert.equal(ready(after), undefined);

  // with a session it is READY, but by the gateway's condition, not the driver's
  const withSession = applyDriverSnapshot(
    sandbox("SANDBOX_PHASE_PROVISIONING"),
    driverSandbox(driverStatus([cond("True", "Running", "VM up")])),
    true,
  );
  assert.equal(withSession?.phase, "SANDBOX_PHASE_READY");
  assert.equal(ready(withSession)?.reason, REASON_CONNECTED);
});

Deno.test("applyDriverSnapshot: a stored DELETING sandbox is untouched", () => {
  const s = sandbox("SANDBOX_PHASE_DELETING");
  for (const hasSession of [true, false]) {
    assert.equal(
      applyDriverSnapshot(
        s,
        driverSandbox(driverStatus([cond("False", "ProcessExited")])),
        hasSession,
      ),
      undefined,
    );
    assert.equal(
      applyDriverSnapshot(s, driverSandbox(driverStatus([cond("True", "Running")])), hasSession),
      undefined,
    );
  }
});

Deno.test("applyDriverSnapshot: the driver's deleting flag wins over a session", () => {
  const readySb = applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), true, T0)!;
  const after = applyDriverSnapshot(
    readySb,
    driverSandbox(driverStatus([], { deleting: true })),
    true,
  );
  assert.equal(after?.phase, "SANDBOX_PHASE_DELETING");
});

Deno.test("applyDriverSnapshot: an identical snapshot is undefined (no write, no publish)", () => {
  const snap = driverSandbox(driverStatus([cond("False", "Starting", "booting", "t")]));
  const first = applyDriverSnapshot(sandbox("SANDBOX_PHASE_PROVISIONING"), snap, false);
  assert.ok(first);
  assert.equal(first.phase, "SANDBOX_PHASE_PROVISIONING");
  assert.equal(applyDriverSnapshot(first, snap, false), undefined);

  const readySb = applySessionChange(sandbox("SANDBOX_PHASE_PROVISIONING"), true, T0)!;
  const merged = applyDriverSnapshot(readySb, snap, true, T1) ?? readySb;
  assert.equal(applyDriverSnapshot(merged, snap, true, T1), undefined);
});

// ---- isTerminalPhase ---------------------------------------------------------

Deno.test("isTerminalPhase: READY and ERROR end a stop_on_terminal watch", () => {
  assert.equal(isTerminalPhase("SANDBOX_PHASE_READY"), true);
  assert.equal(isTerminalPhase("SANDBOX_PHASE_ERROR"), true);
  for (
    const p of [
      "SANDBOX_PHASE_PROVISIONING",
      "SANDBOX_PHASE_DELETING",
      "SANDBOX_PHASE_UNKNOWN",
      "SANDBOX_PHASE_UNSPECIFIED",
    ] as const
  ) {
    assert.equal(isTerminalPhase(p), false, p);
  }
});

Deno.test("readyMessage: empty without a Ready condition", () => {
  assert.equal(readyMessage(sandbox("SANDBOX_PHASE_PROVISIONING")), "");
  assert.equal(readyMessage({ ...sandbox("SANDBOX_PHASE_PROVISIONING"), status: null }), "");
});
