import assert from "node:assert/strict";
import { parseCommandLine } from "../args.ts";
import { formatSize } from "./image.ts";

Deno.test("image: sizes read naturally", () => {
  assert.equal(formatSize(2048), "2 KiB");
  assert.equal(formatSize(232 * 2 ** 20), "232.0 MiB");
  assert.equal(formatSize(3 * 2 ** 30), "3.00 GiB");
});

Deno.test("image: the commands' arguments", () => {
  const build = parseCommandLine([
    "image",
    "build",
    "py",
    "--packages",
    "a,b",
    "--packages",
    "c",
    "--script",
    "s.sh",
  ]);
  assert.ok(build.kind === "run");
  assert.deepEqual(build.invocation.values.packages, ["a", "b", "c"]);
  assert.throws(() => parseCommandLine(["image", "import", "mine"]), /missing ROOTFS\.tar/);
  assert.throws(() => parseCommandLine(["image", "build"]), /missing NAME/);
  const create = parseCommandLine(["sandbox", "create", "--image", "py", "--", "true"]);
  assert.ok(create.kind === "run" && create.invocation.values.image === "py");
});
