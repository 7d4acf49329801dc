/**
 * The VM driver's named guest images (`openshell image build|import|list|
 * delete`, `sandbox create --image NAME`).
 *
 * Content-addressed and shared: an image's bytes live once in
 * `<state-dir>/images/<key>.img` — where `disk.ts` keeps the shared copy of
 * every image a sandbox disk is an overlay of — and a name points at a key
 * (`<state-dir>/image-names/<name>.json`). Two names with the same inputs
 * (the same packages and script; the same tarball) share one file; a build
 * whose key exists already finishes at once. `default` is the runtime's
 * built-in image and cannot be built, imported or deleted.
 *
 * Building and importing run in the image builder (`image_builder.ts`), a
 * process with its own grants, one at a time (a second request is
 * RESOURCE_EXHAUSTED); its output lines are the progress. An image that a
 * sandbox's disk is an overlay of cannot be deleted (FAILED_PRECONDITION
 * naming the sandboxes); the file goes once no name and no disk uses it.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  buildProblem,
  DEFAULT_IMAGE_NAME,
  imageNameProblem,
  importKey,
  MAX_IMPORT_BYTES,
} from "../core/images.ts";
import type { Logger } from "../core/log.ts";
import type { Image } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { capLine } from "../core/text.ts";
import type { ImageRef } from "./disk.ts";
import { imageKey } from "./image/debian.ts";
import { RESULT_PREFIX } from "./image_builder.ts";
import { shareDir, type VmUser } from "./vm_user.ts";

/** A named image as stored (`image-names/<name>.json`). */
export interface ImageEntry {
  name: string;
  key: string;
  size_bytes: number;
  created_at_ms: number;
  source: "build" | "import";
  packages: string[];
}

/** Longest a build may take. */
export const BUILD_TIMEOUT_MS = 60 * 60 * 1000;
/** Progress lines kept from the builder, in bytes each. */
const MAX_PROGRESS_LINE = 2048;

/** Runs the builder (tests inject a fake); resolves with its exit status. */
export type BuilderRunner = (
  args: readonly string[],
  onLine: (line: string) => void,
) => Promise<{ code: number; stderr: string }>;

/** The real runner: spawns `program` with an empty environment (PATH only). */
export function builderRunner(program: string): BuilderRunner {
  return async (args, onLine) => {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, {
        args: [...args],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        clearEnv: true,
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      }).spawn();
    } catch (err) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `this driver cannot build images: its image builder ${program} cannot run (${
          (err as Error).message
        }); install it or pass --image-builder PATH`,
      );
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, BUILD_TIMEOUT_MS);
    let stderr = "";
    const lines = async (stream: ReadableStream<Uint8Array>, each: (l: string) => void) => {
      let rest = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        const parts = rest.split("\n");
        rest = parts.pop() ?? "";
        // A line without an end is cut rather than kept whole.
        if (rest.length > MAX_PROGRESS_LINE) rest = rest.slice(0, MAX_PROGRESS_LINE);
        for (const p of parts) each(p);
      }
      if (rest) each(rest);
    };
    await Promise.all([
      lines(child.stdout, onLine),
      lines(child.stderr, (l) => {
        stderr = capLine(l, MAX_PROGRESS_LINE);
        onLine(l);
      }),
    ]);
    const status = await child.status;
    clearTimeout(timer);
    return { code: status.code, stderr };
  };
}

/** Options of {@link Images}. */
export interface ImagesOptions {
  stateDir: string;
  /** The runtime's built-in image (`default`). */
  defaultImage: () => Promise<ImageRef>;
  /** The builder; absent: builds and imports are FAILED_PRECONDITION naming `builderPath`. */
  runner?: BuilderRunner;
  /** The builder's path, for messages. */
  builderPath?: string;
  /** Image keys sandbox disks use now, with the sandboxes (names) using each. */
  inUse: () => Map<string, string[]>;
  /** qemu's account when the driver is root (images are shared with its group). */
  vmUser?: VmUser;
  log: Logger;
  now?: () => number;
}

/** The driver's images (see the module docs). */
export class Images {
  readonly #o: ImagesOptions;
  #busy = false;

  /** Creates the store; nothing is read until used. */
  constructor(options: ImagesOptions) {
    this.#o = options;
  }

  get #namesDir(): string {
    return `${this.#o.stateDir}/image-names`;
  }

  /** `<state-dir>/images`. */
  get imagesDir(): string {
    return `${this.#o.stateDir}/images`;
  }

  get #workDir(): string {
    return `${this.#o.stateDir}/image-build`;
  }

  /** The file of image `key`. */
  imagePath(key: string): string {
    return `${this.imagesDir}/${key}.img`;
  }

  async #read(name: string): Promise<ImageEntry | undefined> {
    let text: string;
    try {
      text = await Deno.readTextFile(`${this.#namesDir}/${name}.json`);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
    const e = JSON.parse(text) as ImageEntry;
    if (e.name !== name || typeof e.key !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(e.key)) {
      this.#o.log.warn("ignoring a damaged image name file", { name });
      return undefined;
    }
    return e;
  }

  /** Every named image, by name. */
  async entries(): Promise<ImageEntry[]> {
    const out: ImageEntry[] = [];
    try {
      for await (const f of Deno.readDir(this.#namesDir)) {
        const m = /^(.+)\.json$/.exec(f.name);
        if (!f.isFile || !m || imageNameProblem(m[1])) continue;
        const e = await this.#read(m[1]);
        if (e) out.push(e);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Keys of every named image (never pruned). */
  async keys(): Promise<Set<string>> {
    return new Set((await this.entries()).map((e) => e.key));
  }

  /**
   * The image a sandbox boots: `""`/`default` is the built-in one; an
   * unknown name is NOT_FOUND naming `openshell image list`.
   */
  async resolve(name: string): Promise<ImageRef> {
    if (!name || name === DEFAULT_IMAGE_NAME) return await this.#o.defaultImage();
    const problem = imageNameProblem(name);
    if (problem) throw new StatusError(Code.INVALID_ARGUMENT, `template.image: ${problem}`);
    const e = await this.#read(name);
    if (!e) {
      throw new StatusError(
        Code.NOT_FOUND,
        `image "${name}" not found; see \`openshell image list\` (or build it: ` +
          `\`openshell image build ${name} --packages …\`)`,
      );
    }
    return { path: this.imagePath(e.key), key: e.key, format: "raw" };
  }

  #public(e: ImageEntry, inUse: Map<string, string[]>): Image {
    return {
      name: e.name,
      id: e.key,
      size_bytes: e.size_bytes,
      created_at_ms: e.created_at_ms,
      source: e.source,
      packages: e.packages,
      sandboxes: inUse.get(e.key)?.length ?? 0,
    };
  }

  /** ListImages: `default` first, then the named ones. */
  async list(): Promise<Image[]> {
    const inUse = this.#o.inUse();
    const out: Image[] = [];
    try {
      const d = await this.#o.defaultImage();
      out.push({
        name: DEFAULT_IMAGE_NAME,
        id: d.key,
        size_bytes: (await Deno.stat(d.path)).size,
        created_at_ms: 0,
        source: "default",
        packages: [],
        sandboxes: inUse.get(d.key)?.length ?? 0,
      });
    } catch {
      // No runtime yet: only the named images.
    }
    for (const e of await this.entries()) out.push(this.#public(e, inUse));
    return out;
  }

  async #claimName(name: string): Promise<void> {
    const problem = imageNameProblem(name);
    if (problem) throw new StatusError(Code.INVALID_ARGUMENT, problem);
    if (await this.#read(name)) {
      throw new StatusError(
        Code.ALREADY_EXISTS,
        `image "${name}" exists; delete it first (\`openshell image delete ${name}\`)`,
      );
    }
  }

  #builder(): BuilderRunner {
    if (!this.#o.runner) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `this driver cannot build images: its image builder ${
          this.#o.builderPath ?? "(none configured)"
        } is missing (pass --image-builder PATH)`,
      );
    }
    return this.#o.runner;
  }

  async #lock<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#busy) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        "an image build or import is running; try again when it is done",
      );
    }
    this.#busy = true;
    try {
      return await fn();
    } finally {
      this.#busy = false;
    }
  }

  async #prepareDirs(): Promise<void> {
    await Deno.mkdir(this.#namesDir, { recursive: true, mode: 0o700 });
    await Deno.mkdir(this.#workDir, { recursive: true, mode: 0o700 });
    await Deno.mkdir(this.imagesDir, { recursive: true, mode: 0o700 });
    if (this.#o.vmUser) await shareDir(this.imagesDir, this.#o.vmUser);
  }

  /** Runs the builder; its result line must name `key`. */
  async #runBuilder(args: string[], key: string, onLine: (l: string) => void): Promise<number> {
    let result: { key?: string; bytes?: number } | undefined;
    const { code, stderr } = await this.#builder()(args, (line) => {
      if (line.startsWith(RESULT_PREFIX)) {
        try {
          result = JSON.parse(line.slice(RESULT_PREFIX.length));
        } catch { /* not ours */ }
        return;
      }
      onLine(capLine(line, MAX_PROGRESS_LINE));
    });
    if (code !== 0 || !result) {
      throw new StatusError(
        Code.INTERNAL,
        `the image builder failed (status ${code}): ${
          stderr.replace(/^openshell-image-builder: /, "") || "no message"
        }`,
      );
    }
    if (result.key !== key || typeof result.bytes !== "number") {
      throw new StatusError(Code.INTERNAL, `the image builder made ${result.key}, not ${key}`);
    }
    // Shared read-only with qemu's group, like every image (disk.ts).
    const path = this.imagePath(key);
    if (this.#o.vmUser) {
      await Deno.chown(path, 0, this.#o.vmUser.gid);
      await Deno.chmod(path, 0o640);
    } else await Deno.chmod(path, 0o600);
    return result.bytes;
  }

  async #existing(key: string): Promise<number | undefined> {
    try {
      return (await Deno.stat(this.imagePath(key))).size;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
  }

  async #name(entry: ImageEntry): Promise<Image> {
    const tmp = `${this.#namesDir}/.${entry.name}.json.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(entry) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, `${this.#namesDir}/${entry.name}.json`);
    this.#o.log.info("image ready", { name: entry.name, key: entry.key, source: entry.source });
    return this.#public(entry, this.#o.inUse());
  }

  /**
   * BuildImage: the default image's packages plus `packages`, then
   * `script`; `onLine` gets the builder's progress. An image with the same
   * inputs is reused at once.
   */
  async build(
    req: { name: string; packages: readonly string[]; script: string },
    onLine: (line: string) => void,
  ): Promise<Image> {
    await this.#claimName(req.name);
    const problem = buildProblem(req.packages, req.script);
    if (problem) throw new StatusError(Code.INVALID_ARGUMENT, problem);
    const packages = [...new Set(req.packages)].sort();
    return await this.#lock(async () => {
      await this.#claimName(req.name);
      await this.#prepareDirs();
      const key = await imageKey({ extraPackages: packages, script: req.script });
      let bytes = await this.#existing(key);
      if (bytes !== undefined) {
        onLine(`image ${key} exists already (same packages and script): reusing it`);
      } else {
        const args = ["build", "--work", this.#workDir, "--out", this.imagePath(key)];
        if (packages.length) args.push("--packages", packages.join(","));
        let scriptFile: string | undefined;
        if (req.script) {
          scriptFile = `${this.#workDir}/script-${crypto.randomUUID()}.sh`;
          await Deno.writeTextFile(scriptFile, req.script, { mode: 0o600 });
          args.push("--script-file", scriptFile);
        }
        try {
          bytes = await this.#runBuilder(args, key, onLine);
        } finally {
          if (scriptFile) await Deno.remove(scriptFile).catch(() => {});
        }
      }
      return await this.#name({
        name: req.name,
        key,
        size_bytes: bytes,
        created_at_ms: (this.#o.now ?? Date.now)(),
        source: "build",
        packages,
      });
    });
  }

  /**
   * ImportImage: `data` must be exactly `sizeBytes` bytes of a tar archive
   * of a root file system (at most {@link MAX_IMPORT_BYTES}); written to
   * the work dir while it is hashed, then turned into an image by the
   * builder (or reused when that tarball was imported before).
   */
  async import(
    header: { name: string; sizeBytes: number },
    data: AsyncIterable<Uint8Array>,
    onLine: (line: string) => void = () => {},
  ): Promise<Image> {
    await this.#claimName(header.name);
    if (!Number.isSafeInteger(header.sizeBytes) || header.sizeBytes < 1) {
      throw new StatusError(Code.INVALID_ARGUMENT, "size_bytes must say how big the tarball is");
    }
    if (header.sizeBytes > MAX_IMPORT_BYTES) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `the tarball is ${header.sizeBytes} bytes; at most ${MAX_IMPORT_BYTES} are imported`,
      );
    }
    this.#builder();
    return await this.#lock(async () => {
      await this.#claimName(header.name);
      await this.#prepareDirs();
      const tar = `${this.#workDir}/upload-${crypto.randomUUID()}.tar`;
      try {
        const hash = createHash("sha256");
        const file = await Deno.open(tar, { write: true, createNew: true, mode: 0o600 });
        let received = 0;
        try {
          for await (const chunk of data) {
            received += chunk.length;
            if (received > header.sizeBytes) {
              throw new StatusError(
                Code.INVALID_ARGUMENT,
                `the upload is longer than the ${header.sizeBytes} bytes its header announced`,
              );
            }
            hash.update(chunk);
            let off = 0;
            while (off < chunk.length) off += await file.write(chunk.subarray(off));
          }
        } finally {
          file.close();
        }
        if (received !== header.sizeBytes) {
          throw new StatusError(
            Code.INVALID_ARGUMENT,
            `the upload ended after ${received} of ${header.sizeBytes} bytes`,
          );
        }
        const key = importKey(hash.digest("hex"));
        let bytes = await this.#existing(key);
        if (bytes !== undefined) onLine(`image ${key} exists already (same tarball): reusing it`);
        else {
          bytes = await this.#runBuilder(
            ["import", "--work", this.#workDir, "--out", this.imagePath(key), "--tar", tar],
            key,
            onLine,
          );
        }
        return await this.#name({
          name: header.name,
          key,
          size_bytes: bytes,
          created_at_ms: (this.#o.now ?? Date.now)(),
          source: "import",
          packages: [],
        });
      } finally {
        await Deno.remove(tar).catch(() => {});
      }
    });
  }

  /**
   * DeleteImage: false when there is no such name; FAILED_PRECONDITION
   * while a sandbox's disk is an overlay of it. Its file goes when no other
   * name points at it.
   */
  async delete(name: string): Promise<boolean> {
    const problem = imageNameProblem(name);
    if (problem) throw new StatusError(Code.INVALID_ARGUMENT, problem);
    const e = await this.#read(name);
    if (!e) return false;
    const users = this.#o.inUse().get(e.key) ?? [];
    if (users.length) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `image "${name}" is in use by ${users.length} sandbox(es) (${users.slice(0, 5).join(", ")}${
          users.length > 5 ? ", …" : ""
        }); delete them first`,
      );
    }
    await Deno.remove(`${this.#namesDir}/${name}.json`);
    const others = (await this.entries()).some((x) => x.key === e.key);
    let isDefault = false;
    try {
      isDefault = (await this.#o.defaultImage()).key === e.key;
    } catch { /* no runtime */ }
    if (!others && !isDefault) await Deno.remove(this.imagePath(e.key)).catch(() => {});
    this.#o.log.info("image deleted", { name, key: e.key });
    return true;
  }
}
