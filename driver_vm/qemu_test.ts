import assert from "node:assert/strict";
import {
  buildProbeArgs,
  buildQemuArgs,
  escapeOptionValue,
  forwarderCommand,
  netdevOption,
  type QemuSpec,
  sandboxOption,
} from "./qemu.ts";

const spec: QemuSpec = {
  id: "sb-1",
  accel: "tcg",
  vcpus: 2,
  memMib: 1024,
  kernel: "/rt/vmlinuz",
  initramfs: "/rt/initramfs.cpio",
  disk: "/rt/openshell.img",
  rootDisk: {
    overlay: "/s/sandboxes/sb-1/disk.qcow2",
    base: "/s/images/abc.img",
    baseFormat: "raw",
  },
  pidFile: "/s/sandboxes/sb-1/qemu.pid",
  fwCfg: [{ name: "config", file: "/s/sandboxes/sb-1/guest/config" }],
  gatewaySocket: "/s/fwd/0.sock",
  forwarder: "socat",
};

function after(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(args[i + 1]);
  });
  return out;
}

Deno.test("qemu: restricted user network with one forward to the gateway", () => {
  const args = buildQemuArgs(spec);
  assert.deepEqual(after(args, "-netdev"), [
    "user,id=net0,restrict=on,ipv6=off,net=10.0.2.0/24,host=10.0.2.2," +
    "guestfwd=tcp:10.0.2.100:8080-cmd:socat - UNIX-CONNECT:/s/fwd/0.sock",
  ]);
  assert.ok(after(args, "-device").includes("virtio-net-pci,netdev=net0,romfile="));
});

Deno.test("qemu: with egress, two more forwards to the egress alias (proxy, DNS); still restricted", () => {
  const egress = { proxySocket: "/s/fwd/1.sock", dnsSocket: "/s/fwd/2.sock" };
  const args = buildQemuArgs({ ...spec, egress });
  assert.deepEqual(after(args, "-netdev"), [
    "user,id=net0,restrict=on,ipv6=off,net=10.0.2.0/24,host=10.0.2.2," +
    "guestfwd=tcp:10.0.2.100:8080-cmd:socat - UNIX-CONNECT:/s/fwd/0.sock," +
    "guestfwd=tcp:10.0.2.101:3128-cmd:socat - UNIX-CONNECT:/s/fwd/1.sock," +
    "guestfwd=tcp:10.0.2.101:53-cmd:socat - UNIX-CONNECT:/s/fwd/2.sock",
  ]);
  // There is no switch that opens the guest network: never restrict=off.
  for (const netdev of [netdevOption(spec), netdevOption({ ...spec, egress })]) {
    assert.match(netdev, /(^|,)restrict=on(,|$)/);
    assert.doesNotMatch(netdev, /restrict=off/);
    assert.doesNotMatch(netdev, /hostfwd|guestfwd=tcp:10\.0\.2\.2:/, "no route to the host");
  }
  assert.throws(
    () => netdevOption({ ...spec, egress: { ...egress, dnsSocket: "/s/a b.sock" } }),
    /invalid forwarder socket path/,
  );
});

Deno.test("qemu: console on stdout, fw_cfg files, pidfile, no reboot, clock in UTC", () => {
  const args = buildQemuArgs(spec);
  assert.equal(after(args, "-drive").length, 0);
  // the driver reads the console from qemu's stdout and writes console.log itself (capped)
  assert.deepEqual(after(args, "-chardev"), ["stdio,id=console,signal=off"]);
  assert.deepEqual(after(args, "-serial"), ["chardev:console"]);
  assert.deepEqual(after(args, "-fw_cfg"), [
    "name=opt/openshell/config,file=/s/sandboxes/sb-1/guest/config",
  ]);
  assert.deepEqual(after(args, "-pidfile"), ["/s/sandboxes/sb-1/qemu.pid"]);
  assert.deepEqual(after(args, "-name"), ["openshell-sb-1"]);
  assert.deepEqual(after(args, "-m"), ["1024"]);
  assert.deepEqual(after(args, "-smp"), ["2"]);
  assert.deepEqual(after(args, "-rtc"), ["base=utc"]);
  assert.deepEqual(after(args, "-append"), [
    "console=ttyS0 quiet panic=-1 cryptomgr.notests initcall_blacklist=init_kprobe_trace " +
    "no_timer_check tsc=reliable",
  ]);
  assert.ok(args.includes("-no-reboot") && args.includes("-nodefaults"));
});

Deno.test("qemu: machine q35 without SMM, for the VMs and the probe", () => {
  assert.deepEqual(after(buildQemuArgs(spec), "-machine"), ["q35,smm=off"]);
  const probe = buildProbeArgs({ accel: "tcg", kernel: "/k", initramfs: "/i" });
  assert.deepEqual(after(probe, "-machine"), ["q35,smm=off"]);
});

Deno.test("qemu: tsc=reliable only under TCG; the boot-speed words always", () => {
  for (const accel of ["kvm", "hvf"] as const) {
    const line = after(buildQemuArgs({ ...spec, accel }), "-append")[0];
    assert.ok(!line.includes("tsc=reliable"), line);
    assert.ok(line.includes("cryptomgr.notests"), line);
  }
  // Nothing that weakens the guest: no mitigations=off, no security module turned off.
  const tcg = after(buildQemuArgs(spec), "-append")[0];
  assert.doesNotMatch(tcg, /mitigations|nokaslr|apparmor=0|security=|selinux=0|lockdown/);
});

Deno.test("qemu: vda is the overlay over the read-only image (chain on the command line), vdb the runtime disk", () => {
  const args = buildQemuArgs(spec);
  assert.deepEqual(after(args, "-blockdev"), [
    "driver=file,node-name=image-file,filename=/s/images/abc.img,read-only=on",
    "driver=raw,node-name=image,file=image-file,read-only=on",
    "driver=file,node-name=root-file,filename=/s/sandboxes/sb-1/disk.qcow2,discard=unmap",
    "driver=qcow2,node-name=root,file=root-file,backing=image,discard=unmap,detect-zeroes=unmap",
    "driver=file,node-name=runtime-file,filename=/rt/openshell.img,read-only=on",
    "driver=raw,node-name=runtime,file=runtime-file,read-only=on",
  ]);
  // The order of the devices is the order of the guest's disks.
  const disks = after(args, "-device").filter((d) => d.startsWith("virtio-blk-pci"));
  assert.deepEqual(disks, ["virtio-blk-pci,drive=root", "virtio-blk-pci,drive=runtime"]);
  const qcow = buildQemuArgs({ ...spec, rootDisk: { ...spec.rootDisk, baseFormat: "qcow2" } });
  assert.ok(
    after(qcow, "-blockdev").includes("driver=qcow2,node-name=image,file=image-file,read-only=on"),
  );
});

Deno.test("qemu: accelerator flags", () => {
  assert.deepEqual(after(buildQemuArgs(spec), "-accel"), ["tcg"]);
  const kvm = buildQemuArgs({ ...spec, accel: "kvm" });
  assert.deepEqual(after(kvm, "-accel"), ["kvm"]);
  assert.deepEqual(after(kvm, "-cpu"), ["host"]);
  assert.deepEqual(after(buildQemuArgs({ ...spec, accel: "hvf" }), "-accel"), ["hvf"]);
});

Deno.test("qemu: commas in paths are escaped; bad names refused", () => {
  assert.equal(escapeOptionValue("/a,b/c"), "/a,,b/c");
  const args = buildQemuArgs({
    ...spec,
    disk: "/r,t/openshell.img",
    rootDisk: { ...spec.rootDisk, overlay: "/s,x/disk.qcow2", base: "/i,m/k.img" },
  });
  const blockdevs = after(args, "-blockdev");
  assert.ok(
    blockdevs.includes(
      "driver=file,node-name=runtime-file,filename=/r,,t/openshell.img,read-only=on",
    ),
  );
  assert.ok(
    blockdevs.includes("driver=file,node-name=root-file,filename=/s,,x/disk.qcow2,discard=unmap"),
  );
  assert.ok(
    blockdevs.includes("driver=file,node-name=image-file,filename=/i,,m/k.img,read-only=on"),
  );
  assert.throws(
    () => buildQemuArgs({ ...spec, fwCfg: [{ name: "../x", file: "/f" }] }),
    /fw_cfg name/,
  );
  assert.throws(() => forwarderCommand("socat;x", spec.gatewaySocket), /forwarder/);
  assert.throws(() => forwarderCommand("socat", "/s/a b.sock"), /socket path/);
  assert.throws(() => forwarderCommand("socat", "/s/a,fork.sock"), /socket path/);
  assert.throws(() => forwarderCommand("socat", "rel.sock"), /socket path/);
  assert.equal(
    forwarderCommand("/usr/bin/socat", "/v/fwd/3.sock"),
    "/usr/bin/socat - UNIX-CONNECT:/v/fwd/3.sock",
  );
});

Deno.test("qemu: the probe boots with the marker flag and serial on stdio", () => {
  const args = buildProbeArgs({ accel: "kvm", kernel: "/k", initramfs: "/i" });
  assert.deepEqual(after(args, "-append"), [
    "console=ttyS0 quiet panic=-1 cryptomgr.notests initcall_blacklist=init_kprobe_trace " +
    "no_timer_check openshell.probe",
  ]);
  assert.deepEqual(after(args, "-serial"), ["stdio"]);
  assert.deepEqual(after(args, "-accel"), ["kvm"]);
});

Deno.test("qemu: seccomp sandbox on; spawning (and setsid) allowed only for a cmd: forwarder", () => {
  const allow = "on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny";
  const deny = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
  // Today's guestfwd runs a forwarder program per connection: qemu must fork, setsid and exec it.
  assert.deepEqual(after(buildQemuArgs(spec), "-sandbox"), [allow]);
  // Nothing to spawn (the probe; a forward to a chardev socket): no fork/exec, no set*id at all.
  assert.deepEqual(
    after(buildProbeArgs({ accel: "kvm", kernel: "/k", initramfs: "/i" }), "-sandbox"),
    [deny],
  );
  assert.equal(
    sandboxOption(["-netdev", "user,id=net0,guestfwd=tcp:10.0.2.100:8080-chardev:gw"]),
    deny,
  );
  // Only a -netdev value counts, not a path that happens to contain "-cmd:".
  assert.equal(
    sandboxOption(["-chardev", "file,id=c,path=/x/guestfwd=a-cmd:b", "-netdev", "user,id=n"]),
    deny,
  );
});

Deno.test("qemu: the monitor is a client socket to the driver's QMP path, only when given", () => {
  assert.deepEqual(after(buildQemuArgs(spec), "-mon"), []);
  const args = buildQemuArgs({ ...spec, qmpSocket: "/s/qmp/0.sock" });
  assert.deepEqual(after(args, "-chardev"), [
    "stdio,id=console,signal=off",
    "socket,id=qmp,path=/s/qmp/0.sock",
  ]);
  assert.deepEqual(after(args, "-mon"), ["chardev=qmp,mode=control"]);
  assert.ok(!after(args, "-chardev")[1].includes("server"), "qemu connects; it never listens");
});
