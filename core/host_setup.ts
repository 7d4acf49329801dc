/**
 * What the host needs, in one table: the Debian packages whose programs the
 * tests, the image tasks and the VM driver spawn, and the accounts they use.
 * `testing/prepare.ts` (run first by `deno task test`), `deno task vm:setup`
 * and `.ci/run` all read it from here.
 *
 * A package counts as present when its files are (no `dpkg-query` per
 * package: checking the whole table takes a few milliseconds). Installing
 * needs root and `apt-get`; without them the caller gets one line naming
 * the command to run.
 *
 * @module
 */

/** Who needs a package or account: the VM runtime (`vm:setup`, the driver) or the tests. */
export type HostNeed = "vm" | "test";

/** A Debian package and the files that show it is installed. */
export interface HostPackage {
  /** Debian package name. */
  pkg: string;
  /** Files it provides that we use; all must exist. */
  files: readonly string[];
  /** What it is for (docs, messages). */
  why: string;
  /** Who needs it. */
  for: readonly HostNeed[];
}

/** Every host package, once. */
export const HOST_PACKAGES: readonly HostPackage[] = [
  {
    pkg: "qemu-system-x86",
    files: ["/usr/bin/qemu-system-x86_64"],
    why: "runs the VMs",
    for: ["vm", "test"],
  },
  {
    pkg: "qemu-utils",
    files: ["/usr/bin/qemu-img"],
    why: "creates each sandbox's disk (qcow2 overlay)",
    for: ["vm", "test"],
  },
  {
    pkg: "debootstrap",
    files: ["/usr/sbin/debootstrap"],
    why: "builds the Debian guest images",
    for: ["vm", "test"],
  },
  {
    pkg: "util-linux",
    files: ["/usr/bin/setpriv", "/usr/bin/prlimit"],
    why: "runs each qemu unprivileged, limited and tied to the driver's life",
    for: ["vm", "test"],
  },
  {
    pkg: "socat",
    files: ["/usr/bin/socat"],
    why: "forwards a guest's gateway connections",
    for: ["vm", "test"],
  },
  {
    pkg: "busybox-static",
    files: ["/bin/busybox"],
    why: "the guest's userland (must be static)",
    for: ["vm", "test"],
  },
  {
    pkg: "openssh-server",
    files: ["/usr/sbin/sshd"],
    why: "the sandbox's sshd",
    for: ["vm", "test"],
  },
  {
    pkg: "openssh-sftp-server",
    files: ["/usr/lib/openssh/sftp-server"],
    why: "sftp in the sandbox",
    for: ["vm", "test"],
  },
  {
    pkg: "openssh-client",
    files: ["/usr/bin/ssh", "/usr/bin/sftp", "/usr/bin/ssh-keygen"],
    why: "the CLI's ssh and the tests' clients",
    for: ["test"],
  },
  {
    pkg: "e2fsprogs",
    files: ["/usr/sbin/mke2fs", "/usr/sbin/resize2fs"],
    why: "writes the guest images; grows a guest's root to its disk",
    for: ["vm", "test"],
  },
  { pkg: "dpkg", files: ["/usr/bin/dpkg"], why: "unpacks the kernel package", for: ["vm", "test"] },
  { pkg: "cpio", files: ["/bin/cpio"], why: "checks the initramfs writer", for: ["test"] },
  { pkg: "zstd", files: ["/usr/bin/zstd"], why: "compressed kernel modules", for: ["test"] },
  { pkg: "xz-utils", files: ["/usr/bin/xz"], why: "compressed kernel modules", for: ["test"] },
  { pkg: "kmod", files: ["/bin/kmod"], why: "kernel module tools", for: ["test"] },
  { pkg: "tmux", files: ["/usr/bin/tmux"], why: "the interactive CLI test", for: ["test"] },
  { pkg: "rsync", files: ["/usr/bin/rsync"], why: "the e2e's copy into a sandbox", for: ["test"] },
  { pkg: "procps", files: ["/usr/bin/pgrep", "/bin/kill"], why: "process checks", for: ["test"] },
  { pkg: "openssl", files: ["/usr/bin/openssl"], why: "TLS test fixtures", for: ["test"] },
  {
    pkg: "python3-grpcio",
    files: ["/usr/bin/python3", "/usr/lib/python3/dist-packages/grpc/__init__.py"],
    why: "the upstream-client test: Debian's python3 with gRPC (testing/upstream_client.py)",
    for: ["test"],
  },
  {
    pkg: "python3-grpc-tools",
    files: ["/usr/lib/python3/dist-packages/grpc_tools/protoc.py"],
    why: "protoc and the gRPC plugin that make Python stubs of upstream's protos",
    for: ["test"],
  },
  {
    pkg: "ca-certificates",
    files: ["/etc/ssl/certs/ca-certificates.crt"],
    why: "apt and downloads over https",
    for: ["test"],
  },
];

/** The account qemu runs as when the driver is root. */
export const DEFAULT_VM_USER = "openshell-vm";

/** `useradd` arguments that create the VM user (a system account without a home or shell). */
export function vmUserArgs(name: string = DEFAULT_VM_USER): string[] {
  return [
    "--system",
    "--no-create-home",
    "--home-dir",
    "/nonexistent",
    "--shell",
    "/usr/sbin/nologin",
    name,
  ];
}

/** An account the host needs. */
export interface HostUser {
  name: string;
  /** `useradd` arguments (the name last). */
  useradd: readonly string[];
  /** Its password must be empty (`passwd -d`): logins happen only through sshd -i. */
  emptyPassword?: boolean;
  /** A group it joins when the group exists (`kvm` opens /dev/kvm). */
  joinGroup?: string;
  why: string;
  for: readonly HostNeed[];
}

/** Every host account, once. */
export const HOST_USERS: readonly HostUser[] = [
  {
    name: "sshd",
    useradd: [
      "--system",
      "--no-create-home",
      "--home-dir",
      "/run/sshd",
      "--shell",
      "/usr/sbin/nologin",
      "sshd",
    ],
    why: "OpenSSH's privilege separation (sshd -i)",
    for: ["test"],
  },
  {
    name: "sandbox",
    useradd: ["--create-home", "--shell", "/bin/bash", "sandbox"],
    emptyPassword: true,
    why: "the user the tests' host supervisors log in as, as inside a VM",
    for: ["test"],
  },
  {
    name: DEFAULT_VM_USER,
    useradd: vmUserArgs(),
    joinGroup: "kvm",
    why: "qemu's unprivileged account under a root driver",
    for: ["vm", "test"],
  },
];

/** Directories sshd -i needs (mode). */
export const HOST_DIRS: readonly { path: string; mode: number; for: readonly HostNeed[] }[] = [
  { path: "/run/sshd", mode: 0o755, for: ["test"] },
];

/** How the checks look at the host (tests substitute them). */
export interface HostProbe {
  /** Whether a path exists. */
  exists(path: string): Promise<boolean>;
  /** A file's first bytes (ELF headers); undefined when unreadable. */
  head(path: string, bytes: number): Promise<Uint8Array | undefined>;
  /** A text file (`/etc/passwd`, `/etc/group`, `/etc/shadow`); undefined when unreadable. */
  text(path: string): Promise<string | undefined>;
}

/** The real host. */
export const REAL_HOST: HostProbe = {
  async exists(path) {
    try {
      await Deno.stat(path);
      return true;
    } catch {
      return false;
    }
  },
  async head(path, bytes) {
    try {
      using f = await Deno.open(path);
      const buf = new Uint8Array(bytes);
      let off = 0;
      while (off < bytes) {
        const n = await f.read(buf.subarray(off));
        if (n === null) break;
        off += n;
      }
      return buf.subarray(0, off);
    } catch {
      return undefined;
    }
  },
  async text(path) {
    try {
      return await Deno.readTextFile(path);
    } catch {
      return undefined;
    }
  },
};

/**
 * Whether ELF bytes (the first 4 KiB of a file) are a statically linked
 * program: no `PT_INTERP` program header. Undefined when they are not a
 * 64-bit little-endian ELF with its program headers in range.
 */
export function isStaticElf(bytes: Uint8Array): boolean | undefined {
  if (bytes.length < 64 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c) {
    return undefined;
  }
  if (bytes[4] !== 2 || bytes[5] !== 1) return undefined; // ELFCLASS64, little-endian
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  if (phentsize < 4 || phoff + phentsize * phnum > bytes.length) return undefined;
  for (let i = 0; i < phnum; i++) {
    if (view.getUint32(phoff + i * phentsize, true) === 3) return false; // PT_INTERP
  }
  return true;
}

/** The packages `need` requires whose files are missing (a dynamic busybox counts as missing). */
export async function missingPackages(
  need: HostNeed,
  probe: HostProbe = REAL_HOST,
): Promise<string[]> {
  const missing: string[] = [];
  for (const p of HOST_PACKAGES) {
    if (!p.for.includes(need)) continue;
    const present = await Promise.all(p.files.map((f) => probe.exists(f)));
    let ok = present.every(Boolean);
    if (ok && p.pkg === "busybox-static") {
      const head = await probe.head(p.files[0], 4096);
      ok = head !== undefined && isStaticElf(head) === true;
    }
    if (!ok) missing.push(p.pkg);
  }
  return missing;
}

/** The shell command that installs `pkgs` (with `sudo` for a user that is not root). */
export function aptInstallCommand(pkgs: readonly string[], options: { root: boolean }): string {
  const sudo = options.root ? "" : "sudo ";
  return `${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${
    pkgs.join(" ")
  }`;
}

/** Names in passwd(5) or group(5) text. */
export function entryNames(text: string): Set<string> {
  return new Set(text.split("\n").map((l) => l.split(":")[0]).filter((n) => n !== ""));
}

/** Members of `group` in group(5) text; undefined when the group does not exist. */
export function groupMembers(text: string, group: string): string[] | undefined {
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f[0] === group && f.length >= 4) return f[3] === "" ? [] : f[3].split(",");
  }
  return undefined;
}

/** Whether a shadow(5) entry of `name` has an empty password; undefined when unknown. */
export function hasEmptyPassword(shadow: string, name: string): boolean | undefined {
  for (const line of shadow.split("\n")) {
    const f = line.split(":");
    if (f[0] === name && f.length >= 2) return f[1] === "";
  }
  return undefined;
}

/** One step that makes the host ready: the command, and why. */
export interface HostStep {
  argv: string[];
  why: string;
}

/**
 * The commands that give `need` its accounts and directories, given what
 * the host has (empty = nothing to do). Shadow text is only readable by
 * root; without it, passwords are not checked.
 */
export async function accountSteps(
  need: HostNeed,
  probe: HostProbe = REAL_HOST,
): Promise<HostStep[]> {
  const [passwd, group, shadow] = await Promise.all([
    probe.text("/etc/passwd"),
    probe.text("/etc/group"),
    probe.text("/etc/shadow"),
  ]);
  const users = entryNames(passwd ?? "");
  const steps: HostStep[] = [];
  for (const u of HOST_USERS) {
    if (!u.for.includes(need)) continue;
    if (!users.has(u.name)) {
      steps.push({ argv: ["useradd", ...u.useradd], why: `create the user ${u.name} (${u.why})` });
      if (u.emptyPassword) {
        steps.push({ argv: ["passwd", "-d", u.name], why: `empty password for ${u.name}` });
      }
    } else if (u.emptyPassword && shadow !== undefined && !hasEmptyPassword(shadow, u.name)) {
      steps.push({ argv: ["passwd", "-d", u.name], why: `empty password for ${u.name}` });
    }
    if (u.joinGroup && group !== undefined) {
      const members = groupMembers(group, u.joinGroup);
      if (members !== undefined && !members.includes(u.name)) {
        steps.push({
          argv: ["usermod", "-a", "-G", u.joinGroup, u.name],
          why: `add ${u.name} to the ${u.joinGroup} group`,
        });
      }
    }
  }
  for (const d of HOST_DIRS) {
    if (!d.for.includes(need) || await probe.exists(d.path)) continue;
    steps.push({
      argv: ["install", "-d", "-m", d.mode.toString(8).padStart(4, "0"), d.path],
      why: `create ${d.path}`,
    });
  }
  return steps;
}

/** The host lacks something and we may not install it; the message names the command. */
export class HostSetupError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "HostSetupError";
  }
}

/** Runs one command to completion (inheriting output); its exit code. */
export type HostRunner = (argv: readonly string[], env?: Record<string, string>) => Promise<number>;

async function runInherit(argv: readonly string[], env?: Record<string, string>): Promise<number> {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    env,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return out.code;
}

/** Options of {@link ensureHost}. */
export interface EnsureHostOptions {
  /** Whether we may install (we are root); default `Deno.uid() === 0`. */
  root?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Command runner (tests). */
  run?: HostRunner;
  /** Host probe (tests). */
  probe?: HostProbe;
  /** Only the packages, not the accounts. */
  packagesOnly?: boolean;
}

/** What {@link ensureHost} did. */
export interface EnsureHostResult {
  /** Packages installed. */
  installed: string[];
  /** Account and directory commands run. */
  steps: HostStep[];
}

/**
 * Makes the host ready for `need`: installs missing packages with apt-get
 * and creates missing accounts and directories, when root. Otherwise throws
 * a {@link HostSetupError} whose one-line message is the command to run.
 * Does nothing (and spawns nothing) when everything is present.
 */
export async function ensureHost(
  need: HostNeed,
  options: EnsureHostOptions = {},
): Promise<EnsureHostResult> {
  const probe = options.probe ?? REAL_HOST;
  const root = options.root ?? Deno.uid() === 0;
  const run = options.run ?? runInherit;
  const log = options.log ?? (() => {});
  const missing = await missingPackages(need, probe);
  // Accounts are checked after the packages went in (openssh-server creates "sshd").
  if (!root) {
    const steps = options.packagesOnly ? [] : await accountSteps(need, probe);
    if (missing.length === 0 && steps.length === 0) return { installed: [], steps: [] };
    const commands = [
      ...(missing.length > 0 ? [aptInstallCommand(missing, { root: false })] : []),
      ...steps.map((s) => `sudo ${s.argv.join(" ")}`),
    ];
    const what = [
      ...(missing.length > 0 ? [`packages ${missing.join(" ")}`] : []),
      ...(steps.length > 0 ? [steps.map((s) => s.why).join(", ")] : []),
    ].join("; ");
    throw new HostSetupError(`the host lacks ${what}; run: ${commands.join(" && ")}`);
  }
  if (missing.length > 0) {
    log(`installing ${missing.join(" ")} (apt-get)`);
    const update = await run(["apt-get", "update", "-qq"]);
    if (update !== 0) throw new HostSetupError(`apt-get update failed with status ${update}`);
    const code = await run(
      ["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...missing],
      { DEBIAN_FRONTEND: "noninteractive" },
    );
    if (code !== 0) {
      throw new HostSetupError(`apt-get install ${missing.join(" ")} failed with status ${code}`);
    }
    const still = await missingPackages(need, probe);
    if (still.length > 0) {
      throw new HostSetupError(`still missing after apt-get: ${still.join(" ")}`);
    }
  }
  const steps = options.packagesOnly ? [] : await accountSteps(need, probe);
  for (const s of steps) {
    log(s.why);
    const code = await run(s.argv);
    if (code !== 0) {
      throw new HostSetupError(`${s.argv.join(" ")} failed with status ${code}`);
    }
  }
  return { installed: missing, steps };
}
