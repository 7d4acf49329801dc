import assert from "node:assert/strict";
import { checkPrivateDir, UnsafePathError, writeSecretFile } from "./secure_fs.ts";

Deno.test("secure_fs: a private dir is created 0700; symlinks and group-writable dirs are refused", async () => {
  const root = await Deno.makeTempDir();
  try {
    await checkPrivateDir(`${root}/a/b`, { create: true, what: "state dir" });
    assert.equal((await Deno.stat(`${root}/a/b`)).mode! & 0o777, 0o700);
    await Deno.symlink(`${root}/a/b`, `${root}/link`);
    await assert.rejects(
      () => checkPrivateDir(`${root}/link`, { what: "state dir" }),
      (e) => e instanceof UnsafePathError && /is a symlink; refusing/.test(e.message),
    );
    await Deno.mkdir(`${root}/open`);
    await Deno.chmod(`${root}/open`, 0o777);
    await assert.rejects(
      () => checkPrivateDir(`${root}/open`, { what: "state dir" }),
      /can be written by other users \(mode 0777\); run `chmod go-w/,
    );
    await checkPrivateDir(`${root}/open`, { what: "pki dir", exact0700: true });
    assert.equal((await Deno.stat(`${root}/open`)).mode! & 0o777, 0o700);
    await assert.rejects(
      () => checkPrivateDir(`${root}/missing`, { what: "state dir" }),
      /does not exist/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "secure_fs: a dir owned by another user is refused (root only: it gives one away)",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const root = await Deno.makeTempDir();
    try {
      await Deno.mkdir(`${root}/theirs`);
      await Deno.chown(`${root}/theirs`, 65534, 65534);
      await assert.rejects(
        () => checkPrivateDir(`${root}/theirs`, { what: "state dir" }),
        /owned by uid 65534, not by this process/,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("secure_fs: secret files are written atomically with mode 0600", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeSecretFile(`${root}/k`, "one");
    await writeSecretFile(`${root}/k`, "two");
    assert.equal(await Deno.readTextFile(`${root}/k`), "two");
    assert.equal((await Deno.stat(`${root}/k`)).mode! & 0o777, 0o600);
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["k"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
