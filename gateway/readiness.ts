/**
 * Gateway-owned readiness (design §5), as pure functions over the public
 * `Sandbox` resource.
 *
 * - Only the gateway sets READY: a registered supervisor session makes a
 *   sandbox READY with `Ready=True reason=SupervisorConnected`; losing it
 *   drops READY back to PROVISIONING with `Ready=False
 *   reason=SupervisorDisconnected`.
 * - ERROR and DELETING are never overridden by session changes.
 * - Drivers report progress and failures as conditions: the phase derived
 *   from them is PROVISIONING, ERROR (terminal reason) or DELETING. A driver
 *   snapshot that arrives after the session registered (the backfill race)
 *   keeps the sandbox READY.
 *
 * @module
 */
import type {
  DriverSandbox,
  DriverSandboxStatus,
  Sandbox,
  SandboxCondition,
  SandboxPhase,
} from "../core/protocol.ts";

/** Reason of the Ready condition while a supervisor session is live. */
export const REASON_CONNECTED = "SupervisorConnected";
/** Reason of the Ready condition after the session ended. */
export const REASON_DISCONNECTED = "SupervisorDisconnected";

/** Driver reasons that mean "still coming up", not failure. */
const NON_TERMINAL_REASONS = new Set(
  ["reconcilererror", "dependenciesnotready", "starting", "supervisordisconnected", "deleting"],
);

/** Whether a `Ready=False` reason reported by a driver means the sandbox failed. */
export function isTerminalReason(reason: string): boolean {
  return !NON_TERMINAL_REASONS.has(reason.trim().toLowerCase());
}

/** The phase a driver's raw status implies on its own. */
export function derivePhase(status: DriverSandboxStatus | null | undefined): SandboxPhase {
  if (!status) return "SANDBOX_PHASE_UNKNOWN";
  if (status.deleting) return "SANDBOX_PHASE_DELETING";
  const ready = status.conditions.find((c) => c.type === "Ready");
  if (!ready) return "SANDBOX_PHASE_PROVISIONING";
  if (ready.status === "True") return "SANDBOX_PHASE_READY";
  if (ready.status === "False" && isTerminalReason(ready.reason)) return "SANDBOX_PHASE_ERROR";
  return "SANDBOX_PHASE_PROVISIONING";
}

function readyCondition(connected: boolean, now: Date): SandboxCondition {
  return {
    type: "Ready",
    status: connected ? "True" : "False",
    reason: connected ? REASON_CONNECTED : REASON_DISCONNECTED,
    message: connected ? "Supervisor session connected" : "Supervisor session disconnected",
    last_transition_time: now.toISOString(),
  };
}

function withCondition(sandbox: Sandbox, condition: SandboxCondition): Sandbox {
  const status = sandbox.status ?? {
    sandbox_name: sandbox.name,
    agent_pod: "",
    agent_fd: "",
    sandbox_fd: "",
    conditions: [],
  };
  const others = status.conditions.filter((c) => c.type !== condition.type);
  return { ...sandbox, status: { ...status, conditions: [...others, condition] } };
}

/**
 * The sandbox after its supervisor session connected (`connected`) or
 * ended; undefined when nothing changes (ERROR/DELETING, or a disconnect
 * of a sandbox that was not READY).
 */
export function applySessionChange(
  sandbox: Sandbox,
  connected: boolean,
  now: Date = new Date(),
): Sandbox | undefined {
  if (sandbox.phase === "SANDBOX_PHASE_ERROR" || sandbox.phase === "SANDBOX_PHASE_DELETING") {
    return undefined;
  }
  if (connected) {
    const current = sandbox.status?.conditions.find((c) => c.type === "Ready");
    if (sandbox.phase === "SANDBOX_PHASE_READY" && current?.reason === REASON_CONNECTED) {
      return undefined;
    }
    return { ...withCondition(sandbox, readyCondition(true, now)), phase: "SANDBOX_PHASE_READY" };
  }
  if (sandbox.phase !== "SANDBOX_PHASE_READY") return undefined;
  return {
    ...withCondition(sandbox, readyCondition(false, now)),
    phase: "SANDBOX_PHASE_PROVISIONING",
  };
}

/**
 * Merges a driver snapshot into the stored sandbox. `hasSession` says
 * whether a supervisor session is live right now. Returns undefined when
 * the result equals `sandbox`.
 */
export function applyDriverSnapshot(
  sandbox: Sandbox,
  driver: DriverSandbox,
  hasSession: boolean,
  now: Date = new Date(),
): Sandbox | undefined {
  if (sandbox.phase === "SANDBOX_PHASE_DELETING") return undefined;
  const status = driver.status;
  let phase = derivePhase(status);
  let conditions = (status?.conditions ?? []).map((c) => ({ ...c }));
  const driverSaysReady = phase === "SANDBOX_PHASE_READY";
  if (driverSaysReady) phase = "SANDBOX_PHASE_PROVISIONING"; // only the gateway sets READY
  if (
    hasSession && (phase === "SANDBOX_PHASE_PROVISIONING" || phase === "SANDBOX_PHASE_UNKNOWN")
  ) {
    const existing = sandbox.status?.conditions.find((c) =>
      c.type === "Ready" && c.reason === REASON_CONNECTED
    );
    conditions = [
      ...conditions.filter((c) => c.type !== "Ready"),
      existing ?? readyCondition(true, now),
    ];
    phase = "SANDBOX_PHASE_READY";
  } else if (driverSaysReady) {
    conditions = conditions.filter((c) => c.type !== "Ready");
  }
  const next: Sandbox = {
    ...sandbox,
    phase,
    status: {
      sandbox_name: status?.sandbox_name || sandbox.status?.sandbox_name || sandbox.name,
      // Upstream's pod name. The driver's instance id stays between driver and gateway:
      // for the VM driver it is a host process id, nothing a client needs to know.
      agent_pod: "",
      agent_fd: status?.agent_fd ?? "",
      sandbox_fd: status?.sandbox_fd ?? "",
      conditions,
    },
  };
  return JSON.stringify(next) === JSON.stringify(sandbox) ? undefined : next;
}

/** Whether a phase ends a `WatchSandbox` with `stop_on_terminal`. */
export function isTerminalPhase(phase: SandboxPhase): boolean {
  return phase === "SANDBOX_PHASE_READY" || phase === "SANDBOX_PHASE_ERROR";
}

/** The Ready condition's message, for error reports ("" when none). */
export function readyMessage(sandbox: Sandbox): string {
  const c = sandbox.status?.conditions.find((x) => x.type === "Ready");
  return c ? `${c.reason}: ${c.message}` : "";
}
