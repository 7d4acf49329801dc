/**
 * `openshell image list|build|import|delete`: the guest images of the
 * gateway's VM driver (openshell-deno's image API).
 *
 * @module
 */
import {
  buildProblem,
  imageNameProblem,
  MAX_IMPORT_BYTES,
  MAX_SCRIPT_BYTES,
} from "../../core/images.ts";
import type { Image } from "../../core/protocol.ts";
import { stripControls } from "../../core/text.ts";
import { UsageError } from "../args.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { formatAge, renderTable, toJson } from "../output.ts";

/** Bytes per upload message of `image import`. */
export const IMPORT_CHUNK_BYTES = 1024 * 1024;

/** `12.3 MiB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.ceil(bytes / 1024)} KiB`;
  if (bytes < 2 ** 30) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

function checkName(name: string, command: string): void {
  const problem = imageNameProblem(name);
  if (problem) throw new UsageError(problem, command);
}

/** `image list [-o table|json]`. */
export async function imageListCommand(ctx: Context): Promise<number> {
  const format = ctx.str("output");
  const images = await (await ctx.client()).listImages();
  if (format === "json") {
    await ctx.out(toJson(images));
    return 0;
  }
  const now = Date.now();
  await ctx.out(renderTable(
    ["NAME", "ID", "SOURCE", "SIZE", "SANDBOXES", "AGE", "PACKAGES"],
    images.map((i) => [
      ctx.style.cyan(stripControls(i.name)),
      stripControls(i.id),
      stripControls(i.source),
      formatSize(i.size_bytes),
      String(i.sandboxes),
      i.created_at_ms ? formatAge(i.created_at_ms, now) : "-",
      stripControls(i.packages.join(",")) || "-",
    ]),
    ctx.style,
  ));
  return 0;
}

function describe(image: Image): string {
  return `${image.name} (${image.id}, ${formatSize(image.size_bytes)})`;
}

/** `image build NAME [--packages A,B]… [--script FILE]`. */
export async function imageBuildCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  checkName(name, "image build");
  const packages = ctx.list("packages");
  let script = "";
  const file = ctx.str("script");
  if (file !== undefined) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(file);
    } catch (err) {
      throw new CliError(`cannot read --script ${file}: ${(err as Error).message}`);
    }
    if (info.size > MAX_SCRIPT_BYTES) {
      throw new CliError(`--script ${file} is ${info.size} bytes; at most ${MAX_SCRIPT_BYTES}`);
    }
    script = await Deno.readTextFile(file);
  }
  const problem = buildProblem(packages, script);
  if (problem) throw new UsageError(problem, "image build");
  ctx.handleInterrupts();
  const stream = (await ctx.client()).buildImage({ name, packages, script });
  const onInterrupt = () => stream.cancel();
  ctx.interrupt.addEventListener("abort", onInterrupt, { once: true });
  let image: Image | undefined;
  try {
    for await (const e of stream) {
      if (e.payload === "line") ctx.err(`${ctx.errStyle.dim("│")} ${stripControls(e.line)}\n`);
      else if (e.payload === "image") image = e.image;
    }
  } finally {
    ctx.interrupt.removeEventListener("abort", onInterrupt);
  }
  if (!image) {
    if (ctx.interrupt.aborted) {
      throw new CliError("stopped following the build; it goes on on the gateway's host");
    }
    throw new CliError("the gateway ended the build without an image");
  }
  await ctx.out(`Built image ${ctx.style.cyan(describe(image))}\n`);
  return 0;
}

/** Reads `file` in chunks of {@link IMPORT_CHUNK_BYTES}. */
async function* chunks(
  file: Deno.FsFile,
  onProgress: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  let sent = 0;
  while (true) {
    const buf = new Uint8Array(IMPORT_CHUNK_BYTES);
    const n = await file.read(buf);
    if (n === null) return;
    sent += n;
    onProgress(sent);
    yield buf.subarray(0, n);
  }
}

/** `image import NAME ROOTFS.tar`. */
export async function imageImportCommand(ctx: Context): Promise<number> {
  const [name, path] = ctx.invocation.positionals;
  checkName(name, "image import");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    const size = (await file.stat()).size;
    if (size < 1 || size > MAX_IMPORT_BYTES) {
      throw new CliError(
        `${path} is ${size} bytes; an import is 1 byte to ${formatSize(MAX_IMPORT_BYTES)}`,
      );
    }
    ctx.err(`Uploading ${path} (${formatSize(size)})\n`);
    let shown = 0;
    const progress = (sent: number) => {
      const tenth = Math.floor((sent / size) * 10);
      if (tenth > shown && sent < size) {
        shown = tenth;
        ctx.err(`  ${tenth * 10}%\n`);
      }
    };
    const image = await (await ctx.client()).importImage(
      { name, sizeBytes: size },
      chunks(file, progress),
    );
    await ctx.out(`Imported image ${ctx.style.cyan(describe(image))}\n`);
    return 0;
  } finally {
    try {
      file.close();
    } catch { /* closed */ }
  }
}

/** `image delete NAME…`; exit 1 when any did not exist. */
export async function imageDeleteCommand(ctx: Context): Promise<number> {
  const names = ctx.invocation.positionals;
  if (!names.length) throw new UsageError("missing NAME", "image delete");
  for (const n of names) checkName(n, "image delete");
  const client = await ctx.client();
  let missing = 0;
  for (const name of names) {
    if (await client.deleteImage(name)) await ctx.out(`Deleted image ${ctx.style.cyan(name)}\n`);
    else {
      ctx.err(`${ctx.errStyle.yellow("!")} Image ${name} not found\n`);
      missing++;
    }
  }
  if (missing) throw new CliError(`${missing} of ${names.length} images not found`);
  return 0;
}
