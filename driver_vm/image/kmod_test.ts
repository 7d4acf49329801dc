import assert from "node:assert/strict";
import { loadOrder, moduleDepends, moduleName } from "./kmod.ts";

Deno.test("kmod: depends= is read from .modinfo bytes", () => {
  const bytes = new TextEncoder().encode(
    "\x7fELF...\0license=GPL\0depends=virtio_ring,virtio\0name=x\0",
  );
  assert.deepEqual(moduleDepends(bytes), ["virtio_ring", "virtio"]);
  assert.deepEqual(moduleDepends(new TextEncoder().encode("\0depends=\0")), []);
  assert.deepEqual(moduleDepends(new Uint8Array([1, 2, 3])), []);
});

Deno.test("kmod: names from paths", () => {
  assert.equal(moduleName("kernel/drivers/net/virtio_net.ko"), "virtio_net");
  assert.equal(moduleName("a/qemu-fw-cfg.ko.xz"), "qemu_fw_cfg");
});

Deno.test("kmod: dependencies load first, each once; unknown modules and cycles fail", () => {
  const deps: Record<string, string[]> = {
    virtio_net: ["virtio_ring", "virtio", "net_failover"],
    net_failover: ["failover"],
    failover: [],
    virtio: ["virtio_ring"],
    virtio_ring: [],
    virtio_blk: ["virtio", "virtio_ring"],
  };
  assert.deepEqual(loadOrder(["virtio_net", "virtio_blk"], (n) => deps[n]), [
    "virtio_ring",
    "virtio",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
  ]);
  assert.throws(() => loadOrder(["nope"], (n) => deps[n]), /kernel module not found: nope/);
  assert.throws(
    () => loadOrder(["a"], (n) => ({ a: ["b"], b: ["a"] } as Record<string, string[]>)[n]),
    /cycle/,
  );
});
