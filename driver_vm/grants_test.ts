/**
 * The VM driver's grants hold: a probe run with exactly the flags its
 * launcher derives from its flags may serve its socket, use its state dir,
 * read the runtime and `/etc/passwd`, run qemu and setpriv, connect the
 * egress proxy's guest socket — and nothing else: no TCP at all, no other
 * program (not even the forwarder, which qemu runs), no other file or
 * socket (not the egress proxy's control socket beside its guest socket).
 */
import assert from "node:assert/strict";
import { driverGrants } from "../core/grants.ts";
import { probeGrants } from "../core/testing.ts";
import { parseDriverConfig } from "./config.ts";

Deno.test("driver grants: its socket, state dir, runtime, passwd, qemu, setpriv, egress socket; nothing else", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osdrgr" });
  const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await Deno.mkdir(`${dir}/egress`);
  const guestSock = `${dir}/egress/guest.sock`;
  const controlSock = `${dir}/egress/control.sock`;
  const egress = [
    Deno.listen({ transport: "unix", path: guestSock }),
    Deno.listen({ transport: "unix", path: controlSock }),
  ];
  try {
    const state = `${dir}/vm`;
    const rt = `${dir}/rt`;
    const qemu = `${dir}/qemu`;
    await Deno.mkdir(state);
    await Deno.mkdir(rt);
    await Deno.writeTextFile(`${rt}/vmlinuz`, "k");
    await Deno.writeTextFile(qemu, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    await Deno.writeTextFile(`${dir}/outside`, "x");
    // As the launcher does it (driver_vm/launch.ts): grants from the parsed flags.
    const parsed = parseDriverConfig([
      "--state-dir",
      state,
      "--openshell-endpoint",
      `http://127.0.0.1:${(other.addr as Deno.NetAddr).port}`,
      "--runtime-dir",
      rt,
      "--qemu",
      qemu,
      "--egress-socket",
      guestSock,
    ], () => undefined);
    if (parsed.kind !== "run") throw new Error("expected a run config");
    const c = parsed.config;
    const port = (other.addr as Deno.NetAddr).port;
    const grants = driverGrants({
      stateDir: c.stateDir,
      gateway: { host: "127.0.0.1", port },
      runtimeDir: c.runtimeDir,
      qemu: c.qemu,
      setpriv: c.setpriv,
      egressSocket: c.egressSocket,
    });
    const results = await probeGrants(grants, [
      // allowed
      { name: "serve its socket", op: "listen-unix", path: `${state}/compute-driver.sock` },
      { name: "write its state dir", op: "write", path: `${state}/probe` },
      { name: "read the runtime", op: "read", path: `${rt}/vmlinuz` },
      { name: "read /etc/passwd", op: "read", path: "/etc/passwd" },
      { name: "run qemu", op: "spawn", cmd: qemu },
      { name: "run setpriv", op: "spawn", cmd: "/usr/bin/setpriv", args: ["--version"] },
      { name: "connect the egress guest socket", op: "connect-unix", path: guestSock },
      // forbidden
      { name: "connect the egress control socket", op: "connect-unix", path: controlSock },
      { name: "listen tcp", op: "listen", host: "127.0.0.1", port: 0 },
      { name: "node listen tcp", op: "listen-node", host: "127.0.0.1", port: 0 },
      { name: "connect the gateway's supervisor plane", op: "connect", host: "127.0.0.1", port },
      { name: "connect another port", op: "connect", host: "127.0.0.1", port: port === 9 ? 10 : 9 },
      { name: "node connect another port", op: "connect-node", host: "127.0.0.1", port: 9 },
      { name: "listen another unix socket", op: "listen-unix", path: `${dir}/x.sock` },
      { name: "run /bin/sh", op: "spawn", cmd: "/bin/sh", args: ["-c", "true"] },
      { name: "run the forwarder", op: "spawn", cmd: "socat", args: ["-V"] },
      { name: "run prlimit", op: "spawn", cmd: "/usr/bin/prlimit" },
      { name: "write the runtime", op: "write", path: `${rt}/probe` },
      { name: "read /etc/shadow", op: "read", path: "/etc/shadow" },
      { name: "read outside its dirs", op: "read", path: `${dir}/outside` },
      { name: "write outside its dirs", op: "write", path: `${dir}/escape` },
      { name: "other variables", op: "env", var: "HOME" },
      { name: "system information", op: "sys" },
    ], { HOME: "/root", PATH: "/usr/bin:/bin" });
    assert.deepEqual(results, {
      "serve its socket": "ok",
      "write its state dir": "ok",
      "read the runtime": "ok",
      "read /etc/passwd": "ok",
      "run qemu": "ok",
      "run setpriv": "ok",
      "connect the egress guest socket": "ok",
      "connect the egress control socket": "NotCapable",
      "listen tcp": "NotCapable",
      "node listen tcp": "NotCapable",
      "connect the gateway's supervisor plane": "ok",
      "connect another port": "NotCapable",
      "node connect another port": "NotCapable",
      "listen another unix socket": "NotCapable",
      "run /bin/sh": "NotCapable",
      "run the forwarder": "NotCapable",
      "run prlimit": "NotCapable",
      "write the runtime": "NotCapable",
      "read /etc/shadow": "NotCapable",
      "read outside its dirs": "NotCapable",
      "write outside its dirs": "NotCapable",
      "other variables": "unset",
      "system information": "NotCapable",
    });
  } finally {
    other.close();
    for (const l of egress) l.close();
    await Deno.remove(dir, { recursive: true });
  }
});
