import assert from "node:assert/strict";
import { Code, StatusError } from "../core/status.ts";
import { checkDiskFits, Disks, MAX_DISK_GIB, overlayArgs, type RunProgram } from "./disk.ts";

const QEMU_IMG = "/usr/bin/qemu-img";

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "osdisk" });
}

Deno.test("disk: qemu-img arguments make a sparse qcow2 overlay of the size over the image", () => {
  assert.deepEqual(
    overlayArgs({
      base: "/s/images/k.img",
      baseFormat: "raw",
      overlay: "/s/sb/disk.qcow2",
      sizeGiB: 8,
    }),
    ["create", "-q", "-f", "qcow2", "-b", "/s/images/k.img", "-F", "raw", "/s/sb/disk.qcow2", "8G"],
  );
  const q = overlayArgs({ base: "/i.qcow2", baseFormat: "qcow2", overlay: "/o", sizeGiB: 1 });
  assert.deepEqual(q.slice(6, 8), ["-F", "qcow2"]);
  for (const sizeGiB of [0, -1, 1.5, MAX_DISK_GIB + 1, NaN]) {
    assert.throws(
      () => overlayArgs({ base: "/b", baseFormat: "raw", overlay: "/o", sizeGiB }),
      /disk size must be 1 to 2048 GiB/,
    );
  }
  assert.throws(
    () => overlayArgs({ base: "rel.img", baseFormat: "raw", overlay: "/o", sizeGiB: 1 }),
    /absolute/,
  );
});

Deno.test("disk: a real overlay (qemu-img) reads the image and takes host space only as written", async () => {
  const dir = await tempDir();
  try {
    // An "image" with a marker in its first block.
    const image = new Uint8Array(1024 * 1024);
    image.set(new TextEncoder().encode("openshell-image-marker"), 0);
    await Deno.writeFile(`${dir}/rootfs.img`, image);
    await Deno.mkdir(`${dir}/sb`);
    const disks = new Disks({ stateDir: `${dir}/state`, qemuImg: QEMU_IMG });
    const made = await disks.prepare({
      dir: `${dir}/sb`,
      image: { path: `${dir}/rootfs.img`, key: "k1", format: "raw" },
      sizeGiB: 8,
    });
    assert.deepEqual(made, {
      overlay: `${dir}/sb/disk.qcow2`,
      base: `${dir}/state/images/k1.img`,
      baseFormat: "raw",
      created: true,
    });
    const info = JSON.parse(
      new TextDecoder().decode(
        (await new Deno.Command(QEMU_IMG, {
          args: ["info", "--output=json", made.overlay],
          stdout: "piped",
        }).output()).stdout,
      ),
    );
    assert.equal(info.format, "qcow2");
    assert.equal(info["virtual-size"], 8 * 2 ** 30);
    assert.equal(info["backing-filename"], `${dir}/state/images/k1.img`);
    assert.equal(info["backing-filename-format"], "raw");
    // Sparse: an 8 GiB disk takes a few hundred KiB until the guest writes.
    assert.ok((await Deno.stat(made.overlay)).size < 1024 * 1024);
    assert.equal((await Deno.stat(made.overlay)).mode! & 0o777, 0o600);
    // Through the overlay the image's bytes are there (qemu-img reads the chain).
    const out = await new Deno.Command(QEMU_IMG, {
      args: [
        "dd",
        "-f",
        "qcow2",
        "-O",
        "raw",
        `if=${made.overlay}`,
        `of=${dir}/head.raw`,
        "bs=512",
        "count=1",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(await Deno.readTextFile(`${dir}/head.raw`), /^openshell-image-marker/);
    // A second prepare (a restart) keeps the disk as it is.
    await Deno.writeTextFile(`${dir}/sb/marker`, "");
    const again = await disks.prepare({
      dir: `${dir}/sb`,
      image: { path: `${dir}/rootfs.img`, key: "k1", format: "raw" },
      sizeGiB: 20,
    });
    assert.equal(again.created, false);
    const info2 = JSON.parse(
      new TextDecoder().decode(
        (await new Deno.Command(QEMU_IMG, {
          args: ["info", "--output=json", made.overlay],
          stdout: "piped",
        }).output()).stdout,
      ),
    );
    assert.equal(info2["virtual-size"], 8 * 2 ** 30);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("disk: the image is copied once per key, atomically; concurrent sandboxes share the copy", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeFile(`${dir}/rootfs.img`, new Uint8Array(64 * 1024).fill(7));
    const runs: string[][] = [];
    const run: RunProgram = async (_p, args) => {
      runs.push([...args]);
      await Deno.writeTextFile(args[args.length - 2], "");
      return { code: 0, stderr: "" };
    };
    const disks = new Disks({ stateDir: `${dir}/state`, qemuImg: QEMU_IMG, run });
    const image = { path: `${dir}/rootfs.img`, key: "abc", format: "raw" as const };
    await Promise.all(["a", "b", "c"].map(async (n) => {
      await Deno.mkdir(`${dir}/${n}`);
      await disks.prepare({ dir: `${dir}/${n}`, image, sizeGiB: 1 });
    }));
    const names: string[] = [];
    for await (const e of Deno.readDir(`${dir}/state/images`)) names.push(e.name);
    assert.deepEqual(names, ["abc.img"], "one copy, no temp files left");
    assert.deepEqual(
      await Deno.readFile(`${dir}/state/images/abc.img`),
      await Deno.readFile(`${dir}/rootfs.img`),
    );
    assert.equal(runs.length, 3);
    assert.throws(() => disks.imagePath({ key: "../x", format: "raw" }), /invalid image key/);
    assert.throws(() => disks.imagePath({ key: ".hidden", format: "raw" }), /invalid image key/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  "disk: root mode — the image is root's and read-only to qemu's group, the overlay qemu's",
  {
    ignore: Deno.uid() !== 0,
  },
  async () => {
    const dir = await tempDir();
    try {
      await Deno.writeFile(`${dir}/rootfs.img`, new Uint8Array(4096));
      await Deno.mkdir(`${dir}/sb`);
      const nobody = { name: "nobody", uid: 65534, gid: 65534 };
      const disks = new Disks({ stateDir: `${dir}/state`, qemuImg: QEMU_IMG, vmUser: nobody });
      const made = await disks.prepare({
        dir: `${dir}/sb`,
        image: { path: `${dir}/rootfs.img`, key: "k", format: "raw" },
        sizeGiB: 1,
      });
      const img = await Deno.stat(made.base);
      assert.deepEqual([img.uid, img.gid, img.mode! & 0o777], [0, 65534, 0o640]);
      const imgDir = await Deno.stat(`${dir}/state/images`);
      assert.deepEqual([imgDir.uid, imgDir.gid, imgDir.mode! & 0o777], [0, 65534, 0o710]);
      const ov = await Deno.stat(made.overlay);
      assert.deepEqual([ov.uid, ov.gid, ov.mode! & 0o777], [65534, 65534, 0o600]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("disk: a disk smaller than the image, or a failing qemu-img, leaves nothing behind", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeFile(`${dir}/rootfs.img`, new Uint8Array(16));
    await Deno.truncate(`${dir}/rootfs.img`, 3 * 2 ** 30); // sparse 3 GiB
    await assert.rejects(checkDiskFits(`${dir}/rootfs.img`, 2), (e: StatusError) => {
      assert.equal(e.code, Code.INVALID_ARGUMENT);
      assert.equal(
        e.message,
        "a 2 GiB disk cannot hold the image (3.0 GiB): ask for at least 3 GiB",
      );
      return true;
    });
    await checkDiskFits(`${dir}/rootfs.img`, 3);
    const failing: RunProgram = async (_p, args) => {
      await Deno.writeTextFile(args[args.length - 2], "half");
      return { code: 1, stderr: "qemu-img: some detail\nqemu-img: Could not open backing file\n" };
    };
    await Deno.writeFile(`${dir}/small.img`, new Uint8Array(16));
    await Deno.mkdir(`${dir}/sb`);
    const disks = new Disks({ stateDir: `${dir}/state`, qemuImg: QEMU_IMG, run: failing });
    await assert.rejects(
      disks.prepare({
        dir: `${dir}/sb`,
        image: { path: `${dir}/small.img`, key: "s", format: "raw" },
        sizeGiB: 1,
      }),
      /qemu-img create failed with status 1: qemu-img: Could not open backing file/,
    );
    await assert.rejects(Deno.stat(`${dir}/sb/disk.qcow2`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("disk: prune removes only the images no sandbox keeps", async () => {
  const dir = await tempDir();
  try {
    const disks = new Disks({ stateDir: dir, qemuImg: QEMU_IMG });
    assert.deepEqual(await disks.prune(new Set()), [], "no images dir yet");
    await Deno.mkdir(disks.imagesDir);
    for (const n of ["old.img", "keep.img", "other.qcow2", "new.img.tmp-1234"]) {
      await Deno.writeTextFile(`${disks.imagesDir}/${n}`, "");
    }
    assert.deepEqual(await disks.prune(new Set(["keep"])), ["old.img", "other.qcow2"]);
    const left: string[] = [];
    for await (const e of Deno.readDir(disks.imagesDir)) left.push(e.name);
    assert.deepEqual(left.sort(), ["keep.img", "new.img.tmp-1234"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
