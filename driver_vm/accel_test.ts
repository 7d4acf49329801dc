import assert from "node:assert/strict";
import { decideAccel, probeCachePath, probeKvm, readProbeCache, writeProbeCache } from "./accel.ts";

Deno.test("accel: an explicit choice is used as is", () => {
  for (const a of ["kvm", "hvf", "tcg"] as const) {
    const d = decideAccel(a, { os: "linux", kvmDevice: false });
    assert.deepEqual(d, { kind: "decided", accel: a, reason: `requested with --vm-accel ${a}` });
  }
});

Deno.test("accel: auto is hvf on macOS, tcg without KVM, and probes on Linux", () => {
  assert.equal(
    (decideAccel("auto", { os: "darwin", kvmDevice: false }) as { accel: string }).accel,
    "hvf",
  );
  assert.equal(
    (decideAccel("auto", { os: "windows", kvmDevice: false }) as { accel: string }).accel,
    "tcg",
  );
  const noKvm = decideAccel("auto", { os: "linux", kvmDevice: false });
  assert.deepEqual(noKvm, { kind: "decided", accel: "tcg", reason: "/dev/kvm is absent" });
  assert.deepEqual(decideAccel("auto", { os: "linux", kvmDevice: true }), { kind: "probe" });
});

Deno.test("accel: the probe verdict decides between kvm and tcg, with the reason", () => {
  const ok = decideAccel("auto", {
    os: "linux",
    kvmDevice: true,
    probe: { ok: true, detail: "guest userspace after 0.8s" },
  });
  assert.equal(ok.kind === "decided" && ok.accel, "kvm");
  const bad = decideAccel("auto", {
    os: "linux",
    kvmDevice: true,
    probe: { ok: false, detail: "no guest output within 8.0s" },
  });
  assert.ok(bad.kind === "decided");
  assert.equal(bad.accel, "tcg");
  assert.match(bad.reason, /KVM probe boot failed \(no guest output within 8.0s\)/);
});

Deno.test("accel: the verdict cache is keyed (qemu version + kernel hash)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = probeCachePath(dir);
    assert.equal(await readProbeCache(path, "k1"), undefined);
    await writeProbeCache(path, "k1", { ok: false, detail: "hang" });
    assert.deepEqual(await readProbeCache(path, "k1"), { ok: false, detail: "hang" });
    assert.equal(
      await readProbeCache(path, "k2"),
      undefined,
      "another qemu or kernel probes again",
    );
    await Deno.writeTextFile(path, "{not json");
    assert.equal(await readProbeCache(path, "k1"), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("accel: the KVM probe reads the guest's marker, qemu's error, or times out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osprobe" });
  const fake = async (name: string, body: string) => {
    const path = `${dir}/${name}`;
    await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return path;
  };
  const base = {
    prefix: ["/usr/bin/setpriv", "--no-new-privs", "--pdeathsig", "KILL", "--"],
    kernel: "/k",
    initramfs: "/i",
  };
  try {
    const ok = await probeKvm({
      ...base,
      qemu: await fake(
        "ok",
        'case "$*" in *openshell.probe*) echo booting; echo OPENSHELL-PROBE-OK;; esac\nexec sleep 30',
      ),
    });
    assert.equal(ok.ok, true, ok.detail);
    assert.match(ok.detail, /guest userspace after/);
    const err = await probeKvm({
      ...base,
      qemu: await fake(
        "err",
        'echo "qemu-system-x86_64: failed to initialize kvm: No such file or directory" >&2\nexit 1',
      ),
    });
    assert.deepEqual(err, {
      ok: false,
      detail: "qemu: qemu-system-x86_64: failed to initialize kvm: No such file or directory",
    });
    const hang = await probeKvm({
      ...base,
      qemu: await fake("hang", "exec sleep 30"),
      timeoutMs: 300,
    });
    assert.equal(hang.ok, false);
    assert.match(hang.detail, /no guest output within/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
