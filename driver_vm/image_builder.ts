/**
 * `openshell-image-builder`: builds and imports guest images for the VM
 * driver, in a process of its own with its own grants
 * (`imageBuilderGrants` in core/grants.ts): the driver runs it for
 * `openshell image build|import` and reads its output. It needs root (like
 * the driver): debootstrap chroots and makes device files, tar keeps the
 * owners of an imported tree.
 *
 * ```
 * image_builder.ts build  --work DIR --out FILE [--packages a,b] [--script-file F]
 * image_builder.ts import --work DIR --out FILE --tar FILE
 * ```
 *
 * - `build`: the default image's Debian packages plus `--packages`, then
 *   the script, run once as root in the image (`image/debian.ts`, whose
 *   cache key names the result).
 * - `import`: a root file system tarball (e.g. `docker export`) unpacked as
 *   it is and written to an ext4 image like the default one. It must hold
 *   OpenSSH's server (`/usr/sbin/sshd`): a sandbox's shell, exec and file
 *   transfer all go through it. Our PID 1, Deno and the supervisor come
 *   from the runtime disk, so any distribution's tree boots.
 *
 * Progress goes to stdout, one line at a time; the last line is
 * `OPENSHELL-IMAGE {"key":…,"bytes":…}`. The image is written beside `--out`
 * and renamed into place, so a failed build leaves nothing under the name.
 * Errors: one line on stderr, exit status 1.
 *
 * @module
 */
import { type FlagTable, NO_ENV, noPositionals, parseFlags } from "../core/flags.ts";
import { ensureImage, imageGeometry, imageKey, mkfsArgs } from "./image/debian.ts";

/** Prefix of the builder's last output line. */
export const RESULT_PREFIX = "OPENSHELL-IMAGE ";

/** What the builder reports at the end. */
export interface BuildResult {
  key: string;
  bytes: number;
}

/** A parsed command line. */
export type BuilderCommand =
  | { kind: "build"; work: string; out: string; packages: string[]; scriptFile?: string }
  | { kind: "import"; work: string; out: string; tar: string };

const COMMON = {
  work: { kind: "path", required: true, value: "DIR", help: "Work directory" },
  out: { kind: "path", required: true, value: "FILE", help: "Image file to write" },
} satisfies FlagTable;

/** The options of each builder command (the builder reads no environment). */
export const BUILDER_FLAGS = {
  build: {
    ...COMMON,
    packages: { kind: "list", repeatable: true, help: "Extra Debian packages" },
    "script-file": { kind: "path", value: "FILE", help: "Setup script run once as root" },
  },
  import: {
    ...COMMON,
    tar: { kind: "path", required: true, value: "FILE", help: "Root file system tarball" },
  },
} satisfies Record<BuilderCommand["kind"], FlagTable>;

/** Parses the builder's arguments; throws one line saying what is wrong. */
export function parseBuilderArgs(args: readonly string[]): BuilderCommand {
  const [kind, ...rest] = args;
  if (kind === "build") {
    const parsed = parseFlags(BUILDER_FLAGS.build, rest, NO_ENV);
    noPositionals(parsed.positionals);
    const v = parsed.values;
    return {
      kind,
      work: v.work,
      out: v.out,
      packages: v.packages,
      ...(v["script-file"] ? { scriptFile: v["script-file"] } : {}),
    };
  }
  if (kind === "import") {
    const parsed = parseFlags(BUILDER_FLAGS.import, rest, NO_ENV);
    noPositionals(parsed.positionals);
    return { kind, work: parsed.values.work, out: parsed.values.out, tar: parsed.values.tar };
  }
  throw new Error(`unknown command ${JSON.stringify(kind ?? "")} (build or import)`);
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    clearEnv: true,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
  }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join("; ");
    throw new Error(`${cmd} failed with status ${out.code}: ${err}`);
  }
}

/** Files and bytes under `dir` (symlinks not followed). */
async function measure(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const visit = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      files++;
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await visit(p);
      else if (e.isFile) bytes += (await Deno.lstat(p)).size;
    }
  };
  await visit(dir);
  return { files, bytes };
}

/** Moves `file` to `out` (beside it first, then renamed into place). */
async function publish(file: string, out: string): Promise<number> {
  const tmp = `${out}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.rename(file, tmp).catch(async () => await Deno.copyFile(file, tmp));
    await Deno.rename(tmp, out);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  return (await Deno.stat(out)).size;
}

async function build(c: Extract<BuilderCommand, { kind: "build" }>): Promise<BuildResult> {
  const script = c.scriptFile ? await Deno.readTextFile(c.scriptFile) : "";
  const spec = { extraPackages: c.packages, script };
  const key = await imageKey(spec);
  const info = await ensureImage({ root: c.work, spec, log: (l) => console.log(l) });
  if (info.key !== key) throw new Error(`built image ${info.key}, expected ${key}`);
  const bytes = await publish(info.path, c.out);
  await Deno.remove(info.dir, { recursive: true }).catch(() => {});
  return { key, bytes };
}

/** Makes an unpacked tree bootable by our init; throws when it lacks sshd. */
export async function prepareImportedTree(root: string): Promise<void> {
  try {
    await Deno.lstat(`${root}/usr/sbin/sshd`);
  } catch {
    throw new Error(
      "the root file system has no /usr/sbin/sshd: a sandbox needs OpenSSH's server (install " +
        "openssh-server in the image, e.g. `apt-get install -y openssh-server`, then export it again)",
    );
  }
  // A container runtime's marker, and what the guest init writes at every boot.
  await Deno.remove(`${root}/.dockerenv`).catch(() => {});
  for (const d of ["opt/openshell", "etc/openshell", "tmp", "proc", "sys", "dev", "run"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  await Deno.chmod(root, 0o755);
  await Deno.chmod(`${root}/tmp`, 0o1777);
  await Deno.chmod(`${root}/etc/openshell`, 0o700);
}

async function importTar(c: Extract<BuilderCommand, { kind: "import" }>): Promise<BuildResult> {
  const sum = /\/(import-[0-9a-f]{32})\.img$/.exec(c.out)?.[1];
  if (!sum) throw new Error("--out must name <images>/import-<hash>.img");
  const tmp = await Deno.makeTempDir({ dir: c.work, prefix: ".import-" });
  const root = `${tmp}/root`;
  try {
    await Deno.mkdir(root);
    console.log("unpacking the root file system");
    // GNU tar drops leading "/" and refuses members that climb out with "..".
    await run("tar", ["-x", "--numeric-owner", "-p", "-f", c.tar, "-C", root]);
    await prepareImportedTree(root);
    const { files, bytes } = await measure(root);
    console.log(`writing the disk image (${files} files, ${(bytes / 2 ** 20).toFixed(0)} MiB)`);
    await Deno.mkdir(`${tmp}/out`);
    await run("mke2fs", mkfsArgs(root, `${tmp}/out/rootfs.img`, imageGeometry(files, bytes)));
    return { key: sum, bytes: await publish(`${tmp}/out/rootfs.img`, c.out) };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Runs one builder command; resolves with the exit status. */
export async function main(args: readonly string[]): Promise<number> {
  let command: BuilderCommand;
  try {
    command = parseBuilderArgs(args);
  } catch (err) {
    console.error(`openshell-image-builder: ${(err as Error).message}`);
    return 2;
  }
  try {
    await Deno.mkdir(command.work, { recursive: true, mode: 0o700 });
    const result = command.kind === "build" ? await build(command) : await importTar(command);
    console.log(RESULT_PREFIX + JSON.stringify(result));
    return 0;
  } catch (err) {
    console.error(`openshell-image-builder: ${(err as Error).message.split("\n").join("; ")}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
