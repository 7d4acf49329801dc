import assert from "node:assert/strict";
import {
  buildProblem,
  DEFAULT_IMAGE_NAME,
  imageNameProblem,
  importKey,
  MAX_BUILD_PACKAGES,
  MAX_SCRIPT_BYTES,
} from "./images.ts";

Deno.test("images: names are short, lower-case and cannot pass for a path or the default", () => {
  for (const ok of ["dev", "py3.12", "a", "team_x-2", "9lives", "x".repeat(63)]) {
    assert.equal(imageNameProblem(ok), undefined, ok);
  }
  for (const bad of ["", "Dev", "-x", ".x", "../x", "a/b", "a b", "x".repeat(64), "é", "a\n"]) {
    assert.match(imageNameProblem(bad) ?? "", /image names are 1-63/, JSON.stringify(bad));
  }
  assert.match(imageNameProblem(DEFAULT_IMAGE_NAME) ?? "", /built-in image/);
  assert.equal(imageNameProblem(DEFAULT_IMAGE_NAME, { allowDefault: true }), undefined);
  assert.ok(imageNameProblem("y".repeat(5000))!.length < 200, "the echo is bounded");
});

Deno.test("images: build packages and script are checked and bounded", () => {
  assert.equal(buildProblem(["cowsay", "g++", "libc6-dev"], "apt-get clean\n"), undefined);
  assert.match(buildProblem(["bad name"], "") ?? "", /not a Debian package name/);
  assert.match(buildProblem(["a;rm -rf /"], "") ?? "", /not a Debian package name/);
  assert.match(buildProblem(["-o", "x"], "") ?? "", /not a Debian package name/);
  const many = Array.from({ length: MAX_BUILD_PACKAGES + 1 }, (_, i) => `p${i}`);
  assert.match(buildProblem(many, "") ?? "", /at most 64/);
  assert.match(buildProblem([], "x".repeat(MAX_SCRIPT_BYTES + 1)) ?? "", /at most 65536/);
  assert.match(buildProblem([], "a\0b") ?? "", /NUL/);
});

Deno.test("images: an import's key is its content's hash", () => {
  const hex = "ab".repeat(32);
  assert.equal(importKey(hex), `import-${"ab".repeat(16)}`);
  assert.throws(() => importKey("xyz"), /SHA-256/);
});
