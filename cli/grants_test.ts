/**
 * The CLI's grants hold. `deno task cli` narrows them to this run's config
 * dir and gateway (as the launcher derives them from the arguments): a
 * probe with exactly those flags may reach that gateway, its config dir and
 * `ssh`, nothing else. The compiled CLI (any host, any path: it serves
 * every user) still runs no program but `ssh`.
 */
import assert from "node:assert/strict";
import { cliGrants, PRODUCTION_PARAMS } from "../core/grants.ts";
import { probeGrants } from "../core/testing.ts";
import { configRoot } from "./config.ts";
import { gatewaysOf } from "./launch.ts";

Deno.test("cli grants: its gateway, its config dir and ssh; nothing else", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osclgr" });
  const gateway = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (gateway.addr as Deno.NetAddr).port;
    const otherPort = (other.addr as Deno.NetAddr).port;
    const env: Record<string, string> = {
      HOME: `${dir}/home`,
      XDG_CONFIG_HOME: `${dir}/cfg`,
      PATH: "/usr/bin:/bin",
    };
    const root = configRoot((n) => env[n]);
    await Deno.mkdir(root, { recursive: true });
    await Deno.writeTextFile(`${dir}/outside`, "x");
    const args = ["status", "--gateway-endpoint", `http://127.0.0.1:${port}`];
    const gateways = await gatewaysOf(args, root, (n) => env[n]);
    assert.deepEqual(gateways, [{ host: "127.0.0.1", port }]);
    const results = await probeGrants(cliGrants({ configDir: root, gateways }), [
      // allowed
      { name: "connect its gateway", op: "connect", host: "127.0.0.1", port },
      { name: "node connect its gateway", op: "connect-node", host: "127.0.0.1", port },
      { name: "write its config dir", op: "write", path: `${root}/probe` },
      { name: "run ssh", op: "spawn", cmd: "ssh", args: ["-V"] },
      { name: "HOME", op: "env", var: "HOME" },
      // forbidden
      { name: "connect another port", op: "connect", host: "127.0.0.1", port: otherPort },
      { name: "node connect another port", op: "connect-node", host: "127.0.0.1", port: otherPort },
      { name: "connect another host", op: "connect", host: "127.0.0.2", port },
      { name: "listen tcp", op: "listen", host: "127.0.0.1", port: 0 },
      { name: "listen a unix socket", op: "listen-unix", path: `${root}/x.sock` },
      { name: "run /bin/sh", op: "spawn", cmd: "/bin/sh", args: ["-c", "true"] },
      { name: "run sh", op: "spawn", cmd: "sh", args: ["-c", "true"] },
      { name: "read /etc/passwd", op: "read", path: "/etc/passwd" },
      { name: "read outside its config dir", op: "read", path: `${dir}/outside` },
      { name: "write outside its config dir", op: "write", path: `${dir}/escape` },
      { name: "other variables", op: "env", var: "PATH" },
      { name: "system information", op: "sys" },
    ], env);
    assert.deepEqual(results, {
      "connect its gateway": "ok",
      "node connect its gateway": "ok",
      "write its config dir": "ok",
      "run ssh": "ok",
      "HOME": "ok",
      "connect another port": "NotCapable",
      "node connect another port": "NotCapable",
      "connect another host": "NotCapable",
      "listen tcp": "NotCapable",
      "listen a unix socket": "NotCapable",
      "run /bin/sh": "NotCapable",
      "run sh": "NotCapable",
      "read /etc/passwd": "NotCapable",
      "read outside its config dir": "NotCapable",
      "write outside its config dir": "NotCapable",
      "other variables": "unset",
      "system information": "NotCapable",
    });

    // The compiled CLI's grants: open network and files, but still only ssh.
    const compiled = await probeGrants(cliGrants(PRODUCTION_PARAMS.cli), [
      { name: "run ssh", op: "spawn", cmd: "ssh", args: ["-V"] },
      { name: "run /bin/sh", op: "spawn", cmd: "/bin/sh", args: ["-c", "true"] },
      { name: "run sh", op: "spawn", cmd: "sh", args: ["-c", "true"] },
      { name: "system information", op: "sys" },
    ], env);
    assert.deepEqual(compiled, {
      "run ssh": "ok",
      "run /bin/sh": "NotCapable",
      "run sh": "NotCapable",
      "system information": "NotCapable",
    });
  } finally {
    gateway.close();
    other.close();
    await Deno.remove(dir, { recursive: true });
  }
});
