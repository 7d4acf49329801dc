/**
 * `deno task vm:setup`: makes the host ready to run VM sandboxes.
 *
 * - Installs the host packages (qemu, qemu-utils, socat, busybox-static,
 *   debootstrap, e2fsprogs …: `HOST_PACKAGES` in `core/host_setup.ts`) with
 *   apt-get when they are missing and we are root; otherwise prints the
 *   exact command and fails.
 * - Fetches Debian's cloud kernel package (`apt-get download`, unpacked with
 *   `dpkg -x`, never installed) into the cache, keyed by package and version.
 * - Creates the system user qemu runs as (`openshell-vm`) when we are root,
 *   and adds it to the `kvm` group when there is one.
 *
 * Idempotent: a second run finds everything in place and does no work.
 *
 * @module
 */
import { ensureHost } from "../../core/host_setup.ts";
import { createUserArgs, createUserCommand, DEFAULT_VM_USER } from "../vm_user.ts";
import { cacheRoot, exists, isRoot, run, runOk } from "./host.ts";

/** The metapackage naming the current cloud kernel. */
export const KERNEL_METAPACKAGE = "linux-image-cloud-amd64";

/** A kernel in the cache. */
export interface KernelInfo {
  /** Package name, e.g. `linux-image-6.1.0-56-cloud-amd64`. */
  pkg: string;
  /** Package version. */
  version: string;
  /** Cache directory holding `vmlinuz` and `modules/`. */
  dir: string;
  /** The kernel image. */
  vmlinuz: string;
  /** `lib/modules/<release>` of the package. */
  modulesDir: string;
}

function say(line: string): void {
  console.error(`vm:setup: ${line}`);
}

/**
 * Installs missing host packages (`core/host_setup.ts`, the ones the VM
 * runtime needs) when root, or throws with the exact command to run.
 */
export async function ensureHostPackages(): Promise<void> {
  await ensureHost("vm", { packagesOnly: true, root: isRoot(), log: say });
}

/** Parses `apt-cache depends` output for the kernel image package. */
export function parseKernelDepends(text: string): string | undefined {
  return /Depends:\s*(linux-image-[0-9][^\s<>]*)/.exec(text)?.[1];
}

/** Parses `apt-cache policy` output for the candidate version. */
export function parseCandidate(text: string): string | undefined {
  const v = /Candidate:\s*(\S+)/.exec(text)?.[1];
  return v && v !== "(none)" ? v : undefined;
}

async function resolveKernelPackage(): Promise<{ pkg: string; version: string } | undefined> {
  const deps = await run("apt-cache", ["depends", "--no-recommends", KERNEL_METAPACKAGE]).catch(
    () => undefined,
  );
  const pkg = deps ? parseKernelDepends(deps.stdout) : undefined;
  if (!pkg) return undefined;
  const policy = await run("apt-cache", ["policy", pkg]);
  const version = parseCandidate(policy.stdout);
  return version ? { pkg, version } : undefined;
}

function kernelDirName(pkg: string, version: string): string {
  return `kernel-${pkg}_${version.replace(/[^A-Za-z0-9.+~-]/g, "_")}`;
}

function kernelInfo(root: string, pkg: string, version: string): KernelInfo {
  const dir = `${root}/${kernelDirName(pkg, version)}`;
  const release = pkg.replace(/^linux-image-/, "");
  return {
    pkg,
    version,
    dir,
    vmlinuz: `${dir}/vmlinuz`,
    modulesDir: `${dir}/modules/${release}`,
  };
}

async function newestCachedKernel(root: string): Promise<KernelInfo | undefined> {
  const found: { name: string; mtime: number }[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (!e.isDirectory || !e.name.startsWith("kernel-")) continue;
      if (!(await exists(`${root}/${e.name}/.complete`))) continue;
      const st = await Deno.stat(`${root}/${e.name}`);
      found.push({ name: e.name, mtime: st.mtime?.getTime() ?? 0 });
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  found.sort((a, b) => b.mtime - a.mtime);
  const best = found[0];
  if (!best) return undefined;
  const m = /^kernel-(linux-image-[^_]+)_(.+)$/.exec(best.name);
  return m ? kernelInfo(root, m[1], m[2]) : undefined;
}

/** apt's own package cache, used when the download fails but apt has the file. */
const APT_ARCHIVES = "/var/cache/apt/archives";

/** Downloads `pkg=version` into `dir` (or finds it in apt's cache); returns the .deb path. */
async function downloadDeb(pkg: string, version: string, dir: string): Promise<string> {
  const aptArgs = isRoot() ? ["-o", "APT::Sandbox::User=root"] : [];
  let res = { code: 0, stdout: "", stderr: "" };
  // Mirrors (and DNS) fail now and then: three tries, a few seconds apart.
  for (const waitMs of [0, 3000, 10000]) {
    if (waitMs) {
      say(`apt-get download failed; retrying in ${waitMs / 1000}s`);
      await new Promise((r) => setTimeout(r, waitMs));
    }
    res = await run("apt-get", [...aptArgs, "download", `${pkg}=${version}`], { cwd: dir });
    for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".deb")) return `${dir}/${e.name}`;
  }
  const cached = `${APT_ARCHIVES}/${pkg}_${version.replace(":", "%3a")}_amd64.deb`;
  if (await exists(cached)) return cached;
  const detail = (res.stderr || res.stdout).trim().split("\n").slice(-3).join("\n");
  throw new Error(`apt-get download ${pkg}=${version} failed (status ${res.code}): ${detail}`);
}

/**
 * The cloud kernel in the cache, fetched on first use. Prefers the
 * version apt offers now; falls back to the newest cached kernel when apt
 * has no package lists (offline).
 */
export async function ensureKernel(root: string = cacheRoot()): Promise<KernelInfo> {
  let resolved = await resolveKernelPackage();
  if (!resolved) {
    const cached = await newestCachedKernel(root);
    if (cached) return cached;
    if (!isRoot()) {
      throw new Error(
        `apt knows no ${KERNEL_METAPACKAGE}; run: sudo apt-get update (then deno task vm:setup)`,
      );
    }
    say("apt has no kernel package lists yet: apt-get update");
    await runOk("apt-get", ["update", "-qq"], { inherit: true });
    resolved = await resolveKernelPackage();
    if (!resolved) throw new Error(`apt-get update did not make ${KERNEL_METAPACKAGE} available`);
  }
  const info = kernelInfo(root, resolved.pkg, resolved.version);
  if (await exists(`${info.dir}/.complete`)) return info;

  say(`fetching ${resolved.pkg} ${resolved.version}`);
  await Deno.mkdir(root, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: root, prefix: ".kernel-tmp-" });
  try {
    const deb = await downloadDeb(resolved.pkg, resolved.version, tmp);
    await runOk("dpkg", ["-x", deb, `${tmp}/x`]);
    const release = resolved.pkg.replace(/^linux-image-/, "");
    const out = `${tmp}/out`;
    await Deno.mkdir(`${out}/modules`, { recursive: true });
    await Deno.rename(`${tmp}/x/boot/vmlinuz-${release}`, `${out}/vmlinuz`);
    await Deno.rename(`${tmp}/x/lib/modules/${release}`, `${out}/modules/${release}`);
    await Deno.writeTextFile(`${out}/.complete`, `${resolved.pkg} ${resolved.version}\n`);
    await Deno.remove(info.dir, { recursive: true }).catch(() => {});
    await Deno.rename(out, info.dir);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return info;
}

/**
 * The account the driver runs qemu as when it is root: created (root only)
 * when missing, and put in the `kvm` group (for `/dev/kvm`) when that exists.
 * Not root: nothing to do (the driver then runs qemu as its own user).
 */
export async function ensureVmUser(name: string = DEFAULT_VM_USER): Promise<void> {
  const known = (await run("getent", ["passwd", name])).code === 0;
  if (!isRoot()) {
    if (!known) say(`note: a root driver needs the user ${name}: sudo ${createUserCommand(name)}`);
    return;
  }
  if (!known) {
    say(`creating the system user ${name} (qemu runs as it)`);
    await runOk("useradd", createUserArgs(name));
  }
  const kvm = await run("getent", ["group", "kvm"]);
  const members = kvm.stdout.trim().split(":")[3]?.split(",") ?? [];
  if (kvm.code === 0 && !members.includes(name)) {
    say(`adding ${name} to the kvm group (/dev/kvm)`);
    await runOk("usermod", ["-a", "-G", "kvm", name]);
  }
}

/** Runs the whole setup; returns the kernel. */
export async function setup(): Promise<KernelInfo> {
  await ensureHostPackages();
  await ensureVmUser();
  const kernel = await ensureKernel();
  return kernel;
}

if (import.meta.main) {
  try {
    const k = await setup();
    say(`ok: host packages present; kernel ${k.pkg} ${k.version} in ${k.dir}`);
  } catch (err) {
    say(`error: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
