import assert from "node:assert/strict";
import { busyboxApplets, GUEST_MODULES, parseLdd, pruneOld } from "./rootfs.ts";

Deno.test("rootfs: ldd output gives the library paths, loader included", () => {
  const text =
    `\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcrypt.so.1 => /lib/x86_64-linux-gnu/libcrypt.so.1 (0x00007f)\n` +
    `\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n`;
  assert.deepEqual(parseLdd(text), [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libcrypt.so.1",
    "/lib64/ld-linux-x86-64.so.2",
  ]);
  assert.deepEqual(parseLdd("\tnot a dynamic executable\n"), []);
});

Deno.test("rootfs: the guest loads virtio net/blk/pci and fw_cfg", () => {
  for (const m of ["virtio_pci", "virtio_net", "virtio_blk", "qemu_fw_cfg"]) {
    assert.ok(GUEST_MODULES.includes(m));
  }
});

Deno.test("rootfs: old runtimes are pruned, the protected one and the newest kept", async () => {
  const root = await Deno.makeTempDir({ prefix: "osprune" });
  try {
    const names = ["runtime-a", "runtime-b", "runtime-c", "runtime-d", "kernel-x"];
    for (const [i, n] of names.entries()) {
      await Deno.mkdir(`${root}/${n}`);
      const t = new Date(Date.UTC(2020, 0, 1 + i));
      await Deno.utime(`${root}/${n}`, t, t);
    }
    const removed = await pruneOld(root, "runtime-", { keep: 3, protect: "runtime-a" });
    assert.deepEqual(removed.sort(), ["runtime-b"]);
    const left: string[] = [];
    for await (const e of Deno.readDir(root)) left.push(e.name);
    assert.deepEqual(left.sort(), ["kernel-x", "runtime-a", "runtime-c", "runtime-d"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("rootfs: busybox --list gives the initramfs's /bin links (sh and mount among them)", () => {
  const list = "[\n[[\nmount\nsh\nbusybox\nsh\n../evil\n\ninsmod\n";
  assert.deepEqual(busyboxApplets(list), ["[", "[[", "insmod", "mount", "sh"]);
});
