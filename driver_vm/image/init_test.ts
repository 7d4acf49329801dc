import assert from "node:assert/strict";
import { PRODUCTION_PARAMS, renderFlags, supervisorGrants } from "../../core/grants.ts";
import {
  GUEST_LAYOUT,
  NETWORK_FILES,
  renderInit,
  renderNetworkSetup,
  renderPid1,
  renderRunner,
  supervisorCommand,
} from "./init.ts";
import { renderGuestNetwork } from "../guest.ts";

async function shSyntaxOk(script: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-n", "-c", script], stderr: "piped" })
    .output();
  return out.code === 0 ? "" : new TextDecoder().decode(out.stderr);
}

/** Runs `script` with busybox sh in a temp dir; returns stdout. */
async function busybox(script: string, cwd: string): Promise<string> {
  const out = await new Deno.Command("/bin/busybox", {
    args: ["sh", "-c", script],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}

Deno.test("init: valid shell; loads the modules in order; sandbox disk rw, runtime disk ro, then switch_root", async () => {
  const text = renderInit({ modules: ["virtio_ring", "virtio", "virtio_net"] });
  assert.equal(await shSyntaxOk(text), "");
  assert.ok(text.startsWith("#!/bin/busybox sh\n"));
  assert.match(text, /for m in virtio_ring virtio virtio_net; do/);
  assert.match(text, /mount -t ext4 -o rw,relatime \/dev\/vda \/newroot /);
  assert.match(text, /mount -t ext4 -o ro \/dev\/vdb \/newroot\/opt\/openshell /);
  // The root grows later, beside the supervisor's start (PID 1), not on the boot's path.
  assert.ok(!text.includes("resize2fs"));
  assert.match(text, /\$OPENSHELL_GATEWAY_IP \$OPENSHELL_GATEWAY_HOST/);
  assert.match(text, /hostname "\$OPENSHELL_HOSTNAME"/);
  assert.match(text, new RegExp(`echo "${GUEST_LAYOUT.probeMarker}"`));
  assert.ok(
    text.trimEnd().endsWith(
      "exec switch_root /newroot /opt/openshell/bin/busybox sh /opt/openshell/init",
    ),
  );
  assert.throws(() => renderInit({ modules: ["x; rm -rf /"] }), /invalid module name/);
});

Deno.test("init: / not writable by others, /tmp and /dev/shm 1777, /run fresh; sshd's dir", () => {
  const text = renderInit({ modules: [] });
  assert.match(text, /chown 0:0 \/newroot\nchmod go-w \/newroot\n/);
  assert.match(text, /mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs \/newroot\/tmp\n/);
  assert.match(text, /mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs \/newroot\/dev\/shm\n/);
  assert.match(text, /mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs \/newroot\/run\n/);
  assert.match(text, /mkdir -m 0755 \/newroot\/run\/sshd\n/);
  assert.match(text, /mkdir -m 1777 \/newroot\/run\/lock\n/);
});

Deno.test("init: session cgroups mounted in the new root, bind-mounted to the supervisor's flag default", () => {
  const text = renderInit({ modules: [] });
  assert.match(text, /mount -t cgroup2 cgroup2 \/newroot\/sys\/fs\/cgroup/);
  assert.match(
    text,
    /mount -o bind \/newroot\/sys\/fs\/cgroup\/openshell \/newroot\/run\/openshell-sessions/,
  );
  assert.equal(GUEST_LAYOUT.sessionCgroupMount, PRODUCTION_PARAMS.supervisor.sessionCgroup);
  // /proc and /sys move last: everything before still reads them at their usual place.
  assert.ok(text.indexOf("for d in proc sys") > text.indexOf("fwcopy config"));
});

Deno.test("init: the secrets arrive as root-only files on a tmpfs (never on the sandbox's disk)", () => {
  const text = renderInit({ modules: [] });
  for (const name of ["config", "environment", "network", "ssh_host_key", "supervisor_token"]) {
    assert.ok(text.includes(`fwcopy ${name} /newroot/etc/openshell/${name}`), name);
  }
  assert.match(
    text,
    /mount -t tmpfs -o mode=0700,nosuid,nodev,noexec,size=4m tmpfs \/newroot\/etc\/openshell/,
  );
  assert.ok(text.indexOf("tmpfs /newroot/etc/openshell") < text.indexOf("fwcopy config"));
});

Deno.test("init: the copied secrets are 0600 (umask), and later files get the usual 0644", async () => {
  const text = renderInit({ modules: [] });
  const block = text.slice(text.indexOf("fwcopy() {"), text.indexOf("umask 022\n") + 10)
    .replaceAll("/sys/firmware/qemu_fw_cfg/by_name/opt/openshell", "./fw")
    .replaceAll("/newroot", ".");
  const dir = await Deno.makeTempDir({ prefix: "osfw" });
  try {
    for (const name of ["config", "ssh_host_key"]) {
      await Deno.mkdir(`${dir}/fw/${name}`, { recursive: true });
      await Deno.writeTextFile(`${dir}/fw/${name}/raw`, `${name} bytes\n`);
    }
    await Deno.mkdir(`${dir}/etc/openshell`, { recursive: true });
    await busybox(`${block}\necho later > ./after`, dir);
    for (const name of ["config", "ssh_host_key"]) {
      const path = `${dir}/etc/openshell/${name}`;
      assert.equal(await Deno.readTextFile(path), `${name} bytes\n`);
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, name);
    }
    assert.equal((await Deno.stat(`${dir}/after`)).mode! & 0o777, 0o644);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("init: PID 1 grows the root file system in the background with the runtime's own resize2fs", () => {
  const text = renderPid1();
  const grow = text.indexOf(
    "/opt/openshell/lib/ld-linux-x86-64.so.2 --library-path /opt/openshell/lib " +
      "--argv0 /opt/openshell/sbin/resize2fs /opt/openshell/sbin/resize2fs /dev/vda",
  );
  assert.ok(grow > 0, text);
  // In a background subshell that ignores PID 1's stop traps, started before the supervisor.
  const sub = text.lastIndexOf("(\n  trap - INT TERM USR1 USR2 PWR\n", grow);
  assert.ok(sub > 0 && sub < grow);
  assert.match(text.slice(grow), /^[^\n]*\n[\s\S]*?\n\) &\n/);
  assert.ok(grow < text.indexOf("sh /opt/openshell/run-supervisor"));
});

Deno.test("init: /etc/hosts keeps the user's lines and replaces only its own block", async () => {
  const text = renderInit({ modules: [] });
  const start = text.indexOf("hosts=/newroot/etc/hosts");
  const end = text.indexOf("rm -f /newroot/etc/resolv.conf");
  const block = text.slice(start, end).replaceAll("/newroot", ".");
  const dir = await Deno.makeTempDir({ prefix: "oshosts" });
  try {
    await Deno.mkdir(`${dir}/etc`);
    await Deno.writeTextFile(`${dir}/etc/hosts`, "10.9.9.9 mine\n");
    const env = "OPENSHELL_HOSTNAME=box OPENSHELL_GATEWAY_IP=10.0.2.100 " +
      "OPENSHELL_GATEWAY_HOST=gateway.openshell.internal";
    await busybox(`${env}; ${block}`, dir);
    await busybox(`${env}; ${block}`, dir); // a second boot
    const hosts = await Deno.readTextFile(`${dir}/etc/hosts`);
    assert.equal(hosts.split("\n").filter((l) => l === "10.9.9.9 mine").length, 1);
    assert.equal(hosts.split("# openshell-begin").length, 2, hosts);
    assert.match(hosts, /^127\.0\.1\.1 box$/m);
    assert.match(hosts, /^10\.0\.2\.100 gateway\.openshell\.internal$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("init: the network settings of each boot: egress on, then off, then from an older driver", async () => {
  const text = renderInit({ modules: [] });
  assert.ok(text.includes(renderNetworkSetup("/newroot")), "the init applies them");
  assert.ok(text.indexOf("fwcopy network") < text.indexOf("# This boot's network settings"));
  const dir = await Deno.makeTempDir({ prefix: "osnet" });
  const read = (p: string) => Deno.readTextFile(`${dir}${p}`);
  const gone = async (p: string) => {
    await assert.rejects(Deno.lstat(`${dir}${p}`), Deno.errors.NotFound, p);
  };
  try {
    for (const d of ["etc/openshell", "etc/apt/apt.conf.d", "etc/sudoers.d", "run"]) {
      await Deno.mkdir(`${dir}/${d}`, { recursive: true });
    }
    // An image whose resolv.conf is a link (systemd-resolved): replaced, not followed.
    await Deno.symlink("../run/stub-resolv.conf", `${dir}/etc/resolv.conf`);
    const setup = renderNetworkSetup(".");
    assert.equal(await shSyntaxOk(setup), "");

    await Deno.writeTextFile(`${dir}/etc/openshell/network`, renderGuestNetwork({ egress: true }));
    await busybox(setup, dir);
    assert.ok((await Deno.lstat(`${dir}/etc/resolv.conf`)).isFile);
    await gone("/run/stub-resolv.conf");
    const resolv = (await read("/etc/resolv.conf")).split("\n").filter((l) => !l.startsWith("#"));
    assert.deepEqual(resolv, ["nameserver 10.0.2.101", "options use-vc", ""]);
    assert.match(
      await read(NETWORK_FILES.aptProxy),
      /^Acquire::http::Proxy "http:\/\/10\.0\.2\.101:3128";\nAcquire::https::Proxy "http:\/\/10\.0\.2\.101:3128";$/m,
    );
    assert.equal(
      await read(NETWORK_FILES.sudoProxy),
      'Defaults env_keep += "HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy ' +
        'all_proxy no_proxy"\n',
    );
    assert.equal((await Deno.stat(`${dir}${NETWORK_FILES.sudoProxy}`)).mode! & 0o777, 0o440);

    // Egress off at the next boot: a name server nothing answers at, the proxy files gone.
    await Deno.writeTextFile(`${dir}/etc/openshell/network`, renderGuestNetwork({ egress: false }));
    await busybox(setup, dir);
    const off = (await read("/etc/resolv.conf")).split("\n").filter((l) => !l.startsWith("#"));
    assert.deepEqual(off, ["nameserver 127.0.0.1", "options use-vc attempts:1", ""]);
    await gone(NETWORK_FILES.aptProxy);
    await gone(NETWORK_FILES.sudoProxy);

    // No network file (a driver from before egress): off.
    await Deno.writeTextFile(`${dir}/etc/openshell/network`, renderGuestNetwork({ egress: true }));
    await busybox(setup, dir);
    await Deno.remove(`${dir}/etc/openshell/network`);
    await busybox(setup, dir);
    assert.match(await read("/etc/resolv.conf"), /^nameserver 127\.0\.0\.1$/m);
    await gone(NETWORK_FILES.aptProxy);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the guest init stages refuse to run unless they are PID 1, before touching anything", () => {
  for (const script of [renderInit({ modules: [] }), renderPid1()]) {
    const lines = script.split("\n").filter((l) => l && !l.startsWith("#"));
    assert.match(lines[0], /^\[ "\$\$" = 1 \] \|\| \{ .* exit 1; \}$/);
  }
});

Deno.test("pid 1: restarts the runner, reaps, and shuts down cleanly on ctrl-alt-delete or a signal", async () => {
  const text = renderPid1();
  assert.equal(await shSyntaxOk(text), "");
  assert.ok(text.startsWith("#!/opt/openshell/bin/busybox sh\n"));
  assert.match(text, /echo 0 > \/proc\/sys\/kernel\/ctrl-alt-del/);
  assert.match(text, /trap stop INT TERM USR1 USR2 PWR/);
  assert.match(text, /while :; do \$bb sh \/opt\/openshell\/run-supervisor; done/);
  // The shutdown: every process asked, then killed, the disk synced and read-only, power off.
  const stop = text.slice(text.indexOf("stop() {"), text.indexOf("# ctrl-alt-delete"));
  const order = ["kill -TERM -1", "kill -KILL -1", "sync", "mount -o remount,ro /", "poweroff -f"];
  let at = 0;
  for (const step of order) {
    const i = stop.indexOf(step, at);
    assert.ok(i >= at, `${step} missing or out of order`);
    at = i;
  }
});

Deno.test("runner: the supervisor runs with exactly its production grants, through the runtime's glibc", async () => {
  const flags = renderFlags(
    supervisorGrants({ ...PRODUCTION_PARAMS.supervisor, gatewayAddresses: ["10.0.2.100"] }),
  );
  const cmd = supervisorCommand();
  for (const f of flags) assert.ok(cmd.includes(f.includes("*") ? `'${f}'` : f), `missing ${f}`);
  assert.match(
    cmd,
    /--allow-net=gateway\.openshell\.internal,10\.0\.2\.100:8080,unix:\/run\/openshell\/ssh\.sock/,
  );
  assert.ok(!cmd.includes("--allow-all") && !/ -A /.test(cmd));
  assert.ok(
    cmd.startsWith(
      "/opt/openshell/lib/ld-linux-x86-64.so.2 --library-path /opt/openshell/lib " +
        "--argv0 /opt/openshell/bin/deno /opt/openshell/bin/deno run ",
    ),
  );
  assert.match(cmd, /--ssh-host-key \/etc\/openshell\/ssh_host_key/);
  assert.match(cmd, /--env-file \/etc\/openshell\/environment/);
  const runner = renderRunner();
  assert.equal(await shSyntaxOk(runner), "");
  assert.match(runner, /--supervisor-token-file \/etc\/openshell\/supervisor_token/);
  assert.match(cmd, /--allow-write=\/run\/openshell,\/run\/openshell-sessions /);
  // After the supervisor exits, its connections' cgroups are killed before the restart.
  assert.match(runner, /echo 1 > "\$\{g\}cgroup\.kill"/);
});
