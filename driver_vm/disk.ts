/**
 * Each sandbox's own disk: a qcow2 overlay (`<sandbox-dir>/disk.qcow2`)
 * whose backing file is the image it was created from, so everything the
 * sandbox writes (its `/sandbox` home, what its user installs) lands in
 * its own file, persists across restarts of its VM and goes with the
 * sandbox's directory when it is deleted. The overlay's virtual size is the
 * sandbox's disk size (`--disk-gib`, default {@link DEFAULT_DISK_GIB}); it
 * is sparse: it takes host space only as the guest writes.
 *
 * Images are shared read-only: the driver keeps one copy of each in
 * `<state-dir>/images/<key>.img` (copied from the runtime dir once per
 * image key, never changed afterwards, so an overlay's backing file stays
 * the bytes it was made on). qemu opens the image read-only and the overlay
 * read-write with the chain named on its command line (`qemu.ts`), never
 * from the path written inside the overlay.
 *
 * Root mode (qemu runs as `--vm-user`, see `vm_user.ts`): images are
 * root's, mode 0640, group = qemu's group, in a 0710 directory; overlays
 * belong to qemu's user, mode 0600. Otherwise everything is the driver's,
 * 0600 in 0700 directories.
 *
 * @module
 */
import { DEFAULT_DISK_GIB, MAX_DISK_GIB } from "../core/shared_flags.ts";
import { Code, StatusError } from "../core/status.ts";
import type { RootDiskSpec } from "./qemu.ts";
import { giveFile, shareDir, type VmUser } from "./vm_user.ts";

// The default and largest disk (a sparse file's size, not host space taken) are options' rules too.
export { DEFAULT_DISK_GIB, MAX_DISK_GIB };
/** The overlay's name in the sandbox's directory. */
export const OVERLAY_FILE = "disk.qcow2";
/** Where qemu-img is unless `--qemu-img` says otherwise. */
export const DEFAULT_QEMU_IMG = "/usr/bin/qemu-img";

const GIB = 2 ** 30;

/** An image a sandbox can boot. */
export interface ImageRef {
  /** The image file (e.g. `<runtime-dir>/rootfs.img`). */
  path: string;
  /** Its content key (names the shared copy; never reused for other bytes). */
  key: string;
  format: "raw" | "qcow2";
}

/** Throws INVALID_ARGUMENT unless a disk of `sizeGiB` can hold the image at `imagePath`. */
export async function checkDiskFits(imagePath: string, sizeGiB: number): Promise<void> {
  const imageBytes = (await Deno.stat(imagePath)).size;
  if (sizeGiB * GIB < imageBytes) {
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `a ${sizeGiB} GiB disk cannot hold the image (${
        (imageBytes / GIB).toFixed(1)
      } GiB): ask for at least ${Math.ceil(imageBytes / GIB)} GiB`,
    );
  }
}

/** `qemu-img` arguments that create a sparse overlay of `sizeGiB` over `base`. */
export function overlayArgs(o: {
  base: string;
  baseFormat: "raw" | "qcow2";
  overlay: string;
  sizeGiB: number;
}): string[] {
  if (!Number.isInteger(o.sizeGiB) || o.sizeGiB < 1 || o.sizeGiB > MAX_DISK_GIB) {
    throw new Error(`disk size must be 1 to ${MAX_DISK_GIB} GiB, got ${o.sizeGiB}`);
  }
  for (const p of [o.base, o.overlay]) {
    if (!p.startsWith("/")) throw new Error(`disk paths must be absolute: ${p}`);
  }
  return [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    o.base,
    "-F",
    o.baseFormat,
    o.overlay,
    `${o.sizeGiB}G`,
  ];
}

/** Runs a program to completion; the real one spawns it with an empty environment. */
export type RunProgram = (
  program: string,
  args: readonly string[],
) => Promise<{ code: number; stderr: string }>;

const runProgram: RunProgram = async (program, args) => {
  const out = await new Deno.Command(program, {
    args: [...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin", LANG: "C" },
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
};

/** Options of {@link Disks}. */
export interface DisksOptions {
  /** The driver's state dir (`images/` goes there). */
  stateDir: string;
  /** qemu-img. */
  qemuImg: string;
  /** qemu's account when the driver is root. */
  vmUser?: VmUser;
  /** Runs qemu-img (tests inject a fake); default spawns it. */
  run?: RunProgram;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

const IMAGE_KEY = /^[A-Za-z0-9_.-]{1,64}$/;

/** Shared images and per-sandbox overlays (see the module docs). */
export class Disks {
  readonly #o: DisksOptions;
  readonly #run: RunProgram;
  readonly #staging = new Map<string, Promise<string>>();

  /** Creates the manager; nothing is touched until used. */
  constructor(options: DisksOptions) {
    this.#o = options;
    this.#run = options.run ?? runProgram;
  }

  /** `<state-dir>/images`. */
  get imagesDir(): string {
    return `${this.#o.stateDir}/images`;
  }

  /** Where the shared copy of `image` lives. */
  imagePath(image: Pick<ImageRef, "key" | "format">): string {
    if (!IMAGE_KEY.test(image.key) || image.key.startsWith(".")) {
      throw new Error(`invalid image key: ${JSON.stringify(image.key)}`);
    }
    return `${this.imagesDir}/${image.key}.${image.format === "raw" ? "img" : "qcow2"}`;
  }

  /**
   * The shared copy of `image`, made on first use (copied beside and
   * renamed into place; concurrent callers share one copy).
   */
  stage(image: ImageRef): Promise<string> {
    const dest = this.imagePath(image);
    let p = this.#staging.get(dest);
    if (!p) {
      p = this.#stage(image, dest).catch((err) => {
        this.#staging.delete(dest);
        throw err;
      });
      this.#staging.set(dest, p);
    }
    return p;
  }

  async #stage(image: ImageRef, dest: string): Promise<string> {
    const user = this.#o.vmUser;
    await Deno.mkdir(this.imagesDir, { recursive: true, mode: 0o700 });
    if (user) await shareDir(this.imagesDir, user);
    const src = await Deno.stat(image.path);
    const have = await statOrNull(dest);
    if (have && have.size === src.size) return dest;
    const tmp = `${dest}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    try {
      await Deno.copyFile(image.path, tmp);
      if (user) {
        await Deno.chown(tmp, 0, user.gid);
        await Deno.chmod(tmp, 0o640);
      } else {
        await Deno.chmod(tmp, 0o600);
      }
      await Deno.rename(tmp, dest);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
    return dest;
  }

  /**
   * The sandbox's root disk in `dir`: its overlay, created over the shared
   * copy of `image` with `sizeGiB` unless it is already there (a restart
   * keeps the disk). Throws INVALID_ARGUMENT when `sizeGiB` cannot hold the
   * image.
   */
  async prepare(o: { dir: string; image: ImageRef; sizeGiB: number }): Promise<
    RootDiskSpec & { created: boolean }
  > {
    const overlay = `${o.dir}/${OVERLAY_FILE}`;
    const exists = (await statOrNull(overlay)) !== null;
    if (!exists) await checkDiskFits(o.image.path, o.sizeGiB);
    const base = await this.stage(o.image);
    const spec = { overlay, base, baseFormat: o.image.format };
    if (exists) return { ...spec, created: false };
    const args = overlayArgs({ ...spec, sizeGiB: o.sizeGiB });
    const res = await this.#run(this.#o.qemuImg, args);
    if (res.code !== 0) {
      await Deno.remove(overlay).catch(() => {});
      const detail = res.stderr.trim().split("\n").at(-1) ?? "";
      throw new Error(`qemu-img create failed with status ${res.code}: ${detail}`);
    }
    if (this.#o.vmUser) await giveFile(overlay, this.#o.vmUser);
    else await Deno.chmod(overlay, 0o600);
    return { ...spec, created: true };
  }

  /**
   * Removes shared images no sandbox uses (`keep`: keys still needed);
   * returns the file names removed.
   */
  async prune(keep: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    try {
      for await (const e of Deno.readDir(this.imagesDir)) {
        const m = /^(.+)\.(img|qcow2)$/.exec(e.name);
        if (!e.isFile || !m || keep.has(m[1])) continue;
        await Deno.remove(`${this.imagesDir}/${e.name}`).catch(() => {});
        removed.push(e.name);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return removed.sort();
  }
}
