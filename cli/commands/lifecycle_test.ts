/**
 * `sandbox stop` / `sandbox start` through the CLI, and sandboxes coming
 * back after a gateway restart on a file database — against a real gateway
 * whose sandboxes are host supervisors (the host driver keeps their dirs
 * across its restarts like the VM driver; e2e:vm does the same with VMs).
 */
import assert from "node:assert/strict";
import { cliGrants } from "../../core/grants.ts";
import { roleCommand } from "../../core/launcher.ts";
import { waitFor } from "../../core/testing.ts";
import { spawnGateway, type TestGateway } from "../../testing/gateway.ts";
import { writeHostDriverDir } from "../../testing/host_driver.ts";
import { cleanEnv, ensureSandboxUser, gatewayApi } from "../../testing/supervisor.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(gw: TestGateway, configHome: string, args: string[]): Promise<Run> {
  const [exe, ...rest] = roleCommand(
    "cli",
    cliGrants({ configDir: configHome, gateways: [{ host: "127.0.0.1", port: gw.port }] }),
    args,
  );
  const out = await new Deno.Command(exe, {
    args: rest,
    clearEnv: true,
    env: cleanEnv({
      XDG_CONFIG_HOME: configHome,
      OPENSHELL_GATEWAY_ENDPOINT: gw.endpoint,
      NO_COLOR: "1",
    }),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

function show(r: Run): string {
  return `exit ${r.code}\n${r.stdout}${r.stderr}`;
}

Deno.test("sandbox stop/start, and a gateway restart on a file database brings sandboxes back", async (t) => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "oslife" });
  await writeHostDriverDir(dir);
  const configHome = `${dir}/cfg`;
  await Deno.mkdir(configHome);
  const options = {
    driverDir: dir,
    stateDir: `${dir}/gw`,
    vmDriverStateDir: `${dir}/vm`,
    dbUrl: `sqlite:${dir}/gateway.db`,
  };
  await Deno.mkdir(options.stateDir, { mode: 0o700 });
  let gw = await spawnGateway(options);
  let api = gatewayApi(gw.port);
  try {
    await api.waitHealthy();
    const keep = await api.create("keep");
    const rest = await api.create("rest");
    await api.waitForPhase(keep.id, "SANDBOX_PHASE_READY", 60_000);
    await api.waitForPhase(rest.id, "SANDBOX_PHASE_READY", 60_000);
    const fingerprint = (await api.sshSession(keep.id)).host_key_fingerprint;

    await t.step("stop: the sandbox is Stopped, its reason says how to start it", async () => {
      const r = await cli(gw, configHome, ["sandbox", "stop", "rest"]);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /^Stopped sandbox rest$/m);
      const s = await api.get("rest");
      assert.equal(s.phase, "SANDBOX_PHASE_STOPPED");
      const ready = s.status!.conditions.find((c) => c.type === "Ready")!;
      assert.equal(ready.reason, "Stopped");
      assert.match(ready.message, /openshell sandbox start rest/);
      const get = await cli(gw, configHome, ["sandbox", "get", "rest"]);
      assert.match(get.stdout, /Stopped/, show(get));
      const exec = await cli(gw, configHome, ["sandbox", "exec", "rest", "--", "true"]);
      assert.notEqual(exec.code, 0, "a stopped sandbox runs nothing");
    });

    await t.step("start: it boots again and the command waits until it is ready", async () => {
      const r = await cli(gw, configHome, ["sandbox", "start", "rest", "--timeout", "60"]);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stderr, /Sandbox rest is ready/);
      assert.equal((await api.get("rest")).phase, "SANDBOX_PHASE_READY");
      const exec = await cli(gw, configHome, ["sandbox", "exec", "rest", "--", "echo", "back"]);
      assert.equal(exec.stdout, "back\n", show(exec));
      const again = await cli(gw, configHome, ["sandbox", "start", "rest"]);
      assert.equal(again.code, 0, show(again));
      assert.match(again.stderr, /Sandbox rest is ready/, "starting a running sandbox: no-op");
    });

    await t.step("unknown names and missing arguments are clear errors", async () => {
      const r = await cli(gw, configHome, ["sandbox", "stop", "nope"]);
      assert.equal(r.code, 1, show(r));
      assert.match(r.stderr, /sandbox "nope" not found/);
      const u = await cli(gw, configHome, ["sandbox", "start"]);
      assert.equal(u.code, 2, show(u));
      assert.match(u.stderr, /missing NAME/);
    });

    await t.step(
      "gateway SIGTERM + restart: the running one is READY again, same host key; the stopped one stays stopped",
      async () => {
        const stop = await cli(gw, configHome, ["sandbox", "stop", "rest"]);
        assert.equal(stop.code, 0, show(stop));
        api.close();
        // SIGTERM: the gateway stops its driver, which powers the sandboxes off.
        await gw.stop();
        gw = await spawnGateway(options);
        api = gatewayApi(gw.port);
        await api.waitHealthy();
        const back = await api.waitForPhase(keep.id, "SANDBOX_PHASE_READY", 60_000);
        assert.equal(back.name, "keep");
        assert.equal((await api.sshSession(keep.id)).host_key_fingerprint, fingerprint);
        const exec = await cli(gw, configHome, ["sandbox", "exec", "keep", "--", "echo", "again"]);
        assert.equal(exec.stdout, "again\n", show(exec));
        assert.equal((await api.get("rest")).phase, "SANDBOX_PHASE_STOPPED");
        assert.match(gw.stderr(), /sandboxes resumed after a restart/);
      },
    );

    await t.step(
      "an in-memory database starts empty: the driver's sandboxes are removed",
      async () => {
        api.close();
        await gw.stop();
        gw = await spawnGateway({ ...options, dbUrl: "sqlite::memory:" });
        api = gatewayApi(gw.port);
        await api.waitHealthy();
        await waitFor("the driver's sandbox dirs removed", async () => {
          const left = [];
          for await (const e of Deno.readDir(`${dir}/vm/sandboxes`)) left.push(e.name);
          return left.length === 0 ? true : undefined;
        }, { timeoutMs: 30_000 });
        const list = await cli(gw, configHome, ["sandbox", "list", "--names"]);
        assert.equal(list.stdout, "", show(list));
      },
    );
  } finally {
    api.close();
    await gw.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
