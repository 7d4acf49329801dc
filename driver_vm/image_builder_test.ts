import assert from "node:assert/strict";
import { imageBuilderRunArgs } from "../core/grants.ts";
import { REPO_ROOT } from "../core/launcher.ts";
import { parseBuilderArgs, prepareImportedTree, RESULT_PREFIX } from "./image_builder.ts";

Deno.test("image builder: arguments are checked (absolute paths, known commands)", () => {
  assert.deepEqual(
    parseBuilderArgs(["build", "--work", "/w", "--out", "/o.img", "--packages", "a, b,,c"]),
    { kind: "build", work: "/w", out: "/o.img", packages: ["a", "b", "c"] },
  );
  assert.deepEqual(
    parseBuilderArgs(["import", "--work", "/w", "--out", "/o.img", "--tar", "/t.tar"]),
    { kind: "import", work: "/w", out: "/o.img", tar: "/t.tar" },
  );
  assert.throws(
    () => parseBuilderArgs(["build", "--work", "w", "--out", "/o"]),
    /--work must be an absolute/,
  );
  assert.throws(() => parseBuilderArgs(["import", "--work", "/w", "--out", "/o"]), /--tar/);
  assert.throws(
    () => parseBuilderArgs(["rm", "--work", "/w", "--out", "/o"]),
    /unknown command "rm"/,
  );
  assert.throws(() => parseBuilderArgs(["build", "--evil", "x"]), /unknown option --evil/);
  assert.throws(
    () => parseBuilderArgs(["import", "--work", "/w", "--out", "/o", "--tar", "t.tar"]),
    /--tar must be an absolute path, got "t\.tar"/,
  );
});

Deno.test("image builder: an imported tree without sshd is refused, saying what to install", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osimp" });
  try {
    await assert.rejects(prepareImportedTree(dir), /no \/usr\/sbin\/sshd.*openssh-server/);
    await Deno.mkdir(`${dir}/usr/sbin`, { recursive: true });
    await Deno.writeTextFile(`${dir}/usr/sbin/sshd`, "");
    await Deno.writeTextFile(`${dir}/.dockerenv`, "");
    await prepareImportedTree(dir);
    await assert.rejects(Deno.stat(`${dir}/.dockerenv`), Deno.errors.NotFound);
    assert.equal((await Deno.stat(`${dir}/tmp`)).mode! & 0o7777, 0o1777);
    assert.equal((await Deno.stat(`${dir}/etc/openshell`)).mode! & 0o7777, 0o700);
    assert.ok(
      (await Deno.stat(`${dir}/opt/openshell`)).isDirectory,
      "the runtime disk's mount point",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("image builder: import turns a tarball into an ext4 image under its grants", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osimp" });
  try {
    const tree = `${dir}/tree`;
    await Deno.mkdir(`${tree}/usr/sbin`, { recursive: true });
    await Deno.mkdir(`${tree}/etc`);
    await Deno.writeTextFile(`${tree}/usr/sbin/sshd`, "#!/bin/sh\n", { mode: 0o755 });
    await Deno.writeTextFile(`${tree}/etc/os-release`, "ID=testos\n");
    const tar = await new Deno.Command("tar", {
      args: ["-c", "-f", `${dir}/state/image-build/in.tar`, "-C", tree, "."],
    });
    await Deno.mkdir(`${dir}/state/image-build`, { recursive: true });
    await Deno.mkdir(`${dir}/state/images`, { recursive: true });
    assert.equal((await tar.output()).code, 0);
    const out = `${dir}/state/images/import-${"0".repeat(32)}.img`;
    // The builder as the driver runs it: its own process, exactly its grants.
    const exe = Deno.execPath();
    const args = [
      ...imageBuilderRunArgs(REPO_ROOT, `${dir}/state`),
      "import",
      "--work",
      `${dir}/state/image-build`,
      "--out",
      out,
      "--tar",
      `${dir}/state/image-build/in.tar`,
    ];
    const res = await new Deno.Command(exe, {
      args,
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    }).output();
    const stdout = new TextDecoder().decode(res.stdout);
    assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
    const last = stdout.trim().split("\n").at(-1)!;
    assert.ok(last.startsWith(RESULT_PREFIX), stdout);
    const result = JSON.parse(last.slice(RESULT_PREFIX.length));
    assert.equal(result.key, `import-${"0".repeat(32)}`);
    assert.equal(result.bytes, (await Deno.stat(out)).size);
    // An ext4 file system holding the tree (debugfs reads it without mounting).
    const cat = await new Deno.Command("debugfs", {
      args: ["-R", "cat /etc/os-release", out],
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.equal(new TextDecoder().decode(cat.stdout), "ID=testos\n");
    let left = 0;
    for await (const e of Deno.readDir(`${dir}/state/image-build`)) if (e.name !== "in.tar") left++;
    assert.equal(left, 0, "its work tree is removed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
