import assert from "node:assert/strict";
import { writeCpio } from "./cpio.ts";

Deno.test("cpio: a newc archive that cpio(1) lists and extracts faithfully", async () => {
  const archive = writeCpio([
    { kind: "dir", path: "bin" },
    { kind: "file", path: "bin/hello", data: new TextEncoder().encode("hi\n"), mode: 0o755 },
    { kind: "file", path: "odd", data: new Uint8Array([1, 2, 3, 4, 5]) },
    { kind: "symlink", path: "bin/sh", target: "busybox" },
  ]);
  assert.equal(archive.length % 4, 0);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/a.cpio`, archive);
    const child = new Deno.Command("cpio", {
      args: ["-idm", "--quiet", "-F", `${dir}/a.cpio`],
      cwd: `${dir}`,
      stdout: "piped",
      stderr: "piped",
    });
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(await Deno.readTextFile(`${dir}/bin/hello`), "hi\n");
    assert.equal((await Deno.stat(`${dir}/bin/hello`)).mode! & 0o777, 0o755);
    assert.deepEqual(await Deno.readFile(`${dir}/odd`), new Uint8Array([1, 2, 3, 4, 5]));
    assert.equal(await Deno.readLink(`${dir}/bin/sh`), "busybox");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cpio: same entries, same bytes; bad paths refused", () => {
  const e = [{ kind: "file" as const, path: "x", data: new Uint8Array([9]) }];
  assert.deepEqual(writeCpio(e), writeCpio(e));
  for (const path of ["/abs", "a/../b", "", "a//b"]) {
    assert.throws(() => writeCpio([{ kind: "dir", path }]), /invalid cpio member path/);
  }
});
