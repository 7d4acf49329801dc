/**
 * `deno task vm:rootfs`: builds the VM runtime directory the driver boots
 * every sandbox from:
 *
 * - `vmlinuz`: Debian's cloud kernel (from `vm:setup`'s cache): its
 *   uncompressed ELF with a PVH entry when the bzImage holds one
 *   (`kernel.ts`: no decompression at every boot), else the bzImage;
 * - `initramfs.cpio`: busybox (static) with a link per applet, the kernel
 *   modules the guest needs and the first stage of our init (small: unpacks
 *   in a fraction of a second under TCG);
 * - `openshell.img`: the read-only runtime disk every VM mounts at
 *   `/opt/openshell`: the Deno binary and the bundled supervisor, PID 1 and
 *   the supervisor runner, busybox, `resize2fs`, and the glibc (with its
 *   loader) Deno and `resize2fs` run with — so they work in any image (a
 *   95 MB Deno inside the initramfs would be copied into guest RAM at every
 *   boot; from a disk only the pages used are read) — and Deno's caches of
 *   the supervisor (`deno_cache.ts`);
 * - `rootfs.img`: the default guest image, Debian 12 (`image/debian.ts`),
 *   a hard link to its own cache entry; every sandbox boots it through a
 *   qcow2 overlay of its own (`driver_vm/disk.ts`);
 * - `manifest.json`: what went in, including the image's key.
 *
 * Everything is cached under `<cache>/runtime-<key>/`, the key hashing
 * every input (kernel package, host binaries, Deno, the supervisor sources,
 * the rendered scripts, the image's key); `<cache>/current` points at the
 * newest. A second run with unchanged inputs does no work. The image has
 * its own cache entry (`<cache>/image-<key>/`), so a supervisor change
 * rebuilds only the small runtime disk.
 *
 * @module
 */
import { REPO_ROOT } from "../../core/launcher.ts";
import { type CpioEntry, writeCpio } from "./cpio.ts";
import { binaryStamp, cacheKey, cacheRoot, exists, fileStamp, run, runOk, sha256 } from "./host.ts";
import { DEFAULT_PACKAGES, ensureImage, type ImageInfo } from "./debian.ts";
import { warmDenoCache } from "./deno_cache.ts";
import { DENO_RUN_FLAGS, GUEST_LAYOUT, renderInit, renderPid1, renderRunner } from "./init.ts";
import { pvhKernel } from "./kernel.ts";
import { loadOrder, moduleDepends, moduleName } from "./kmod.ts";
import { ensureKernel, type KernelInfo } from "./setup.ts";

/** Bump when the layout of the runtime changes in a way the inputs do not show. */
const FORMAT = "openshell-vm-runtime/5";

/** Kernel modules the guest loads (dependencies are added). */
export const GUEST_MODULES: readonly string[] = [
  "virtio_pci",
  "virtio_net",
  "virtio_blk",
  "qemu_fw_cfg",
];

/** Host binaries copied onto the runtime disk (their libraries go to its `lib/`). */
const RUNTIME_BINARIES: readonly { host: string; guest: string }[] = [
  { host: "/usr/sbin/resize2fs", guest: GUEST_LAYOUT.resize2fs },
];

/** The static busybox of the initramfs and the runtime disk. */
const BUSYBOX = "/bin/busybox";

/** Files of a built runtime directory. */
export interface RuntimeInfo {
  dir: string;
  key: string;
  kernel: string;
  initramfs: string;
  /** The read-only runtime disk (`/opt/openshell` in the guest). */
  disk: string;
  /** The default image (raw ext4), a hard link into its cache entry. */
  image: string;
  /** The default image's key. */
  imageKey: string;
  /** Whether this call built it (false = cache hit). */
  built: boolean;
}

/** Options of {@link ensureRuntime}. */
export interface RuntimeOptions {
  /** Cache root; default {@link cacheRoot}. */
  root?: string;
  /** Deno binary to put in the guest; default the running one. */
  deno?: string;
  /** Supervisor entry module; default `<repo>/supervisor/main.ts`. */
  supervisorEntry?: string;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Packages of the default image; default {@link DEFAULT_PACKAGES}. */
  packages?: readonly string[];
}

async function walk(dir: string, filter: (path: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  const visit = async (d: string) => {
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await visit(p);
      else if (e.isFile && filter(p)) out.push(p);
    }
  };
  await visit(dir);
  return out;
}

/** Parses `ldd` output into the absolute library paths it names. */
export function parseLdd(text: string): string[] {
  const libs = new Set<string>();
  for (const line of text.split("\n")) {
    const arrow = /=>\s*(\/\S+)/.exec(line);
    if (arrow) libs.add(arrow[1]);
    else {
      const direct = /^\s*(\/\S+)\s+\(0x/.exec(line);
      if (direct) libs.add(direct[1]);
    }
  }
  return [...libs].sort();
}

async function librariesOf(binaries: readonly string[]): Promise<string[]> {
  const all = new Set<string>();
  for (const b of binaries) for (const l of parseLdd(await runOk("ldd", [b]))) all.add(l);
  return [...all].sort();
}

/** Sources that go into the supervisor bundle (for its cache key). */
async function supervisorSources(entry: string): Promise<string[]> {
  const isSource = (p: string) =>
    /\.(ts|js|json)$/.test(p) && !/_test\.ts$|_bench\.ts$|\/testdata\//.test(p);
  const dirs = [entry.slice(0, entry.lastIndexOf("/")), `${REPO_ROOT}/core`, `${REPO_ROOT}/proto`];
  const files: string[] = [];
  for (const d of dirs) if (await exists(d)) files.push(...(await walk(d, isSource)));
  for (const f of ["deno.json", "deno.lock"]) {
    if (await exists(`${REPO_ROOT}/${f}`)) files.push(`${REPO_ROOT}/${f}`);
  }
  return files;
}

/** The applet names `busybox --list` prints (our init's `/bin`), without `busybox` itself. */
export function busyboxApplets(list: string): string[] {
  const names = list.split("\n").map((l) => l.trim()).filter((l) => /^[A-Za-z0-9_.[-]+$/.test(l));
  return [...new Set(names)].filter((n) => n !== "busybox").sort();
}

/** Makes the bundle runnable without node's module globals (ssh2's emscripten code reads them). */
const BUNDLE_SHIM = "globalThis.__dirname ??= import.meta.dirname;\n" +
  "globalThis.__filename ??= import.meta.filename;\n";

async function ensureSupervisorBundle(
  root: string,
  entry: string,
  deno: string,
  log: (line: string) => void,
): Promise<{ path: string; key: string }> {
  if (!(await exists(entry))) throw new Error(`supervisor entry not found: ${entry}`);
  const parts: string[] = [FORMAT, await binaryStamp(deno)];
  for (const f of await supervisorSources(entry)) {
    parts.push(`${f.slice(REPO_ROOT.length)}:${await sha256(await Deno.readFile(f))}`);
  }
  const key = await cacheKey(parts);
  const dir = `${root}/supervisor-${key}`;
  const path = `${dir}/supervisor.js`;
  if (await exists(path)) return { path, key };
  log(`bundling the supervisor (${entry.slice(REPO_ROOT.length + 1)})`);
  await Deno.mkdir(root, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: root, prefix: ".bundle-tmp-" });
  try {
    await runOk(deno, [
      "bundle",
      "--quiet",
      `--config=${REPO_ROOT}/deno.json`,
      "--platform",
      "deno",
      "--external",
      "*.node",
      "--external",
      "cpu-features",
      // protobufjs uses `long` only when it loads (it tries, and does without); `long`
      // compiles a WebAssembly module as it loads (0.7 s under TCG), and with
      // `longs: Number` (core/protocol.ts) its numbers are the same either way.
      "--external",
      "long",
      "-o",
      `${tmp}/raw.js`,
      entry,
    ], { cwd: REPO_ROOT });
    const body = await Deno.readTextFile(`${tmp}/raw.js`);
    await Deno.writeTextFile(`${tmp}/supervisor.js`, BUNDLE_SHIM + body);
    await Deno.remove(`${tmp}/raw.js`);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dir);
  } catch (err) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw err;
  }
  return { path, key };
}

interface Inputs {
  kernel: KernelInfo;
  /** busybox's applets: each gets a link in the initramfs's /bin. */
  applets: string[];
  modules: { name: string; path: string }[];
  libraries: string[];
  deno: string;
  supervisor: string;
  init: string;
  pid1: string;
  runner: string;
}

async function moduleFiles(kernel: KernelInfo): Promise<{ name: string; path: string }[]> {
  const files = await walk(`${kernel.modulesDir}/kernel`, (p) => p.endsWith(".ko"));
  const byName = new Map(files.map((f) => [moduleName(f), f]));
  const depsCache = new Map<string, string[]>();
  const depsOf = (name: string): string[] | undefined => depsCache.get(name);
  // Read the .modinfo of each module we may need, breadth-first from the wanted ones.
  const queue = [...GUEST_MODULES];
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (depsCache.has(name)) continue;
    const path = byName.get(name);
    if (!path) throw new Error(`kernel module ${name} not in ${kernel.modulesDir}`);
    const deps = moduleDepends(await Deno.readFile(path));
    depsCache.set(name, deps);
    queue.push(...deps);
  }
  return loadOrder(GUEST_MODULES, depsOf).map((name) => ({ name, path: byName.get(name)! }));
}

async function buildInitramfs(inputs: Inputs, out: string): Promise<void> {
  const enc = new TextEncoder();
  const entries: CpioEntry[] = [
    ...["bin", "dev", "etc", "proc", "sys", "run", "tmp", "root", "modules", "newroot"].map(
      (d) => ({ kind: "dir" as const, path: d }),
    ),
    { kind: "char", path: "dev/console", major: 5, minor: 1 },
    { kind: "char", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    { kind: "file", path: "bin/busybox", data: await Deno.readFile(BUSYBOX), mode: 0o755 },
    // One link per applet, made here rather than by `busybox --install` at every boot.
    ...inputs.applets.map((a) => ({
      kind: "symlink" as const,
      path: `bin/${a}`,
      target: "busybox",
    })),
    { kind: "file", path: "init", data: enc.encode(inputs.init), mode: 0o755 },
  ];
  for (const m of inputs.modules) {
    entries.push({ kind: "file", path: `modules/${m.name}.ko`, data: await Deno.readFile(m.path) });
  }
  await Deno.writeFile(out, writeCpio(entries));
}

async function stageDisk(inputs: Inputs, staging: string): Promise<void> {
  const enc = new TextEncoder();
  const rel = (guest: string) => guest.slice(GUEST_LAYOUT.runtimeMount.length + 1);
  const put = async (hostPath: string, guest: string, mode: number) => {
    const dest = `${staging}/${rel(guest)}`;
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(hostPath, dest);
    await Deno.chmod(dest, mode);
  };
  const write = async (text: string, guest: string, mode: number) => {
    const dest = `${staging}/${rel(guest)}`;
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(dest, enc.encode(text));
    await Deno.chmod(dest, mode);
  };
  for (const b of RUNTIME_BINARIES) await put(b.host, b.guest, 0o755);
  for (const lib of inputs.libraries) {
    await put(lib, `${GUEST_LAYOUT.libDir}/${lib.slice(lib.lastIndexOf("/") + 1)}`, 0o755);
  }
  await put(BUSYBOX, GUEST_LAYOUT.busybox, 0o755);
  await put(inputs.deno, GUEST_LAYOUT.deno, 0o755);
  await put(inputs.supervisor, GUEST_LAYOUT.supervisor, 0o644);
  await write(inputs.pid1, GUEST_LAYOUT.pid1, 0o755);
  await write(inputs.runner, GUEST_LAYOUT.runner, 0o755);
}

async function makeDisk(staging: string, out: string): Promise<void> {
  let bytes = 0;
  for (const f of await walk(staging, () => true)) bytes += (await Deno.stat(f)).size;
  const sizeKiB = Math.ceil((bytes * 1.1) / 1024) + 16 * 1024;
  await runOk("mke2fs", [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-O",
    "^has_journal,^resize_inode",
    "-m",
    "0",
    "-L",
    "openshell-rt",
    "-E",
    "root_owner=0:0",
    "-d",
    staging,
    out,
    `${sizeKiB}k`,
  ]);
}

/** Builds (or finds in the cache) the runtime directory; see the module docs. */
export async function ensureRuntime(options: RuntimeOptions = {}): Promise<RuntimeInfo> {
  const root = options.root ?? cacheRoot();
  const log = options.log ?? ((l: string) => console.error(`vm:rootfs: ${l}`));
  const deno = options.deno ?? Deno.execPath();
  const kernel = await ensureKernel(root);
  const image: ImageInfo = await ensureImage({
    root,
    spec: { packages: options.packages ?? DEFAULT_PACKAGES },
    log,
  });
  const supervisor = await ensureSupervisorBundle(
    root,
    options.supervisorEntry ?? `${REPO_ROOT}/supervisor/main.ts`,
    deno,
    log,
  );
  const modules = await moduleFiles(kernel);
  const inputs: Inputs = {
    kernel,
    applets: busyboxApplets(await runOk(BUSYBOX, ["--list"])),
    modules,
    libraries: await librariesOf([...RUNTIME_BINARIES.map((b) => b.host), deno]),
    deno,
    supervisor: supervisor.path,
    init: renderInit({ modules: modules.map((m) => m.name) }),
    pid1: renderPid1(),
    runner: renderRunner(),
  };
  const parts = [
    FORMAT,
    `${kernel.pkg}=${kernel.version}`,
    await sha256(await Deno.readFile(BUSYBOX)),
    ...(await Promise.all(
      RUNTIME_BINARIES.map(async (b) => sha256(await Deno.readFile(b.host))),
    )),
    ...(await Promise.all(inputs.libraries.map(fileStamp))),
    await binaryStamp(deno),
    `supervisor:${supervisor.key}`,
    await sha256(inputs.init + inputs.pid1 + inputs.runner),
    `image:${image.key}`,
  ];
  const key = await cacheKey(parts);
  const dir = `${root}/runtime-${key}`;
  const info = (built: boolean): RuntimeInfo => ({
    dir,
    key,
    kernel: `${dir}/vmlinuz`,
    initramfs: `${dir}/initramfs.cpio`,
    disk: `${dir}/openshell.img`,
    image: `${dir}/rootfs.img`,
    imageKey: image.key,
    built,
  });
  if (await exists(`${dir}/manifest.json`)) {
    await pointCurrent(root, dir);
    return info(false);
  }
  log(`building runtime ${key}`);
  const tmp = await Deno.makeTempDir({ dir: root, prefix: ".runtime-tmp-" });
  try {
    const pvh = pvhKernel(await Deno.readFile(kernel.vmlinuz));
    if (pvh) await Deno.writeFile(`${tmp}/vmlinuz`, pvh);
    else await Deno.copyFile(kernel.vmlinuz, `${tmp}/vmlinuz`);
    log(
      pvh ? "kernel: the uncompressed ELF (PVH entry)" : "kernel: the bzImage (no PVH ELF in it)",
    );
    await buildInitramfs(inputs, `${tmp}/initramfs.cpio`);
    await Deno.mkdir(`${tmp}/staging`);
    await stageDisk(inputs, `${tmp}/staging`);
    const cache = await warmDenoCache({
      deno,
      module: supervisor.path,
      guestSpecifier: new URL(`file://${GUEST_LAYOUT.supervisor}`).href,
      out: `${tmp}/staging/${GUEST_LAYOUT.denoCache.slice(GUEST_LAYOUT.runtimeMount.length + 1)}`,
      runFlags: DENO_RUN_FLAGS,
    });
    log(`Deno's code cache of the supervisor: ${cache.entries} modules, ${cache.bytes} bytes`);
    await makeDisk(`${tmp}/staging`, `${tmp}/openshell.img`);
    await Deno.remove(`${tmp}/staging`, { recursive: true });
    await Deno.link(image.path, `${tmp}/rootfs.img`).catch(() =>
      Deno.copyFile(image.path, `${tmp}/rootfs.img`)
    );
    const denoVersion = (await run(deno, ["--version"])).stdout.split("\n")[0];
    await Deno.writeTextFile(
      `${tmp}/manifest.json`,
      JSON.stringify(
        {
          format: FORMAT,
          key,
          kernel: { pkg: kernel.pkg, version: kernel.version, boot: pvh ? "pvh" : "bzimage" },
          modules: modules.map((m) => m.name),
          deno: denoVersion,
          supervisor: supervisor.key,
          image: { key: image.key, file: "rootfs.img", format: "raw", bytes: image.bytes },
        },
        null,
        2,
      ) + "\n",
    );
    await Deno.chmod(tmp, 0o755);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dir);
  } catch (err) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw err;
  }
  await pointCurrent(root, dir);
  // Keep this runtime, bundle and image plus the two before them; drivers
  // still running from an older runtime keep their open files, and sandbox
  // disks hold their own copy of the image they were made from.
  await pruneOld(root, "runtime-", { keep: 3, protect: `runtime-${key}` });
  await pruneOld(root, "supervisor-", { keep: 3, protect: `supervisor-${supervisor.key}` });
  await pruneOld(root, "image-", { keep: 3, protect: `image-${image.key}` });
  return info(true);
}

/**
 * Removes all but the `keep` most recently modified `<prefix>*` dirs in
 * `root`, never `protect` (old runtimes pile up while the supervisor's
 * sources change). Returns the names removed.
 */
export async function pruneOld(
  root: string,
  prefix: string,
  options: { keep: number; protect: string },
): Promise<string[]> {
  const dirs: { name: string; mtime: number }[] = [];
  for await (const e of Deno.readDir(root)) {
    if (!e.isDirectory || !e.name.startsWith(prefix) || e.name === options.protect) continue;
    const st = await Deno.stat(`${root}/${e.name}`);
    dirs.push({ name: e.name, mtime: st.mtime?.getTime() ?? 0 });
  }
  dirs.sort((a, b) => b.mtime - a.mtime);
  const removed: string[] = [];
  for (const d of dirs.slice(Math.max(0, options.keep - 1))) {
    await Deno.remove(`${root}/${d.name}`, { recursive: true }).catch(() => {});
    removed.push(d.name);
  }
  return removed;
}

/** Points `<root>/current` at `dir` (atomically), so tools can find the newest runtime. */
async function pointCurrent(root: string, dir: string): Promise<void> {
  const link = `${root}/current`;
  const name = dir.slice(dir.lastIndexOf("/") + 1);
  try {
    if ((await Deno.readLink(link)) === name) return;
  } catch {
    // missing or not a link
  }
  const tmp = `${link}.tmp-${Deno.pid}`;
  await Deno.remove(tmp).catch(() => {});
  await Deno.symlink(name, tmp);
  await Deno.rename(tmp, link);
}

if (import.meta.main) {
  const entryArg = Deno.args.find((a) => a.startsWith("--supervisor-entry="));
  try {
    const rt = await ensureRuntime({
      supervisorEntry: entryArg ? entryArg.slice("--supervisor-entry=".length) : undefined,
    });
    const mib = (p: string) => ((Deno.statSync(p).size) / 2 ** 20).toFixed(0);
    console.error(
      `vm:rootfs: ${rt.built ? "built" : "up to date"}: ${rt.dir} (image ${rt.imageKey} ` +
        `${mib(rt.image)} MiB, runtime disk ${mib(rt.disk)} MiB, initramfs ${
          mib(rt.initramfs)
        } MiB)`,
    );
  } catch (err) {
    console.error(`vm:rootfs: error: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
