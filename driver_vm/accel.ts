/**
 * Choosing the accelerator. `auto` means: hvf on macOS; on Linux kvm only
 * when a probe boot of OUR kernel under KVM reaches userspace (some hosts
 * expose `/dev/kvm` but cannot run a guest, e.g. broken nested
 * virtualisation), else tcg. The probe verdict is cached in the state dir,
 * keyed by the qemu version and the kernel's hash.
 *
 * @module
 */
import type { Accel, AccelChoice } from "./config.ts";
import { buildProbeArgs } from "./qemu.ts";
import { GUEST_LAYOUT } from "./image/init.ts";

/** Outcome of a KVM probe boot. */
export interface ProbeVerdict {
  ok: boolean;
  /** One line: how long it took, or why it failed. */
  detail: string;
}

/** What the decision depends on. */
export interface AccelFacts {
  /** `Deno.build.os`. */
  os: string;
  /** Whether `/dev/kvm` exists. */
  kvmDevice: boolean;
  /** The probe verdict, once known. */
  probe?: ProbeVerdict;
}

/** A decision, or the need to probe first. */
export type AccelDecision =
  | { kind: "decided"; accel: Accel; reason: string }
  | { kind: "probe" };

/** Pure decision (see the module docs). */
export function decideAccel(choice: AccelChoice, facts: AccelFacts): AccelDecision {
  if (choice !== "auto") {
    return { kind: "decided", accel: choice, reason: `requested with --vm-accel ${choice}` };
  }
  if (facts.os === "darwin") {
    return { kind: "decided", accel: "hvf", reason: "macOS: Hypervisor.framework" };
  }
  if (facts.os !== "linux") {
    return {
      kind: "decided",
      accel: "tcg",
      reason: `no hardware accelerator support on ${facts.os}`,
    };
  }
  if (!facts.kvmDevice) return { kind: "decided", accel: "tcg", reason: "/dev/kvm is absent" };
  if (!facts.probe) return { kind: "probe" };
  return facts.probe.ok
    ? { kind: "decided", accel: "kvm", reason: `KVM probe boot succeeded (${facts.probe.detail})` }
    : {
      kind: "decided",
      accel: "tcg",
      reason: `/dev/kvm exists but a KVM probe boot failed (${facts.probe.detail})`,
    };
}

/** How the probe runs (injected, so tests need no qemu). */
export interface ProbeOptions {
  qemu: string;
  /** What runs qemu, as for a VM (`runAsPrefix` of `vm_user.ts`); empty = qemu itself. */
  prefix: readonly string[];
  kernel: string;
  initramfs: string;
  /** Give up after this long; default 8000 ms (a KVM boot takes well under 2 s). */
  timeoutMs?: number;
}

/** Boots the kernel under KVM with `openshell.probe`; ok when the guest prints the marker. */
export async function probeKvm(options: ProbeOptions): Promise<ProbeVerdict> {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 8000;
  let child: Deno.ChildProcess;
  try {
    const [exe, ...args] = [
      ...options.prefix,
      options.qemu,
      ...buildProbeArgs({ accel: "kvm", kernel: options.kernel, initramfs: options.initramfs }),
    ];
    child = new Deno.Command(exe, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    return { ok: false, detail: `cannot start qemu: ${(err as Error).message}` };
  }
  let out = "";
  let err = "";
  const dec = new TextDecoder();
  let found = false;
  const readOut = (async () => {
    for await (const chunk of child.stdout) {
      out += dec.decode(chunk, { stream: true });
      if (!found && out.includes(GUEST_LAYOUT.probeMarker)) {
        found = true;
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      if (out.length > 65536) out = out.slice(-32768);
    }
  })();
  const readErr = (async () => {
    for await (const chunk of child.stderr) err += dec.decode(chunk, { stream: true });
  })();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  const status = await child.status;
  clearTimeout(timer);
  await Promise.all([readOut, readErr]);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (found) return { ok: true, detail: `guest userspace after ${seconds}s` };
  const lastErr = err.trim().split("\n").filter((l) => l.trim()).at(-1);
  if (lastErr) return { ok: false, detail: `qemu: ${lastErr.slice(0, 200)}` };
  if (status.signal === "SIGKILL") {
    return { ok: false, detail: `no guest output within ${seconds}s` };
  }
  return { ok: false, detail: `qemu exited with status ${status.code} before the guest ran` };
}

/** Cache file of the probe verdict. */
export function probeCachePath(stateDir: string): string {
  return `${stateDir}/accel-probe.json`;
}

/** Reads a cached verdict for `key` (undefined when missing, stale or unreadable). */
export async function readProbeCache(path: string, key: string): Promise<ProbeVerdict | undefined> {
  try {
    const data = JSON.parse(await Deno.readTextFile(path));
    if (
      data && data.key === key && typeof data.ok === "boolean" && typeof data.detail === "string"
    ) {
      return { ok: data.ok, detail: data.detail };
    }
  } catch {
    // missing or corrupt: probe again
  }
  return undefined;
}

/** Writes the verdict atomically. */
export async function writeProbeCache(path: string, key: string, v: ProbeVerdict): Promise<void> {
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify({ key, ok: v.ok, detail: v.detail }) + "\n");
  await Deno.rename(tmp, path);
}
