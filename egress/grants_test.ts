/**
 * The egress proxy's grants hold: a probe run with exactly the flags its
 * launcher derives from its flags may serve its sockets, use its state dir,
 * dial any host and read the interface addresses — and nothing else: no
 * program, no file outside its state dir, no other variable, no other
 * system information.
 */
import assert from "node:assert/strict";
import { egressGrants } from "../core/grants.ts";
import { probeGrants } from "../core/testing.ts";
import { parseEgressConfig } from "./config.ts";

Deno.test("egress grants: its sockets and state dir, any host, interfaces; no program, no other file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osegr" });
  const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const state = `${dir}/egress`;
    await Deno.mkdir(state);
    await Deno.writeTextFile(`${dir}/outside`, "x");
    // As the launcher does it (egress/launch.ts): grants from the parsed flags.
    const parsed = parseEgressConfig(["--state-dir", state], () => undefined);
    if (parsed.kind !== "run") throw new Error("expected a run config");
    const grants = egressGrants({ stateDir: parsed.config.stateDir });
    const port = (other.addr as Deno.NetAddr).port;
    const results = await probeGrants(grants, [
      // allowed
      { name: "serve guest.sock", op: "listen-unix", path: `${state}/guest.sock` },
      { name: "serve control.sock", op: "listen-unix", path: `${state}/control.sock` },
      { name: "write its state dir", op: "write", path: `${state}/probe` },
      { name: "dial a host", op: "connect", host: "127.0.0.1", port },
      { name: "node dial a host", op: "connect-node", host: "127.0.0.1", port },
      { name: "interface addresses", op: "sys", call: "networkInterfaces" },
      // forbidden
      { name: "run /bin/sh", op: "spawn", cmd: "/bin/sh", args: ["-c", "true"] },
      { name: "run socat", op: "spawn", cmd: "socat", args: ["-V"] },
      { name: "read /etc/passwd", op: "read", path: "/etc/passwd" },
      { name: "read outside its dir", op: "read", path: `${dir}/outside` },
      { name: "write outside its dir", op: "write", path: `${dir}/escape` },
      { name: "listen on a unix socket elsewhere", op: "listen-unix", path: `${dir}/x.sock` },
      { name: "other variables", op: "env", var: "HOME" },
      { name: "host name", op: "sys", call: "hostname" },
    ], { HOME: "/root", PATH: "/usr/bin:/bin" });
    assert.deepEqual(results, {
      "serve guest.sock": "ok",
      "serve control.sock": "ok",
      "write its state dir": "ok",
      "dial a host": "ok",
      "node dial a host": "ok",
      "interface addresses": "ok",
      "run /bin/sh": "NotCapable",
      "run socat": "NotCapable",
      "read /etc/passwd": "NotCapable",
      "read outside its dir": "NotCapable",
      "write outside its dir": "NotCapable",
      "listen on a unix socket elsewhere": "NotCapable",
      "other variables": "unset",
      "host name": "NotCapable",
    });
  } finally {
    other.close();
    await Deno.remove(dir, { recursive: true });
  }
});
