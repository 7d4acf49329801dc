import assert from "node:assert/strict";
import { launchCommand, QemuLauncher } from "./qemu_launcher.ts";
import type { QemuSpec } from "./qemu.ts";
import { parsePasswd, VM_NOFILE, VM_NPROC, type VmUser } from "./vm_user.ts";

const spec: QemuSpec = {
  id: "sb-1",
  accel: "tcg",
  vcpus: 2,
  memMib: 1024,
  kernel: "/rt/vmlinuz",
  initramfs: "/rt/initramfs.cpio",
  disk: "/rt/openshell.img",
  rootDisk: { overlay: "/s/disk.qcow2", base: "/s/images/k.img", baseFormat: "raw" },
  pidFile: "/s/qemu.pid",
  fwCfg: [],
  gatewaySocket: "/s/fwd/1.sock",
  forwarder: "socat",
};

const user: VmUser = { name: "openshell-vm", uid: 997, gid: 995 };
const AS = (1024 + 3072 + 2 * 128) * 1024 * 1024;

Deno.test("launcher: as root, setpriv drops to the VM user, prlimit bounds qemu, both exec", () => {
  const argv = launchCommand({
    qemu: "/usr/bin/qemu-system-x86_64",
    runAs: { setpriv: "/usr/bin/setpriv", prlimit: "/usr/bin/prlimit", user },
  }, spec);
  const q = argv.indexOf("/usr/bin/qemu-system-x86_64");
  assert.deepEqual(argv.slice(0, q), [
    "/usr/bin/setpriv",
    "--reuid=997",
    "--regid=995",
    "--init-groups",
    "--no-new-privs",
    "--pdeathsig",
    "KILL",
    "--",
    "/usr/bin/prlimit",
    `--nofile=${VM_NOFILE}:${VM_NOFILE}`,
    `--nproc=${VM_NPROC}:${VM_NPROC}`,
    `--as=${AS}:${AS}`,
    "--core=0:0",
    "--",
  ]);
  assert.ok(argv.includes("-sandbox"));
});

Deno.test("launcher: not root, the same guards but no user change and no process limit", () => {
  const argv = launchCommand({
    qemu: "/q",
    runAs: { setpriv: "/usr/bin/setpriv", prlimit: "/usr/bin/prlimit" },
  }, spec);
  assert.deepEqual(argv.slice(0, argv.indexOf("/q")), [
    "/usr/bin/setpriv",
    "--no-new-privs",
    "--pdeathsig",
    "KILL",
    "--",
    "/usr/bin/prlimit",
    `--nofile=${VM_NOFILE}:${VM_NOFILE}`,
    `--as=${AS}:${AS}`,
    "--core=0:0",
    "--",
  ]);
  assert.equal(launchCommand({ qemu: "/q" }, spec)[0], "/q", "macOS: qemu itself");
});

const isRoot = Deno.uid() === 0;
const QEMU = "/usr/bin/qemu-system-x86_64";
const hasQemu = await Deno.stat(QEMU).then(() => true, () => false);

Deno.test({
  name: "launcher (root): the program in qemu's place runs as the VM user, no new privs, limited",
  ignore: !isRoot,
  async fn() {
    const nobody = parsePasswd(await Deno.readTextFile("/etc/passwd"), "nobody")!;
    const dir = await Deno.makeTempDir({ prefix: "oslaunch" });
    try {
      await Deno.chmod(dir, 0o755);
      // Stands in for qemu: reports who it is and its limits, then waits to be killed.
      const fake = `${dir}/fake-qemu`;
      await Deno.writeTextFile(
        fake,
        [
          "#!/bin/sh",
          'echo "ids $(id -u) $(id -g) $(id -G)"',
          "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status",
          "grep -E '^Max (open files|processes|address space|core file size)' /proc/self/limits",
          "exec sleep 600",
        ].join("\n") + "\n",
        { mode: 0o755 },
      );
      const launcher = new QemuLauncher({
        qemu: fake,
        runAs: { setpriv: "/usr/bin/setpriv", prlimit: "/usr/bin/prlimit", user: nobody },
      });
      const vm = await launcher.launch(spec);
      let text = "";
      try {
        // The fake qemu reports on its stdout, which carries a real guest's console.
        const reader = vm.console.pipeThrough(new TextDecoderStream()).getReader();
        while (!text.includes("core file size")) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        reader.releaseLock();
        vm.stderr.cancel().catch(() => {});
        const status = await Deno.readTextFile(`/proc/${vm.pid}/status`);
        assert.match(status, new RegExp(`^Uid:\\s+${nobody.uid}\\s+${nobody.uid}\\s`, "m"));
      } finally {
        vm.kill("SIGKILL");
        await vm.status;
      }
      const ids = /ids (\d+) (\d+) ([\d ]+)\n/.exec(text);
      assert.ok(ids, text);
      assert.equal(Number(ids[1]), nobody.uid, "qemu must not run as root");
      assert.equal(Number(ids[2]), nobody.gid);
      assert.ok(!ids[3].split(" ").includes("0"), `no root group: ${ids[3]}`);
      assert.match(text, /NoNewPrivs:\s+1/);
      assert.match(text, /CapEff:\s+0000000000000000/);
      assert.match(text, new RegExp(`Max open files\\s+${VM_NOFILE}\\s+${VM_NOFILE}`));
      assert.match(text, new RegExp(`Max processes\\s+${VM_NPROC}\\s+${VM_NPROC}`));
      assert.match(text, new RegExp(`Max address space\\s+${AS}\\s+${AS}`));
      assert.match(text, /Max core file size\s+0\s+0/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "launcher (root): real qemu starts as the VM user under these limits",
  ignore: !isRoot || !hasQemu,
  async fn() {
    const nobody = parsePasswd(await Deno.readTextFile("/etc/passwd"), "nobody")!;
    const qemu = QEMU;
    const argv = launchCommand({
      qemu,
      runAs: { setpriv: "/usr/bin/setpriv", prlimit: "/usr/bin/prlimit", user: nobody },
    }, spec);
    const prefix = argv.slice(0, argv.indexOf(qemu) + 1);
    const out = await new Deno.Command(prefix[0], {
      args: [...prefix.slice(1), "-version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(new TextDecoder().decode(out.stdout), /QEMU emulator version/);
  },
});
