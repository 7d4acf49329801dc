import assert from "node:assert/strict";
import type { Sandbox } from "../../core/protocol.ts";
import { lastUsedNotice, nameTakenMessage, notReadyMessage } from "./common.ts";

function sandbox(phase: Sandbox["phase"], reason = "", message = ""): Sandbox {
  return {
    id: "sb-1",
    name: "dev",
    namespace: "",
    spec: null,
    status: {
      sandbox_name: "dev",
      agent_pod: "",
      agent_fd: "",
      sandbox_fd: "",
      conditions: reason
        ? [{ type: "Ready", status: "False", reason, message, last_transition_time: "" }]
        : [],
    },
    phase,
    created_at_ms: 0,
    current_policy_version: 0,
  };
}

Deno.test("notReadyMessage: what happened and what to do, one line per phase", () => {
  assert.equal(
    notReadyMessage(
      sandbox("SANDBOX_PHASE_ERROR", "ProcessExited", "VM process exited with status 1"),
    ),
    `sandbox "dev" failed (ProcessExited: VM process exited with status 1): see ` +
      "'openshell sandbox logs dev', delete it with 'openshell sandbox delete dev'",
  );
  assert.equal(
    notReadyMessage(sandbox("SANDBOX_PHASE_ERROR")),
    `sandbox "dev" failed (no reason given): see 'openshell sandbox logs dev', delete it with ` +
      "'openshell sandbox delete dev'",
  );
  assert.equal(
    notReadyMessage(sandbox("SANDBOX_PHASE_PROVISIONING"), "sandbox is not ready"),
    `sandbox "dev" is not ready yet (Provisioning): see 'openshell sandbox logs dev'`,
  );
  assert.equal(
    notReadyMessage(sandbox("SANDBOX_PHASE_PROVISIONING", "Starting", "VM is starting")),
    `sandbox "dev" is not ready yet (Provisioning: Starting: VM is starting): see ` +
      "'openshell sandbox logs dev'",
  );
  assert.equal(
    notReadyMessage(sandbox("SANDBOX_PHASE_DELETING")),
    `sandbox "dev" is being deleted`,
  );
  assert.equal(
    notReadyMessage(sandbox("SANDBOX_PHASE_READY"), "the SSH host key is not known yet"),
    `sandbox "dev" is not ready: the SSH host key is not known yet`,
  );
  assert.equal(
    notReadyMessage(sandbox("SANDBOX_PHASE_UNKNOWN"), "driver lost"),
    `sandbox "dev" is not ready (Unknown): driver lost`,
  );
  for (const p of ["ERROR", "PROVISIONING", "READY", "UNKNOWN", "DELETING"] as const) {
    assert.ok(!notReadyMessage(sandbox(`SANDBOX_PHASE_${p}`), "x").includes("\n"));
  }
});

Deno.test("a taken name and the last-used sandbox: the exact lines", () => {
  assert.equal(
    nameTakenMessage("dev"),
    `sandbox "dev" already exists: pick another --name, or delete it with ` +
      "'openshell sandbox delete dev'",
  );
  assert.equal(lastUsedNotice("dev"), "→ using sandbox 'dev' (last used)");
});
