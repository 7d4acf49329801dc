import assert from "node:assert/strict";
import {
  accountSteps,
  aptInstallCommand,
  ensureHost,
  HOST_PACKAGES,
  HOST_USERS,
  type HostProbe,
  HostSetupError,
  isStaticElf,
  missingPackages,
  REAL_HOST,
} from "./host_setup.ts";

const STATIC_ELF = (() => {
  // 64-bit little-endian ELF header with one PT_LOAD program header.
  const b = new Uint8Array(64 + 56);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  const v = new DataView(b.buffer);
  v.setBigUint64(0x20, 64n, true);
  v.setUint16(0x36, 56, true);
  v.setUint16(0x38, 1, true);
  v.setUint32(64, 1, true); // PT_LOAD
  return b;
})();
const DYNAMIC_ELF = (() => {
  const b = STATIC_ELF.slice();
  new DataView(b.buffer).setUint32(64, 3, true); // PT_INTERP
  return b;
})();

const ALL_FILES = HOST_PACKAGES.flatMap((p) => p.files).concat(["/run/sshd"]);
const PASSWD = "root:x:0:0::/root:/bin/bash\nsshd:x:102:65534::/run/sshd:/usr/sbin/nologin\n" +
  "sandbox:x:1001:1001::/home/sandbox:/bin/bash\nopenshell-vm:x:999:995::/nonexistent:/x\n";
const GROUP = "root:x:0:\nkvm:x:993:openshell-vm\n";
const SHADOW = "root:*:1::::::\nsandbox::19000:0:99999:7:::\n";

/** A host with `files`, `/bin/busybox` as `busybox` bytes, and these account files. */
function fakeHost(
  o: { files?: string[]; busybox?: Uint8Array; passwd?: string; group?: string; shadow?: string },
): HostProbe & { files: Set<string> } {
  const files = new Set(o.files ?? ALL_FILES);
  const texts: Record<string, string | undefined> = {
    "/etc/passwd": o.passwd ?? PASSWD,
    "/etc/group": o.group ?? GROUP,
    "/etc/shadow": o.shadow ?? SHADOW,
  };
  return {
    files,
    exists: (p) => Promise.resolve(files.has(p)),
    head: (p) => Promise.resolve(files.has(p) ? (o.busybox ?? STATIC_ELF) : undefined),
    text: (p) => Promise.resolve(texts[p]),
  };
}

Deno.test("host setup: every package and account is listed once, for someone", () => {
  const names = HOST_PACKAGES.map((p) => p.pkg);
  assert.equal(new Set(names).size, names.length);
  for (const p of HOST_PACKAGES) assert.ok(p.for.length > 0 && p.files.length > 0, p.pkg);
  // What the tests spawn: the initramfs check's cpio, tmux, OpenSSH, socat, qemu, openssl,
  // and Python gRPC (the upstream-client test).
  const spawned = ["cpio", "tmux", "openssh-client", "openssh-server", "socat", "openssl"];
  for (const pkg of [...spawned, "python3-grpcio", "python3-grpc-tools"]) {
    assert.ok(HOST_PACKAGES.find((p) => p.pkg === pkg)?.for.includes("test"), pkg);
  }
  assert.deepEqual(HOST_USERS.map((u) => u.name), ["sshd", "sandbox", "openshell-vm"]);
});

Deno.test("host setup: ELF program headers tell a static busybox from a dynamic one", async () => {
  assert.equal(isStaticElf(STATIC_ELF), true);
  assert.equal(isStaticElf(DYNAMIC_ELF), false);
  assert.equal(isStaticElf(new TextEncoder().encode("#!/bin/sh\necho not elf\n")), undefined);
  // The Deno binary running this test is dynamically linked.
  const deno = await REAL_HOST.head(Deno.execPath(), 4096);
  assert.equal(isStaticElf(deno!), false);
});

Deno.test("host setup: a complete host needs nothing and runs nothing", async () => {
  const probe = fakeHost({});
  assert.deepEqual(await missingPackages("test", probe), []);
  assert.deepEqual(await accountSteps("test", probe), []);
  const ran: string[][] = [];
  const done = await ensureHost("test", {
    probe,
    root: true,
    run: (argv) => {
      ran.push([...argv]);
      return Promise.resolve(0);
    },
  });
  assert.deepEqual(done, { installed: [], steps: [] });
  assert.deepEqual(ran, []);
});

Deno.test("host setup: missing files name their packages; a dynamic busybox does not count", async () => {
  const probe = fakeHost({
    files: ALL_FILES.filter((f) => f !== "/bin/cpio" && f !== "/usr/bin/sftp"),
    busybox: DYNAMIC_ELF,
  });
  assert.deepEqual(await missingPackages("test", probe), [
    "busybox-static",
    "openssh-client",
    "cpio",
  ]);
  // The VM runtime needs neither cpio nor the ssh client.
  assert.deepEqual(await missingPackages("vm", probe), ["busybox-static"]);
});

Deno.test("host setup: not root, one line with the command to run; nothing is run", async () => {
  const probe = fakeHost({
    files: ALL_FILES.filter((f) => f !== "/bin/cpio" && f !== "/run/sshd"),
    passwd: PASSWD.replace(/^sandbox:.*\n/m, ""),
  });
  const err = await ensureHost("test", {
    probe,
    root: false,
    run: () => Promise.reject(new Error("must not run anything")),
  }).catch((e) => e);
  assert.ok(err instanceof HostSetupError);
  assert.ok(!err.message.includes("\n"), err.message);
  assert.equal(
    err.message,
    "the host lacks packages cpio; create the user sandbox (the user the tests' host " +
      "supervisors log in as, as inside a VM), empty password for sandbox, create /run/sshd; " +
      "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends cpio && " +
      "sudo useradd --create-home --shell /bin/bash sandbox && sudo passwd -d sandbox && " +
      "sudo install -d -m 0755 /run/sshd",
  );
  assert.equal(
    aptInstallCommand(["cpio", "tmux"], { root: true }),
    "apt-get update && apt-get install -y --no-install-recommends cpio tmux",
  );
});

Deno.test("host setup: as root, apt-get installs what is missing, then the accounts", async () => {
  const probe = fakeHost({
    files: ALL_FILES.filter((f) => f !== "/usr/bin/tmux"),
    passwd: PASSWD.replace(/^openshell-vm:.*\n/m, ""),
    group: "kvm:x:993:\n",
    shadow: SHADOW.replace("sandbox::", "sandbox:!:"),
  });
  const ran: { argv: string[]; env?: Record<string, string> }[] = [];
  const done = await ensureHost("test", {
    probe,
    root: true,
    run: (argv, env) => {
      ran.push({ argv: [...argv], env });
      if (argv[0] === "apt-get" && argv[1] === "install") probe.files.add("/usr/bin/tmux");
      return Promise.resolve(0);
    },
  });
  assert.deepEqual(done.installed, ["tmux"]);
  assert.deepEqual(ran.map((r) => r.argv.join(" ")), [
    "apt-get update -qq",
    "apt-get install -y -qq --no-install-recommends tmux",
    "passwd -d sandbox",
    "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin " +
    "openshell-vm",
    "usermod -a -G kvm openshell-vm",
  ]);
  assert.equal(ran[1].env?.DEBIAN_FRONTEND, "noninteractive");
});

Deno.test("host setup: as root, a failed apt-get is one line and stops", async () => {
  const probe = fakeHost({ files: ALL_FILES.filter((f) => f !== "/usr/bin/tmux") });
  const err = await ensureHost("test", {
    probe,
    root: true,
    run: (argv) => Promise.resolve(argv[1] === "install" ? 100 : 0),
  }).catch((e) => e);
  assert.ok(err instanceof HostSetupError);
  assert.equal(err.message, "apt-get install tmux failed with status 100");
});
