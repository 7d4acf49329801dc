/**
 * Who qemu runs as, with which limits, and what it may touch.
 *
 * When the driver runs as root, every qemu runs as a dedicated unprivileged
 * user (`--vm-user`, default `openshell-vm`; `vm:setup` and `.ci/run`
 * create it, the driver never does): the launch command is
 *
 *     setpriv --reuid=U --regid=G --init-groups --no-new-privs --pdeathsig KILL --
 *       prlimit --nofile=… --nproc=… --as=… --core=0 -- qemu …
 *
 * Both helpers `exec`, so the pid the driver holds is qemu's. `--init-groups`
 * gives qemu the user's own groups (membership in `kvm` opens `/dev/kvm`),
 * nothing of root's. A driver that is not root runs qemu as itself, still
 * with `--no-new-privs`, the parent-death signal and the limits (but no
 * process limit: that would count every process of the driver's user).
 *
 * Files (root mode): qemu's user owns only what qemu writes or reads for
 * one sandbox — its console log, pid file and fw_cfg files (0600) — inside
 * directories that stay root's (mode 0710, group = the user's group, so it
 * can reach but not list, create, rename or replace anything). The runtime
 * (kernel, initramfs, disk) is copied into `<state-dir>/runtime/` (0640
 * root:group), because the runtime dir may sit where that user cannot look
 * (root's `~/.cache`), and so that rebuilding it never changes a running
 * VM's files.
 *
 * @module
 */
import { DEFAULT_VM_USER as VM_USER, vmUserArgs } from "../core/host_setup.ts";

/** The account qemu runs as unless `--vm-user` says otherwise. */
export const DEFAULT_VM_USER: string = VM_USER;

/** A resolved account. */
export interface VmUser {
  name: string;
  uid: number;
  gid: number;
}

/** `useradd` arguments that create the account (what `vm:setup` and `testing/prepare.ts` run). */
export function createUserArgs(name: string = DEFAULT_VM_USER): string[] {
  return vmUserArgs(name);
}

/** The command line that creates the account. */
export function createUserCommand(name: string = DEFAULT_VM_USER): string {
  return ["useradd", ...createUserArgs(name)].join(" ");
}

/** Finds `name` in passwd(5) text; undefined when absent. */
export function parsePasswd(text: string, name: string): VmUser | undefined {
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || f[0] !== name) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || f[2] === "" || f[3] === "") {
      return undefined;
    }
    return { name, uid, gid };
  }
  return undefined;
}

/** A missing or unusable VM user; one-line message naming the fix. */
export class VmUserError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "VmUserError";
  }
}

/** Resolves `name` from `/etc/passwd`; refuses a missing account and root. */
export async function resolveVmUser(name: string, passwd = "/etc/passwd"): Promise<VmUser> {
  let text: string;
  try {
    text = await Deno.readTextFile(passwd);
  } catch (err) {
    throw new VmUserError(`cannot read ${passwd} to find the VM user: ${(err as Error).message}`);
  }
  const user = parsePasswd(text, name);
  if (!user) {
    throw new VmUserError(
      `qemu runs as the unprivileged user "${name}", which does not exist; create it with: ` +
        `${createUserCommand(name)} (or run deno task vm:setup as root, or pass --vm-user NAME)`,
    );
  }
  if (user.uid === 0 || user.gid === 0) {
    throw new VmUserError(
      `--vm-user ${name} has uid ${user.uid} / gid ${user.gid}; qemu must not run as root`,
    );
  }
  return user;
}

/**
 * The uid and gid this process creates files as, learnt from a file made
 * in `dir` (Deno.uid() would need `--allow-sys`).
 */
export async function ownIds(dir: string): Promise<{ uid: number; gid: number }> {
  const probe = await Deno.makeTempFile({ dir, prefix: ".ids-" });
  try {
    const info = await Deno.lstat(probe);
    return { uid: info.uid ?? -1, gid: info.gid ?? -1 };
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/** Resource limits of one qemu (prlimit; soft = hard). */
export interface VmLimits {
  /** Open files: devices, the forwarder, guest connections with `--allow-egress`. */
  nofile: number;
  /** Tasks of the VM user, all its qemus together (threads count); absent = none. */
  nproc?: number;
  /** Address space in bytes. */
  asBytes: number;
}

/** Open files per qemu; an idle TCG guest holds about 20. */
export const VM_NOFILE = 1024;
/** Tasks of the VM user across every VM (a TCG guest runs ~4-70 threads). */
export const VM_NPROC = 4096;

/**
 * Limits for a VM of `memMib` MiB and `vcpus` vCPUs. The address space is
 * the guest RAM plus 3 GiB plus 128 MiB per vCPU: qemu 7.2 under TCG with
 * 1 GiB and 2 vCPUs peaked at 2.5 GiB of address space (translation
 * buffer, thread stacks, malloc arenas), so this bounds a runaway qemu a
 * little above that.
 */
export function vmLimits(
  spec: { memMib: number; vcpus: number },
  options: { dedicatedUser: boolean },
): VmLimits {
  const mib = spec.memMib + 3072 + 128 * spec.vcpus;
  return {
    nofile: VM_NOFILE,
    nproc: options.dedicatedUser ? VM_NPROC : undefined,
    asBytes: mib * 1024 * 1024,
  };
}

/** How qemu is started: helpers and identity (Linux). */
export interface RunAs {
  /** `setpriv` (util-linux). */
  setpriv: string;
  /** `prlimit` (util-linux). */
  prlimit: string;
  /** The account qemu runs as; absent = the driver's own. */
  user?: VmUser;
}

/** The argv prefix that runs a program as {@link RunAs} with `limits` (exec chain, same pid). */
export function runAsPrefix(runAs: RunAs, limits: VmLimits): string[] {
  const lim = (name: string, v: number) => `--${name}=${v}:${v}`;
  return [
    runAs.setpriv,
    ...(runAs.user
      ? [`--reuid=${runAs.user.uid}`, `--regid=${runAs.user.gid}`, "--init-groups"]
      : []),
    "--no-new-privs",
    "--pdeathsig",
    "KILL",
    "--",
    runAs.prlimit,
    lim("nofile", limits.nofile),
    ...(limits.nproc !== undefined ? [lim("nproc", limits.nproc)] : []),
    lim("as", limits.asBytes),
    "--core=0:0",
    "--",
  ];
}

/**
 * Makes a directory reachable (not listable or writable) by the VM user:
 * group = its group, mode 0710; the owner stays.
 */
export async function shareDir(path: string, user: VmUser): Promise<void> {
  await Deno.chown(path, null, user.gid);
  await Deno.chmod(path, 0o710);
}

/** Gives a file qemu uses to the VM user, mode 0600. */
export async function giveFile(path: string, user: VmUser): Promise<void> {
  await Deno.chown(path, user.uid, user.gid);
  await Deno.chmod(path, 0o600);
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/**
 * Copies the runtime files into `dir` (0710 root:group, files 0640
 * root:group) unless an identical copy (size and mtime) is there; returns
 * the copies. A copy is written beside and renamed into place.
 */
export async function stageRuntime<K extends string>(
  source: Readonly<Record<K, string>>,
  dir: string,
  user: VmUser,
): Promise<Record<K, string>> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await shareDir(dir, user);
  const staged = {} as Record<K, string>;
  for (const [key, path] of Object.entries(source) as [K, string][]) {
    const dest = `${dir}/${path.slice(path.lastIndexOf("/") + 1)}`;
    const src = await Deno.stat(path);
    const have = await statOrNull(dest);
    const same = have !== null && have.size === src.size &&
      have.mtime?.getTime() === src.mtime?.getTime() && have.gid === user.gid;
    if (!same) {
      const tmp = `${dest}.tmp-${crypto.randomUUID().slice(0, 8)}`;
      try {
        await Deno.copyFile(path, tmp);
        await Deno.chown(tmp, null, user.gid);
        await Deno.chmod(tmp, 0o640);
        await Deno.utime(tmp, src.atime ?? new Date(), src.mtime ?? new Date());
        await Deno.rename(tmp, dest);
      } catch (err) {
        await Deno.remove(tmp).catch(() => {});
        throw err;
      }
    }
    staged[key] = dest;
  }
  return staged;
}
