/**
 * Host helpers of the image tasks: running commands, hashing, the cache
 * directory, and the host packages the VM runtime needs.
 *
 * @module
 */

/** Result of {@link run}. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Let the child write to our stdout/stderr instead of capturing. */
  inherit?: boolean;
}

/** Runs a command to completion; never throws for a non-zero exit (only when it cannot start). */
export async function run(
  cmd: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args: [...args],
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: options.inherit ? "inherit" : "piped",
    stderr: options.inherit ? "inherit" : "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: options.inherit ? "" : dec.decode(out.stdout),
    stderr: options.inherit ? "" : dec.decode(out.stderr),
  };
}

/** Runs a command and returns its stdout; throws with its stderr on failure. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  let res: RunResult;
  try {
    res = await run(cmd, args, options);
  } catch (err) {
    throw new Error(`cannot run ${cmd}: ${(err as Error).message}`);
  }
  if (res.code !== 0) {
    const detail = (res.stderr || res.stdout).trim().split("\n").slice(-5).join("\n");
    throw new Error(`${cmd} ${args.join(" ")} failed with status ${res.code}: ${detail}`);
  }
  return res.stdout;
}

/** Hex SHA-256 of bytes or text. */
export async function sha256(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A short cache key from parts (order matters). */
export async function cacheKey(parts: readonly string[]): Promise<string> {
  return (await sha256(parts.join("\n"))).slice(0, 16);
}

/** Identity of a large file without reading it: path, size and modification time. */
export async function fileStamp(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${path}:${st.size}:${st.mtime?.getTime() ?? 0}`;
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * The VM cache root: `$OPENSHELL_VM_CACHE_DIR`, else
 * `${XDG_CACHE_HOME:-$HOME/.cache}/openshell-deno/vm`.
 */
export function cacheRoot(env: (name: string) => string | undefined = Deno.env.get): string {
  const explicit = env("OPENSHELL_VM_CACHE_DIR");
  if (explicit) return explicit.replace(/\/+$/, "");
  const xdg = env("XDG_CACHE_HOME");
  const base = xdg ? xdg : `${env("HOME") ?? "/root"}/.cache`;
  return `${base.replace(/\/+$/, "")}/openshell-deno/vm`;
}

/** Whether we run as root (can use apt-get directly). */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** A host file the VM runtime needs, and the Debian package that provides it. */
export interface HostRequirement {
  path: string;
  pkg: string;
  why: string;
}

/** What the VM tasks and the driver need on the host. */
export const HOST_REQUIREMENTS: readonly HostRequirement[] = [
  { path: "/usr/bin/qemu-system-x86_64", pkg: "qemu-system-x86", why: "runs the VMs" },
  {
    path: "/usr/bin/qemu-img",
    pkg: "qemu-utils",
    why: "creates each sandbox's disk (qcow2 overlay)",
  },
  {
    path: "/usr/bin/setpriv",
    pkg: "util-linux",
    why: "runs each qemu unprivileged and tied to the driver's life",
  },
  { path: "/usr/bin/prlimit", pkg: "util-linux", why: "sets each qemu's resource limits" },
  { path: "/usr/bin/socat", pkg: "socat", why: "forwards the guest's gateway port" },
  { path: "/bin/busybox", pkg: "busybox-static", why: "the guest's init" },
  { path: "/usr/sbin/debootstrap", pkg: "debootstrap", why: "builds the Debian guest image" },
  { path: "/usr/sbin/mke2fs", pkg: "e2fsprogs", why: "writes the guest disks" },
  { path: "/usr/sbin/resize2fs", pkg: "e2fsprogs", why: "grows a guest's root to its disk" },
  { path: "/usr/bin/dpkg", pkg: "dpkg", why: "unpacks the kernel package" },
];

/** The packages whose files are missing. */
export async function missingPackages(
  reqs: readonly HostRequirement[] = HOST_REQUIREMENTS,
): Promise<string[]> {
  const missing = new Set<string>();
  for (const r of reqs) if (!(await exists(r.path))) missing.add(r.pkg);
  if (!missing.has("busybox-static") && !(await isStaticBusybox("/bin/busybox"))) {
    missing.add("busybox-static");
  }
  return [...missing];
}

/** Whether the busybox binary is statically linked (the guest has no libc for it). */
export async function isStaticBusybox(path: string): Promise<boolean> {
  try {
    const res = await run("ldd", [path]);
    return /not a dynamic executable|statically linked/.test(res.stdout + res.stderr);
  } catch {
    return false;
  }
}
