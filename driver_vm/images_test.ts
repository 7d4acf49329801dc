import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { MAX_IMPORT_BYTES } from "../core/images.ts";
import { waitFor } from "../core/testing.ts";
import { Code, StatusError } from "../core/status.ts";
import { imageKey } from "./image/debian.ts";
import { RESULT_PREFIX } from "./image_builder.ts";
import { type BuilderRunner, Images } from "./images.ts";
import { memoryLogger } from "./testing.ts";

interface Harness {
  dir: string;
  images: Images;
  /** Builder runs (arguments). */
  runs: string[][];
  /** Sandboxes using each key (what the driver would say). */
  users: Map<string, string[]>;
  /** Makes the fake builder fail with this message. */
  fail?: string;
  /** Holds the fake builder until resolved. */
  hold?: Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function harness(): Promise<Harness> {
  const dir = await Deno.makeTempDir({ prefix: "vmimg" });
  await Deno.writeFile(`${dir}/default.img`, new Uint8Array(1000));
  const h = {
    dir,
    runs: [] as string[][],
    users: new Map<string, string[]>(),
  } as unknown as Harness;
  // The builder's stand-in: prints progress, writes --out, reports its key.
  const runner: BuilderRunner = async (args, onLine) => {
    h.runs.push([...args]);
    await h.hold;
    onLine("debootstrap: Retrieving InRelease");
    if (h.fail) return { code: 1, stderr: `openshell-image-builder: ${h.fail}` };
    const out = args[args.indexOf("--out") + 1];
    await Deno.writeFile(out, new Uint8Array(4096));
    const key = /\/([^/]+)\.img$/.exec(out)![1];
    onLine(`${RESULT_PREFIX}${JSON.stringify({ key, bytes: 4096 })}`);
    return { code: 0, stderr: "" };
  };
  h.images = new Images({
    stateDir: `${dir}/state`,
    defaultImage: () =>
      Promise.resolve({ path: `${dir}/default.img`, key: "defaultkey", format: "raw" }),
    runner,
    inUse: () => h.users,
    log: memoryLogger().log,
    now: () => 1_000,
  });
  h[Symbol.asyncDispose] = () => Deno.remove(dir, { recursive: true });
  return h;
}

function code(c: Code, re?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof StatusError, String(e));
    assert.equal(e.code, c, e.message);
    if (re) assert.match(e.message, re);
    return true;
  };
}

async function* bytes(...parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

Deno.test("images: build names the image by its inputs' key; the same inputs reuse it at once", async () => {
  await using h = await harness();
  const lines: string[] = [];
  const img = await h.images.build(
    { name: "py", packages: ["python3-numpy", "cowsay", "cowsay"], script: "echo hi\n" },
    (l) => lines.push(l),
  );
  const key = await imageKey({ extraPackages: ["cowsay", "python3-numpy"], script: "echo hi\n" });
  assert.deepEqual(img, {
    name: "py",
    id: key,
    size_bytes: 4096,
    created_at_ms: 1_000,
    source: "build",
    packages: ["cowsay", "python3-numpy"],
    sandboxes: 0,
  });
  assert.deepEqual(lines, ["debootstrap: Retrieving InRelease"], "progress, never the result line");
  const run = h.runs[0];
  assert.deepEqual(run.slice(0, 5), [
    "build",
    "--work",
    `${h.dir}/state/image-build`,
    "--out",
    `${h.dir}/state/images/${key}.img`,
  ]);
  assert.equal(run[run.indexOf("--packages") + 1], "cowsay,python3-numpy");
  const scriptFile = run[run.indexOf("--script-file") + 1];
  await assert.rejects(Deno.stat(scriptFile), Deno.errors.NotFound, "the script file is removed");
  // Another name, the same inputs in another order: no build, the same file.
  const again = await h.images.build(
    { name: "py2", packages: ["cowsay", "python3-numpy"], script: "echo hi\n" },
    () => {},
  );
  assert.equal(again.id, key);
  assert.equal(h.runs.length, 1);
  assert.deepEqual(
    (await h.images.list()).map((i) => [i.name, i.source, i.id]),
    [["default", "default", "defaultkey"], ["py", "build", key], ["py2", "build", key]],
  );
  assert.deepEqual(await h.images.resolve("py"), {
    path: `${h.dir}/state/images/${key}.img`,
    key,
    format: "raw",
  });
});

Deno.test("images: bad names and inputs, a taken name, a second build at once, a failed build", async () => {
  await using h = await harness();
  const build = (name: string, packages: string[] = [], script = "") =>
    h.images.build({ name, packages, script }, () => {});
  await assert.rejects(build("Bad/Name"), code(Code.INVALID_ARGUMENT, /image names are/));
  await assert.rejects(build("default"), code(Code.INVALID_ARGUMENT, /built-in image/));
  await assert.rejects(build("x", ["rm -rf"]), code(Code.INVALID_ARGUMENT, /package name/));
  await build("taken");
  await assert.rejects(build("taken"), code(Code.ALREADY_EXISTS, /openshell image delete taken/));
  let release!: () => void;
  h.hold = new Promise((r) => release = r);
  const first = build("slow", ["cowsay"]);
  // The second starts once the first holds the builder (both check their names first).
  await waitFor("the first build to run", () => h.runs.length === 2);
  await assert.rejects(build("other", ["sl"]), code(Code.RESOURCE_EXHAUSTED, /is running/));
  release();
  await first;
  h.fail = "debootstrap failed with status 1: E: Couldn't find package nope";
  await assert.rejects(
    build("broken", ["nope"]),
    code(Code.INTERNAL, /Couldn't find package nope/),
  );
  await assert.rejects(h.images.resolve("broken"), code(Code.NOT_FOUND, /openshell image list/));
  assert.equal(h.runs.length, 3, "the refused builds never ran the builder");
});

Deno.test("images: an import is exactly its announced bytes, keyed by their hash, reused", async () => {
  await using h = await harness();
  const tar = new TextEncoder().encode("pretend this is a tarball\n".repeat(100));
  const key = `import-${createHash("sha256").update(tar).digest("hex").slice(0, 32)}`;
  const img = await h.images.import(
    { name: "mine", sizeBytes: tar.length },
    bytes(tar.subarray(0, 1000), tar.subarray(1000)),
  );
  assert.equal(img.id, key);
  assert.equal(img.source, "import");
  const run = h.runs[0];
  assert.equal(run[0], "import");
  const uploaded = run[run.indexOf("--tar") + 1];
  await assert.rejects(Deno.stat(uploaded), Deno.errors.NotFound, "the upload is removed");
  await h.images.import({ name: "same", sizeBytes: tar.length }, bytes(tar));
  assert.equal(h.runs.length, 1, "the same tarball is not converted twice");
  await assert.rejects(
    h.images.import({ name: "long", sizeBytes: 10 }, bytes(tar)),
    code(Code.INVALID_ARGUMENT, /longer than the 10 bytes/),
  );
  await assert.rejects(
    h.images.import({ name: "short", sizeBytes: tar.length + 1 }, bytes(tar)),
    code(Code.INVALID_ARGUMENT, /ended after 2600 of 2601 bytes/),
  );
  await assert.rejects(
    h.images.import({ name: "huge", sizeBytes: MAX_IMPORT_BYTES + 1 }, bytes()),
    code(Code.INVALID_ARGUMENT, /at most/),
  );
  let left = 0;
  for await (const _ of Deno.readDir(`${h.dir}/state/image-build`)) left++;
  assert.equal(left, 0, "no upload left behind by the refused ones");
});

Deno.test("images: delete refuses an image a sandbox's disk uses; the file goes with its last name", async () => {
  await using h = await harness();
  const a = await h.images.build({ name: "a", packages: ["cowsay"], script: "" }, () => {});
  await h.images.build({ name: "b", packages: ["cowsay"], script: "" }, () => {});
  const file = `${h.dir}/state/images/${a.id}.img`;
  h.users.set(a.id, ["dev", "ci"]);
  assert.equal((await h.images.list()).find((i) => i.name === "a")!.sandboxes, 2);
  await assert.rejects(
    h.images.delete("a"),
    code(Code.FAILED_PRECONDITION, /in use by 2 sandbox\(es\) \(dev, ci\); delete them first/),
  );
  h.users.clear();
  assert.equal(await h.images.delete("a"), true);
  assert.ok((await Deno.stat(file)).isFile, "b still names it");
  assert.equal(await h.images.delete("b"), true);
  await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
  assert.equal(await h.images.delete("b"), false);
  await assert.rejects(h.images.delete("../x"), code(Code.INVALID_ARGUMENT));
  assert.deepEqual(await h.images.resolve(""), {
    path: `${h.dir}/default.img`,
    key: "defaultkey",
    format: "raw",
  });
});
