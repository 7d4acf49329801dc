/**
 * The gateway's grants hold: a probe run with exactly the flags the
 * gateway's launcher derives from its flags (`--drivers vm` on loopback)
 * may listen on its port, use its state dir and the driver's socket, run
 * the driver — and nothing else.
 */
import assert from "node:assert/strict";
import { gatewayGrants } from "../core/grants.ts";
import { freePort, probeGrants } from "../core/testing.ts";
import { gatewayGrantParams, parseGatewayConfig } from "./config.ts";

Deno.test("gateway grants: its port, state dir, driver socket and binary; nothing else", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osgwgr" });
  const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const otherUnix = Deno.listen({ transport: "unix", path: `${dir}/other.sock` });
  try {
    const port = freePort();
    const state = `${dir}/state`;
    const vm = `${dir}/vm`;
    await Deno.mkdir(state);
    await Deno.mkdir(vm);
    await Deno.mkdir(`${dir}/bin`);
    const driver = `${dir}/bin/openshell-driver-vm`;
    await Deno.writeTextFile(driver, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    await Deno.writeTextFile(`${dir}/outside`, "x");
    const driverSocket = Deno.listen({ transport: "unix", path: `${vm}/compute-driver.sock` });
    const parsed = parseGatewayConfig([
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--state-dir",
      state,
      "--db-url",
      "sqlite::memory:",
      "--disable-tls",
      "--disable-gateway-auth",
      "--drivers",
      "vm",
      "--driver-dir",
      `${dir}/bin`,
      "--vm-driver-state-dir",
      vm,
    ], () => undefined);
    assert.ok(!parsed.help);
    const otherPort = (other.addr as Deno.NetAddr).port;
    try {
      const results = await probeGrants(gatewayGrants(gatewayGrantParams(parsed.config)), [
        // allowed
        { name: "listen its port", op: "listen", host: "127.0.0.1", port },
        { name: "write its state dir", op: "write", path: `${state}/probe` },
        {
          name: "connect the driver socket",
          op: "connect-unix",
          path: `${vm}/compute-driver.sock`,
        },
        { name: "run the driver", op: "spawn", cmd: driver },
        { name: "OPENSHELL_ variables", op: "env", var: "OPENSHELL_PROBE" },
        // forbidden
        { name: "listen another port", op: "listen", host: "127.0.0.1", port: otherPort + 1 },
        { name: "listen 0.0.0.0", op: "listen", host: "0.0.0.0", port },
        { name: "node listen another port", op: "listen-node", host: "127.0.0.1", port: 0 },
        { name: "connect another port", op: "connect", host: "127.0.0.1", port: otherPort },
        {
          name: "node connect another port",
          op: "connect-node",
          host: "127.0.0.1",
          port: otherPort,
        },
        { name: "connect another host", op: "connect", host: "127.0.0.2", port },
        { name: "connect another unix socket", op: "connect-unix", path: `${dir}/other.sock` },
        { name: "listen a unix socket elsewhere", op: "listen-unix", path: `${dir}/mine.sock` },
        { name: "run /bin/sh", op: "spawn", cmd: "/bin/sh", args: ["-c", "true"] },
        { name: "run sh", op: "spawn", cmd: "sh", args: ["-c", "true"] },
        { name: "read /etc/passwd", op: "read", path: "/etc/passwd" },
        { name: "read outside its dirs", op: "read", path: `${dir}/outside` },
        { name: "write outside its dirs", op: "write", path: `${dir}/escape` },
        { name: "write the driver's state dir", op: "write", path: `${vm}/probe` },
        { name: "other variables", op: "env", var: "HOME" },
        { name: "system information", op: "sys" },
      ], { HOME: "/root", PATH: "/usr/bin:/bin", OPENSHELL_PROBE: "1" });
      assert.deepEqual(results, {
        "listen its port": "ok",
        "write its state dir": "ok",
        "connect the driver socket": "ok",
        "run the driver": "ok",
        "OPENSHELL_ variables": "ok",
        "listen another port": "NotCapable",
        "listen 0.0.0.0": "NotCapable",
        "node listen another port": "NotCapable",
        "connect another port": "NotCapable",
        "node connect another port": "NotCapable",
        "connect another host": "NotCapable",
        "connect another unix socket": "NotCapable",
        "listen a unix socket elsewhere": "NotCapable",
        "run /bin/sh": "NotCapable",
        "run sh": "NotCapable",
        "read /etc/passwd": "NotCapable",
        "read outside its dirs": "NotCapable",
        "write outside its dirs": "NotCapable",
        "write the driver's state dir": "NotCapable",
        "other variables": "unset",
        "system information": "NotCapable",
      });
    } finally {
      driverSocket.close();
    }
  } finally {
    other.close();
    otherUnix.close();
    await Deno.remove(dir, { recursive: true });
  }
});
