import assert from "node:assert/strict";
import {
  createUserCommand,
  giveFile,
  ownIds,
  parsePasswd,
  resolveVmUser,
  runAsPrefix,
  shareDir,
  stageRuntime,
  vmLimits,
  VmUserError,
} from "./vm_user.ts";

const PASSWD = [
  "root:x:0:0:root:/root:/bin/bash",
  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
  "openshell-vm:x:997:995::/nonexistent:/usr/sbin/nologin",
  "toor:x:0:1000::/root:/bin/sh",
  "broken:x::5::/:/bin/sh",
  "",
].join("\n");

const isRoot = Deno.uid() === 0;

function mode(path: string): number {
  return (Deno.statSync(path).mode ?? 0) & 0o7777;
}

Deno.test("vm user: parsed from passwd; missing, root and malformed entries refused", async () => {
  assert.deepEqual(parsePasswd(PASSWD, "openshell-vm"), {
    name: "openshell-vm",
    uid: 997,
    gid: 995,
  });
  assert.equal(parsePasswd(PASSWD, "openshell"), undefined, "no prefix match");
  assert.equal(parsePasswd(PASSWD, "broken"), undefined);
  const dir = await Deno.makeTempDir({ prefix: "osvmu" });
  try {
    await Deno.writeTextFile(`${dir}/passwd`, PASSWD);
    assert.deepEqual(await resolveVmUser("nobody", `${dir}/passwd`), {
      name: "nobody",
      uid: 65534,
      gid: 65534,
    });
    await assert.rejects(
      resolveVmUser("openshell-missing", `${dir}/passwd`),
      (err: Error) => {
        assert.ok(err instanceof VmUserError);
        assert.ok(err.message.includes(createUserCommand("openshell-missing")), err.message);
        assert.ok(!err.message.includes("\n"));
        return true;
      },
    );
    await assert.rejects(resolveVmUser("toor", `${dir}/passwd`), /must not run as root/);
    await assert.rejects(resolveVmUser("x", `${dir}/nope`), /cannot read .*nope/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vm limits: address space follows the VM size; process limit only for a dedicated user", () => {
  const small = vmLimits({ memMib: 1024, vcpus: 2 }, { dedicatedUser: true });
  assert.equal(small.asBytes, (1024 + 3072 + 256) * 1024 * 1024);
  assert.equal(small.nofile, 1024);
  assert.equal(small.nproc, 4096);
  const big = vmLimits({ memMib: 8192, vcpus: 8 }, { dedicatedUser: false });
  assert.equal(big.asBytes, (8192 + 3072 + 1024) * 1024 * 1024);
  assert.equal(big.nproc, undefined);
  assert.ok(!runAsPrefix({ setpriv: "s", prlimit: "p" }, big).some((a) => a.startsWith("--nproc")));
});

Deno.test("vm user: this process's ids are learnt from a file it creates", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osvmu" });
  try {
    assert.deepEqual(await ownIds(dir), { uid: Deno.uid(), gid: Deno.gid() });
    assert.deepEqual([...Deno.readDirSync(dir)], [], "the probe file is gone");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "vm user (root): dirs reachable by its group only, files its own, runtime copied once",
  ignore: !isRoot,
  async fn() {
    const nobody = parsePasswd(await Deno.readTextFile("/etc/passwd"), "nobody")!;
    const dir = await Deno.makeTempDir({ prefix: "osvmu" });
    try {
      await Deno.mkdir(`${dir}/d`, { mode: 0o700 });
      await shareDir(`${dir}/d`, nobody);
      assert.equal(mode(`${dir}/d`), 0o710);
      assert.equal(Deno.statSync(`${dir}/d`).uid, 0, "the dir stays root's");
      assert.equal(Deno.statSync(`${dir}/d`).gid, nobody.gid);
      await Deno.writeTextFile(`${dir}/d/f`, "secret", { mode: 0o644 });
      await giveFile(`${dir}/d/f`, nobody);
      assert.equal(mode(`${dir}/d/f`), 0o600);
      assert.equal(Deno.statSync(`${dir}/d/f`).uid, nobody.uid);

      await Deno.mkdir(`${dir}/rt`, { mode: 0o700 });
      const source = { kernel: `${dir}/rt/vmlinuz`, disk: `${dir}/rt/guest.img` };
      await Deno.writeTextFile(source.kernel, "kernel", { mode: 0o600 });
      await Deno.writeTextFile(source.disk, "disk".repeat(1000), { mode: 0o600 });
      await Deno.mkdir(`${dir}/state`, { mode: 0o700 });
      await shareDir(`${dir}/state`, nobody); // as the driver does with its state dir
      const staged = await stageRuntime(source, `${dir}/state/runtime`, nobody);
      assert.deepEqual(staged, {
        kernel: `${dir}/state/runtime/vmlinuz`,
        disk: `${dir}/state/runtime/guest.img`,
      });
      assert.equal(await Deno.readTextFile(staged.disk), "disk".repeat(1000));
      assert.equal(mode(staged.kernel), 0o640);
      assert.equal(Deno.statSync(staged.kernel).gid, nobody.gid);
      assert.equal(mode(`${dir}/state/runtime`), 0o710);
      // Unchanged source: nothing is copied again (same inode).
      const ino = Deno.statSync(staged.disk).ino;
      await stageRuntime(source, `${dir}/state/runtime`, nobody);
      assert.equal(Deno.statSync(staged.disk).ino, ino);
      // A rebuilt runtime is copied again.
      await Deno.writeTextFile(source.disk, "new disk");
      await stageRuntime(source, `${dir}/state/runtime`, nobody);
      assert.equal(await Deno.readTextFile(staged.disk), "new disk");
      assert.deepEqual(
        [...Deno.readDirSync(`${dir}/state/runtime`)].map((e) => e.name).sort(),
        ["guest.img", "vmlinuz"],
        "no temp file left",
      );
      // What that account can and cannot do there, asked of the kernel itself.
      const as = (cmd: string) =>
        new Deno.Command("/usr/bin/setpriv", {
          args: ["--reuid=nobody", "--regid=nogroup", "--init-groups", "--", "sh", "-c", cmd],
          stdout: "null",
          stderr: "null",
        }).output().then((o) => o.success);
      await Deno.chmod(dir, 0o755);
      assert.equal(await as(`cat ${staged.kernel} >/dev/null`), true, "reads the runtime");
      assert.equal(await as(`echo x >> ${dir}/d/f`), true, "writes its own file");
      assert.equal(await as(`ls ${dir}/d`), false, "cannot list the dir");
      assert.equal(await as(`touch ${dir}/d/new`), false, "cannot create in the dir");
      assert.equal(await as(`mv ${dir}/d/f ${dir}/d/g`), false, "cannot rename in the dir");
      assert.equal(await as(`cat ${source.kernel}`), false, "not the 0600 source");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
