/**
 * `deno task install`: puts `openshell`, `openshell-gateway`,
 * `openshell-driver-vm`, `openshell-sandbox` and `openshell-egress` on the PATH, each a thin
 * `/bin/sh` wrapper that `exec`s `deno run` on this checkout with exactly
 * its role's grants from `grants.ts`, so they work from any directory.
 *
 * ```
 * deno task install [--root DIR] [--state-dir DIR] [--gateway-listen HOST:PORT]
 *                   [--supervisor-listen HOST:PORT] [--supervisor-gateway HOST:PORT]
 *                   [--vm-cache-dir DIR] [--no-copy-deno] [--force]
 * deno task install --uninstall [--root DIR]
 * ```
 *
 * Layout (`--root`, default `$DENO_INSTALL_ROOT`, else `~/.deno`):
 *
 * ```
 * bin/openshell, bin/openshell-gateway, bin/openshell-driver-vm, bin/openshell-sandbox,
 * bin/openshell-egress
 * lib/openshell/deno                 the Deno that runs them (a copy of the one running
 *                                    the task: under npx there is no `deno` on the PATH)
 * lib/openshell/openshell-vm-image   builds the guest image (what `gateway start` runs)
 * lib/openshell/install.json         the manifest: paths, addresses, files written
 * ```
 *
 * Grants depend on paths, so the install fixes them: the gateway's state in
 * `<state-dir>/gateway`, the driver's in `<state-dir>/vm`, the egress
 * proxy's in `<state-dir>/gateway/egress` (`--state-dir`
 * defaults to `/var/lib/openshell` for root, else
 * `~/.local/state/openshell`), the user API on 127.0.0.1:8080 and the
 * supervisor plane on 127.0.0.1:8081, the guest image in the VM cache. The
 * gateway wrapper makes these its defaults (`OPENSHELL_*`, which flags
 * override within its grants), including `--driver-dir`: it finds the
 * installed driver by itself.
 *
 * Every wrapper `exec`s, so the program keeps the wrapper's pid: the
 * gateway is the driver's parent, and the driver's "my parent is gone"
 * check (and the parent-death signal of every qemu) keeps working — kill -9
 * of the gateway leaves no driver or VM behind. A wrapper that forked
 * would stand between them and hide the gateway's death.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loopbackOf, parseHostPort } from "./compile.ts";
import {
  cliGrants,
  DEFAULT_SESSION_CGROUP,
  DEFAULT_SSH_SOCKET_PATH,
  driverGrants,
  egressGrants,
  gatewayGrants,
  type Grants,
  type HostPort,
  hostPortGrant,
  imageBuilderRunArgs,
  PRODUCTION_PARAMS,
  type Role,
  ROLE_INFO,
  ROLES,
  runArgs,
  supervisorGrants,
} from "./grants.ts";
import { REPO_ROOT, stripTaskSeparator } from "./launcher.ts";
import { stateBase, vmCacheRoot } from "./paths.ts";
import { listProcesses, PS } from "./procs.ts";
import { shellQuote } from "./shell.ts";
import { VERSION } from "./version.ts";

/** `format` of the manifest this code writes and reads. */
export const MANIFEST_FORMAT = "openshell-install/1";

/** Every wrapper carries this text; uninstall and re-install touch only such files. */
export const WRAPPER_MARK = "installed by `deno task install`";

/** The program `gateway stop` signals through (Deno.kill would need every program). */
export const KILL = "/bin/kill";

/** Longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

/** What the install fixes. */
export interface InstallOptions {
  /** Install root: `bin/` and `lib/openshell/` below it. */
  root: string;
  /** The checkout the wrappers run (its `deno.json`, sources and `node_modules`). */
  repo: string;
  /** The Deno binary to run them with (default: the running one). */
  deno: string;
  /** Copy (hard-link when possible) `deno` into `lib/openshell/` (else reference it). */
  copyDeno: boolean;
  /** State base: the gateway's in `gateway/`, the VM driver's in `vm/`. */
  stateDir: string;
  /** The VM cache: guest images (`vm:rootfs`), read by the driver. */
  vmCacheDir: string;
  /** The gateway's user API. */
  gatewayListen: HostPort;
  /** The gateway's supervisor plane (what guests and supervisors reach). */
  supervisorListen: HostPort;
  /** The gateway a bring-your-own supervisor dials (default: the local supervisor plane). */
  supervisorGateway: HostPort;
  /** The supervisor's sshd socket. */
  sshSocketPath: string;
  /** Where a bring-your-own supervisor's credentials live (`sandbox credentials --out`). */
  supervisorFilesDir: string;
}

/** The installed paths and addresses (`lib/openshell/install.json`). */
export interface InstallManifest {
  format: string;
  /** openshell-deno version that wrote it. */
  version: string;
  /** The checkout the wrappers run. */
  repo: string;
  root: string;
  /** The Deno binary the wrappers exec. */
  deno: string;
  /** Each role's wrapper. */
  bin: Record<Role, string>;
  /** Builds the guest image; prints the runtime dir on stdout. */
  imageBuilder: string;
  gateway: {
    stateDir: string;
    listen: HostPort;
    supervisorListen: HostPort;
    /** The URL the CLI registers as `local`. */
    url: string;
    /** Where `gateway start` keeps the pid and the log. */
    pidFile: string;
    logFile: string;
    /** Holds `openshell-driver-vm`. */
    driverDir: string;
  };
  vm: { stateDir: string; cacheDir: string };
  /** Every file the install wrote (uninstall removes exactly these). */
  files: string[];
}

/** One file of the plan. */
export interface InstallFile {
  path: string;
  mode: number;
  /** A wrapper carries {@link WRAPPER_MARK}; the others live in `lib/openshell/` only. */
  kind: "wrapper" | "deno" | "manifest";
  /** The text to write, or a binary to copy. */
  content: { text: string } | { copyFrom: string };
}

/** Everything an install writes, computed without touching the disk. */
export interface InstallPlan {
  options: InstallOptions;
  manifest: InstallManifest;
  /** Each role's grants, as its wrapper renders them. */
  grants: Record<Role, Grants>;
  files: InstallFile[];
}

/** Default options for the current user (`uid` 0 = root). */
export function installDefaults(
  env: (name: string) => string | undefined,
  context: { uid: number; deno: string; repo?: string },
): InstallOptions {
  const home = env("HOME") ?? "/root";
  const root = (env("DENO_INSTALL_ROOT") || `${home}/.deno`).replace(/\/+$/, "");
  const gatewayListen = { host: "127.0.0.1", port: 8080 };
  const supervisorListen = { host: "127.0.0.1", port: 8081 };
  return {
    root,
    repo: context.repo ?? REPO_ROOT,
    deno: context.deno,
    copyDeno: true,
    stateDir: stateBase(env, { root: context.uid === 0 }),
    vmCacheDir: vmCacheRoot(env),
    gatewayListen,
    supervisorListen,
    supervisorGateway: loopbackOf(supervisorListen),
    sshSocketPath: DEFAULT_SSH_SOCKET_PATH,
    supervisorFilesDir: "/etc/openshell",
  };
}

function urlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** A variable a wrapper sets: `default` only when unset or empty, else always. */
interface WrapperVar {
  name: string;
  value: string;
  default?: boolean;
}

/** The text of one wrapper: variables, then `exec argv "$@"`. */
export function renderWrapper(
  o: { name: string; what: string; repo: string; vars: readonly WrapperVar[]; argv: string[] },
): string {
  const lines = [
    "#!/bin/sh",
    `# ${o.name} (openshell-deno ${VERSION}), ${WRAPPER_MARK} from ${o.repo}.`,
    `# ${o.what}`,
    "# `exec` keeps this process's pid for the program (no process in between).",
  ];
  for (const v of o.vars) {
    if (v.default) lines.push(`[ -n "\${${v.name}:-}" ] || ${v.name}=${shellQuote(v.value)}`);
    else lines.push(`${v.name}=${shellQuote(v.value)}`);
  }
  const names = [...o.vars.map((v) => v.name), "DENO_NO_UPDATE_CHECK"];
  lines.push("DENO_NO_UPDATE_CHECK=1", `export ${names.join(" ")}`);
  lines.push(`exec ${o.argv.map(shellQuote).join(" ")} "$@"`, "");
  return lines.join("\n");
}

/** The paths an install fixes (see the module docs). */
interface InstallPaths {
  /** `<root>/bin`: the wrappers (also the gateway's `--driver-dir`). */
  bin: string;
  /** The Deno the wrappers exec. */
  deno: string;
  /** State dirs: the gateway's, the VM driver's, the egress proxy's (inside the gateway's). */
  gwState: string;
  vmState: string;
  egressState: string;
  /** Builds the guest image (what `gateway start` runs). */
  imageBuilder: string;
  /** The builder the driver runs for `openshell image build|import` (its own grants). */
  driverImageBuilder: string;
  manifestPath: string;
}

function installPaths(o: InstallOptions): InstallPaths {
  const lib = `${o.root}/lib/openshell`;
  const gwState = `${o.stateDir}/gateway`;
  return {
    bin: `${o.root}/bin`,
    deno: o.copyDeno ? `${lib}/deno` : o.deno,
    gwState,
    vmState: `${o.stateDir}/vm`,
    // Inside the gateway's state dir: the gateway's default `--egress-state-dir`.
    egressState: `${gwState}/egress`,
    imageBuilder: `${lib}/openshell-vm-image`,
    driverImageBuilder: `${lib}/openshell-image-builder`,
    manifestPath: `${lib}/install.json`,
  };
}

/** The wrapper of `role` under `bin`. */
function binOf(p: Pick<InstallPaths, "bin">, role: Role): string {
  return `${p.bin}/${ROLE_INFO[role].binary}`;
}

/** Each role's grants for the install's paths and addresses. */
function installGrants(o: InstallOptions, p: InstallPaths): Record<Role, Grants> {
  return {
    "gateway": gatewayGrants({
      listen: o.gatewayListen,
      supervisorListen: o.supervisorListen,
      stateDir: p.gwState,
      driverBinary: binOf(p, "driver-vm"),
      driverStateDir: p.vmState,
      egressBinary: binOf(p, "egress"),
      egressStateDir: p.egressState,
    }),
    "driver-vm": driverGrants({
      stateDir: p.vmState,
      gateway: loopbackOf(o.supervisorListen),
      runtimeDir: o.vmCacheDir,
      qemu: PRODUCTION_PARAMS.driver.qemu,
      setpriv: PRODUCTION_PARAMS.driver.setpriv,
      imageBuilder: p.driverImageBuilder,
      // The gateway's egress proxy (`<gateway-state>/egress/guest.sock`).
      egressSocket: `${p.egressState}/guest.sock`,
    }),
    "supervisor": supervisorGrants({
      gateway: o.supervisorGateway,
      socketPath: o.sshSocketPath,
      sshd: PRODUCTION_PARAMS.supervisor.sshd,
      readFiles: [o.supervisorFilesDir],
      writeFiles: [o.supervisorFilesDir],
      sessionCgroup: DEFAULT_SESSION_CGROUP,
    }),
    "cli": cliGrants({ run: [binOf(p, "gateway"), p.imageBuilder, KILL, PS] }),
    "egress": egressGrants({ stateDir: p.egressState }),
  };
}

/** The variables each role's wrapper sets: the install's paths and addresses as defaults. */
function wrapperVars(o: InstallOptions, p: InstallPaths): Record<Role, WrapperVar[]> {
  const runtimeDefault = `${o.vmCacheDir}/current`;
  return {
    "gateway": [
      { name: "OPENSHELL_STATE_DIR", value: p.gwState, default: true },
      { name: "OPENSHELL_BIND_ADDRESS", value: o.gatewayListen.host, default: true },
      { name: "OPENSHELL_SERVER_PORT", value: String(o.gatewayListen.port), default: true },
      { name: "OPENSHELL_SUPERVISOR_BIND_ADDRESS", value: o.supervisorListen.host, default: true },
      { name: "OPENSHELL_SUPERVISOR_PORT", value: String(o.supervisorListen.port), default: true },
      { name: "OPENSHELL_DRIVER_DIR", value: p.bin, default: true },
      { name: "OPENSHELL_VM_DRIVER_STATE_DIR", value: p.vmState, default: true },
      { name: "OPENSHELL_VM_RUNTIME_DIR", value: runtimeDefault, default: true },
      { name: "OPENSHELL_EGRESS_STATE_DIR", value: p.egressState, default: true },
    ],
    "driver-vm": [
      { name: "OPENSHELL_VM_DRIVER_STATE_DIR", value: p.vmState, default: true },
      { name: "OPENSHELL_VM_RUNTIME_DIR", value: runtimeDefault, default: true },
      { name: "OPENSHELL_VM_IMAGE_BUILDER", value: p.driverImageBuilder, default: true },
    ],
    "supervisor": [],
    "cli": [{ name: "OPENSHELL_INSTALL", value: p.manifestPath }],
    "egress": [{ name: "OPENSHELL_EGRESS_STATE_DIR", value: p.egressState, default: true }],
  };
}

/** The comment line of each role's wrapper. */
const WRAPPER_WHAT: Record<Role, string> = {
  "gateway": "The gateway: deno run with exactly its grants (core/grants.ts); defaults below.",
  "driver-vm": "The VM driver the gateway starts: deno run with exactly its grants.",
  "supervisor": "The supervisor, for bring-your-own hosts: deno run with exactly its grants.",
  "cli": "The CLI: deno run with exactly its grants; OPENSHELL_INSTALL names this install.",
  "egress": "The egress proxy the gateway starts: deno run with exactly its grants.",
};

/** A 0755 wrapper file at `path`. */
function wrapperFile(path: string, o: Parameters<typeof renderWrapper>[0]): InstallFile {
  return { path, kind: "wrapper", mode: 0o755, content: { text: renderWrapper(o) } };
}

/** The executables: the Deno copy (with `copyDeno`), each role's wrapper, both image builders. */
function executableFiles(
  o: InstallOptions,
  p: InstallPaths,
  grants: Record<Role, Grants>,
): InstallFile[] {
  const files: InstallFile[] = [];
  if (o.copyDeno) {
    files.push({ path: p.deno, kind: "deno", mode: 0o755, content: { copyFrom: o.deno } });
  }
  const vars = wrapperVars(o, p);
  for (const role of ROLES) {
    files.push(wrapperFile(binOf(p, role), {
      name: ROLE_INFO[role].binary,
      what: WRAPPER_WHAT[role],
      repo: o.repo,
      vars: vars[role],
      argv: [p.deno, ...runArgs(role, grants[role], { root: o.repo })],
    }));
  }
  files.push(wrapperFile(p.driverImageBuilder, {
    name: "openshell-image-builder",
    what: "Builds and imports images for the VM driver: deno run with exactly its grants.",
    repo: o.repo,
    vars: [],
    argv: [p.deno, ...imageBuilderRunArgs(o.repo, p.vmState)],
  }));
  files.push(wrapperFile(p.imageBuilder, {
    name: "openshell-vm-image",
    what: "Builds the guest image (vm:setup + vm:rootfs; apt-get and useradd as root): " +
      "a build tool with every permission, like those tasks.",
    repo: o.repo,
    vars: [{ name: "OPENSHELL_VM_CACHE_DIR", value: o.vmCacheDir }],
    argv: [
      p.deno,
      "run",
      "--quiet",
      `--config=${o.repo}/deno.json`,
      "--allow-all",
      `${o.repo}/driver_vm/image/build.ts`,
    ],
  }));
  return files;
}

/** The manifest of an install that writes `files` (and the manifest itself). */
function installManifest(
  o: InstallOptions,
  p: InstallPaths,
  files: readonly InstallFile[],
): InstallManifest {
  return {
    format: MANIFEST_FORMAT,
    version: VERSION,
    repo: o.repo,
    root: o.root,
    deno: p.deno,
    bin: Object.fromEntries(ROLES.map((r) => [r, binOf(p, r)])) as Record<Role, string>,
    imageBuilder: p.imageBuilder,
    gateway: {
      stateDir: p.gwState,
      listen: o.gatewayListen,
      supervisorListen: o.supervisorListen,
      url: `https://${urlHost(loopbackOf(o.gatewayListen).host)}:${o.gatewayListen.port}`,
      pidFile: `${p.gwState}/gateway.pid`,
      logFile: `${p.gwState}/gateway.log`,
      driverDir: p.bin,
    },
    vm: { stateDir: p.vmState, cacheDir: o.vmCacheDir },
    files: [...files.map((f) => f.path), p.manifestPath],
  };
}

/** Every file and grant of an install with `o`. */
export function installPlan(o: InstallOptions): InstallPlan {
  const paths = installPaths(o);
  const grants = installGrants(o, paths);
  const files = executableFiles(o, paths, grants);
  const manifest = installManifest(o, paths, files);
  files.push({
    path: paths.manifestPath,
    kind: "manifest",
    mode: 0o644,
    content: { text: JSON.stringify(manifest, null, 2) + "\n" },
  });
  return { options: o, manifest, grants, files };
}

/** A bad option or an install that cannot proceed; one line. */
export class InstallError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "InstallError";
  }
}

/** Problems that stop an install with `o` before anything is written (empty = none). */
export function checkOptions(o: InstallOptions): string[] {
  const problems: string[] = [];
  for (const [what, path] of Object.entries({ root: o.root, "state-dir": o.stateDir })) {
    if (!path.startsWith("/")) problems.push(`--${what} must be an absolute path, got "${path}"`);
  }
  for (
    const sock of [
      `${o.stateDir}/gateway/grpc.sock`,
      `${o.stateDir}/gateway/supervisor.sock`,
      `${o.stateDir}/vm/compute-driver.sock`,
    ]
  ) {
    if (new TextEncoder().encode(sock).length > MAX_SOCKET_PATH) {
      problems.push(`--state-dir is too long for its sockets (${sock}); use a shorter directory`);
      break;
    }
  }
  const plane = (hp: HostPort) => hostPortGrant(hp);
  if (o.gatewayListen.port === 0 || o.supervisorListen.port === 0) {
    problems.push("the gateway's ports are fixed at install time: give both a port other than 0");
  } else if (plane(o.gatewayListen) === plane(o.supervisorListen)) {
    problems.push("--gateway-listen and --supervisor-listen must differ (the planes are separate)");
  }
  return problems;
}

/** Parses a manifest; throws an {@link InstallError} naming what is wrong. */
export function parseManifest(text: string, path: string): InstallManifest {
  let m: InstallManifest;
  try {
    m = JSON.parse(text);
  } catch {
    throw new InstallError(`${path} is not JSON; re-run deno task install`);
  }
  const ok = m && m.format === MANIFEST_FORMAT && typeof m.gateway?.stateDir === "string" &&
    typeof m.gateway?.url === "string" && typeof m.bin?.gateway === "string" &&
    typeof m.imageBuilder === "string" && Array.isArray(m.files);
  if (!ok) {
    throw new InstallError(
      `${path} is not an install manifest of this version (${MANIFEST_FORMAT}); re-run deno task install`,
    );
  }
  return m;
}

/** Reads and checks a manifest. */
export async function readManifest(path: string): Promise<InstallManifest> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new InstallError(`no install manifest at ${path}; run deno task install`);
    }
    throw err;
  }
  return parseManifest(text, path);
}

async function readOrNull(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return null;
  }
}

async function isOurs(path: string): Promise<boolean | null> {
  let head: Uint8Array;
  try {
    using f = await Deno.open(path);
    head = new Uint8Array(512);
    const n = await f.read(head);
    head = head.subarray(0, n ?? 0);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  return new TextDecoder().decode(head).includes(WRAPPER_MARK);
}

/**
 * Puts a copy of `from` at `to` (a copy, not a link: whoever owns `from`
 * must not be able to change what the installed commands run). The copy
 * keeps `from`'s modification time, which the guest image key counts.
 */
async function putBinary(from: string, to: string): Promise<void> {
  const tmp = `${to}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.copyFile(from, tmp);
    const st = await Deno.stat(from);
    if (st.mtime) await Deno.utime(tmp, st.atime ?? st.mtime, st.mtime);
    await Deno.chmod(tmp, 0o755);
    await Deno.rename(tmp, to);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

async function putText(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeTextFile(tmp, text, { mode });
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

/** Options of {@link applyPlan}. */
export interface ApplyOptions {
  /** Replace files at the wrapper paths that another tool put there. */
  force?: boolean;
  /** Run `deno cache` on the entry modules first (fills node_modules); default true. */
  cache?: boolean;
  log?: (line: string) => void;
}

/** Writes the plan's files (each atomically); refuses to replace a file it did not write. */
export async function applyPlan(plan: InstallPlan, options: ApplyOptions = {}): Promise<void> {
  const problems = checkOptions(plan.options);
  if (problems.length > 0) throw new InstallError(problems[0]);
  const log = options.log ?? (() => {});
  if (!options.force) {
    for (const f of plan.files) {
      if (f.kind !== "wrapper") continue;
      if ((await isOurs(f.path)) === false) {
        throw new InstallError(
          `${f.path} exists and was not written by deno task install; remove it or pass --force`,
        );
      }
    }
  }
  if (options.cache !== false) {
    log("caching the roles' modules and npm packages (deno cache)");
    const entries = [
      ...ROLES.map((r) => `${plan.options.repo}/${ROLE_INFO[r].entry}`),
      `${plan.options.repo}/driver_vm/image/build.ts`,
    ];
    const out = await new Deno.Command(plan.options.deno, {
      args: ["cache", "--quiet", `--config=${plan.options.repo}/deno.json`, ...entries],
      cwd: plan.options.repo,
      stdin: "null",
      stdout: "inherit",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" ");
      throw new InstallError(`deno cache failed: ${err}`);
    }
  }
  for (const f of plan.files) {
    await Deno.mkdir(f.path.slice(0, f.path.lastIndexOf("/")), { recursive: true });
    if ("copyFrom" in f.content) await putBinary(f.content.copyFrom, f.path);
    else await putText(f.path, f.content.text, f.mode);
  }
}

/** Most paths {@link checkTrustedSources} inspects before it gives up (a huge tree). */
export const MAX_TRUST_WALK = 50_000;

/**
 * Refuses to install code that another user could change: every directory
 * and file of the checkout (but `.git`) and the Deno binary must be owned by
 * the installing user or root and not writable by group or others (inside
 * the checkout's `node_modules`, which Deno wrote, write bits are removed
 * instead). The installed commands run these files, as root when root
 * installed them.
 */
export async function checkTrustedSources(
  paths: { repo: string; deno: string },
  uid: number,
): Promise<void> {
  const bad = (path: string, info: Deno.FileInfo): string | undefined => {
    if (info.uid !== null && info.uid !== uid && info.uid !== 0) {
      return `${path} is owned by uid ${info.uid}`;
    }
    if (!info.isSymlink && ((info.mode ?? 0) & 0o022)) {
      return `${path} is writable by other users (mode ${
        ((info.mode ?? 0) & 0o7777).toString(8).padStart(4, "0")
      })`;
    }
    return undefined;
  };
  const refuse = (why: string) =>
    new InstallError(
      `refusing to install: ${why}; the installed commands would run code others can change ` +
        "(fix the owner or run chmod go-w, then install again)",
    );
  const denoWhy = bad(paths.deno, await Deno.stat(paths.deno));
  if (denoWhy) throw refuse(denoWhy);
  // Deno unpacks npm packages with their tarballs' modes (some 0666): inside the
  // checkout's node_modules, which Deno wrote for us, write bits are taken away.
  const vendored = `${paths.repo}/node_modules`;
  const check = async (path: string): Promise<void> => {
    const info = await Deno.lstat(path);
    const why = bad(path, info);
    if (!why) return;
    const ours = info.uid === uid && !info.isSymlink;
    if (ours && (path === vendored || path.startsWith(vendored + "/"))) {
      await Deno.chmod(path, (info.mode ?? 0) & 0o7755);
      return;
    }
    throw refuse(why);
  };
  let seen = 0;
  const walk = async (dir: string): Promise<void> => {
    await check(dir);
    for await (const e of Deno.readDir(dir)) {
      if (++seen > MAX_TRUST_WALK) return;
      if (dir === paths.repo && e.name === ".git") continue;
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else await check(path);
    }
  };
  await walk(paths.repo);
}

/** Who holds the local gateway's pid file. */
export interface PidFileOwner {
  /** `gateway`: the gateway runs; `starting`: an `openshell gateway start` is starting it. */
  kind: "gateway" | "starting";
  pid: number;
}

/** The live process named by the gateway's pid file, when it is ours (else the file is stale). */
export async function pidFileOwner(m: InstallManifest): Promise<PidFileOwner | undefined> {
  const pid = Number((await readOrNull(m.gateway.pidFile))?.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const p = (await listProcesses()).find((x) => x.pid === pid);
  if (!p) return undefined;
  if (p.args.includes(`${m.repo}/gateway/main.ts`)) return { kind: "gateway", pid };
  if (p.args.includes(`${m.repo}/cli/main.ts`) && p.args.includes("gateway start")) {
    return { kind: "starting", pid };
  }
  return undefined; // a reused pid
}

/**
 * Removes what the install under `root` wrote (the files its manifest
 * lists, wrappers only when they still carry the mark); keeps the state
 * and the VM cache. Returns the paths removed.
 */
export async function uninstall(root: string): Promise<string[]> {
  const manifestPath = `${root}/lib/openshell/install.json`;
  const m = await readManifest(manifestPath);
  const running = await pidFileOwner(m);
  if (running) {
    throw new InstallError(
      `the local gateway is running (pid ${running.pid}); stop it first: openshell gateway stop`,
    );
  }
  const removed: string[] = [];
  for (const path of m.files) {
    if (!path.startsWith(`${root}/`)) continue;
    if (path !== manifestPath && path !== m.deno && (await isOurs(path)) !== true) continue;
    try {
      await Deno.remove(path);
      removed.push(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  await Deno.remove(`${root}/lib/openshell`).catch(() => {});
  return removed;
}

/** What the command line asked for. */
export type InstallRequest =
  | { kind: "help" }
  | { kind: "install"; options: InstallOptions; force: boolean }
  | { kind: "uninstall"; root: string };

/** Usage text. */
export const INSTALL_USAGE = `usage: deno task install [--root DIR] [--state-dir DIR]
         [--gateway-listen HOST:PORT] [--supervisor-listen HOST:PORT]
         [--supervisor-gateway HOST:PORT] [--vm-cache-dir DIR] [--no-copy-deno] [--force]
       deno task install --uninstall [--root DIR]

  --root DIR                  install root: DIR/bin and DIR/lib/openshell
                              (default $DENO_INSTALL_ROOT, else ~/.deno)
  --state-dir DIR             the gateway's state in DIR/gateway, the VM driver's in DIR/vm
                              (default /var/lib/openshell as root, else ~/.local/state/openshell)
  --gateway-listen HOST:PORT  the gateway's user API (default 127.0.0.1:8080)
  --supervisor-listen H:P     its supervisor plane (default 127.0.0.1:8081)
  --supervisor-gateway H:P    what openshell-sandbox dials (default: the supervisor plane)
  --vm-cache-dir DIR          guest images (default ~/.cache/openshell-deno/vm)
  --no-copy-deno              run the wrappers with the running deno by its path, no copy
  --force                     replace files at the wrapper paths that another tool wrote
  --uninstall                 remove what an install under --root wrote (state is kept)`;

/** Parses the task's arguments. */
export function parseInstallArgs(
  args: readonly string[],
  defaults: InstallOptions,
): InstallRequest {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      options: {
        root: { type: "string" },
        "state-dir": { type: "string" },
        "gateway-listen": { type: "string" },
        "supervisor-listen": { type: "string" },
        "supervisor-gateway": { type: "string" },
        "vm-cache-dir": { type: "string" },
        "no-copy-deno": { type: "boolean" },
        force: { type: "boolean" },
        uninstall: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    throw new InstallError((err as Error).message.split("\n")[0]);
  }
  const v = parsed.values;
  if (v.help) return { kind: "help" };
  const abs = (flag: string, path: string | undefined, fallback: string) => {
    if (path === undefined) return fallback;
    if (!path.startsWith("/")) {
      throw new InstallError(`--${flag} must be an absolute path, got "${path}"`);
    }
    return path.replace(/\/+$/, "") || "/";
  };
  const root = abs("root", v.root, defaults.root);
  if (v.uninstall) return { kind: "uninstall", root };
  const hp = (flag: string, value: string | undefined, fallback: HostPort) => {
    if (value === undefined) return fallback;
    try {
      return parseHostPort(value, `--${flag}`);
    } catch (err) {
      throw new InstallError((err as Error).message);
    }
  };
  const supervisorListen = hp(
    "supervisor-listen",
    v["supervisor-listen"],
    defaults.supervisorListen,
  );
  const options: InstallOptions = {
    ...defaults,
    root,
    copyDeno: !v["no-copy-deno"],
    stateDir: abs("state-dir", v["state-dir"], defaults.stateDir),
    vmCacheDir: abs("vm-cache-dir", v["vm-cache-dir"], defaults.vmCacheDir),
    gatewayListen: hp("gateway-listen", v["gateway-listen"], defaults.gatewayListen),
    supervisorListen,
    supervisorGateway: hp(
      "supervisor-gateway",
      v["supervisor-gateway"],
      loopbackOf(supervisorListen),
    ),
  };
  const problems = checkOptions(options);
  if (problems.length > 0) throw new InstallError(problems[0]);
  return { kind: "install", options, force: !!v.force };
}

function onPath(dir: string, path: string | undefined): boolean {
  return (path ?? "").split(":").some((p) => p.replace(/\/+$/, "") === dir);
}

/** The summary printed after an install. */
export function installSummary(plan: InstallPlan, path: string | undefined): string {
  const m = plan.manifest;
  const o = plan.options;
  const rel = (p: string) => p.startsWith(`${o.root}/`) ? p.slice(o.root.length + 1) : p;
  const lines = [
    `Installed openshell-deno ${VERSION} into ${o.root}:`,
    `  ${rel(m.bin.cli).padEnd(24)} the CLI`,
    `  ${
      rel(m.bin.gateway).padEnd(24)
    } the gateway: ${m.gateway.url}, state in ${m.gateway.stateDir}`,
    `  ${rel(m.bin["driver-vm"]).padEnd(24)} the VM driver: state in ${m.vm.stateDir}, ` +
    `guest images in ${m.vm.cacheDir}`,
    `  ${rel(m.bin.supervisor).padEnd(24)} the supervisor for bring-your-own hosts: dials ` +
    `${hostPortGrant(o.supervisorGateway)}, credentials under ${o.supervisorFilesDir}`,
    `  ${rel(m.deno).padEnd(24)} Deno ${Deno.version.deno}, which runs them`,
    `Each runs deno run on ${o.repo} with exactly its grants (core/grants.ts): ` +
    "install again after moving or updating the checkout.",
  ];
  const bin = `${o.root}/bin`;
  if (!onPath(bin, path)) lines.push(`${bin} is not on your PATH: export PATH="${bin}:$PATH"`);
  lines.push(
    "Next: openshell gateway start && openshell sandbox create -- echo hi",
    `Uninstall: deno task install --uninstall --root ${o.root} ` +
      `(keeps the state in ${o.stateDir} and the images in ${o.vmCacheDir})`,
  );
  return lines.join("\n");
}

async function main(): Promise<number> {
  const say = (line: string) => console.error(`install: ${line}`);
  let request: InstallRequest;
  try {
    const defaults = installDefaults((n) => Deno.env.get(n), {
      uid: Deno.uid() ?? -1,
      deno: Deno.execPath(),
    });
    request = parseInstallArgs(stripTaskSeparator(Deno.args), defaults);
  } catch (err) {
    if (!(err instanceof InstallError)) throw err;
    say(`${err.message} (see deno task install --help)`);
    return 2;
  }
  if (request.kind === "help") {
    console.log(INSTALL_USAGE);
    return 0;
  }
  try {
    if (request.kind === "uninstall") {
      const removed = await uninstall(request.root);
      for (const p of removed) console.log(`removed ${p}`);
      console.log(
        `Uninstalled from ${request.root}. Kept: the gateway's and VMs' state, the guest ` +
          "images and ~/.config/openshell (rm -rf them to remove everything).",
      );
      return 0;
    }
    const plan = installPlan(request.options);
    await checkTrustedSources(
      { repo: request.options.repo, deno: request.options.deno },
      Deno.uid() ?? -1,
    );
    await applyPlan(plan, { force: request.force, log: say });
    console.log(installSummary(plan, Deno.env.get("PATH")));
    return 0;
  } catch (err) {
    if (err instanceof InstallError) {
      say(err.message);
      return 1;
    }
    throw err;
  }
}

if (import.meta.main) Deno.exit(await main());
