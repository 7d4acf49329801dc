import assert from "node:assert/strict";
import { fingerprintOfPublicKey, publicKeyOfPrivate } from "../core/ssh_keys.ts";
import { spawnGateway } from "./gateway.ts";
import { GUEST_FILES, renderGuestConfig } from "../driver_vm/guest.ts";
import { parseGuestConfig, writeHostDriverDir } from "./host_driver.ts";
import { connectRoute, ensureSandboxUser, gatewayApi, ssh } from "./supervisor.ts";
import { waitFor } from "../core/testing.ts";

const READY = "SANDBOX_PHASE_READY";

async function pids(pattern: string): Promise<number[]> {
  const out = await new Deno.Command("pgrep", { args: ["-f", "--", pattern], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).trim().split("\n").filter(Boolean).map(Number);
}

Deno.test("parseGuestConfig reads back what renderGuestConfig wrote, quotes included", () => {
  const text = renderGuestConfig({
    sandboxId: "sb-1",
    sandboxName: `it's "odd" $(x) \`y\` a b`,
    logLevel: "debug",
    tls: true,
  });
  const c = parseGuestConfig(text);
  assert.equal(c.OPENSHELL_SANDBOX_ID, "sb-1");
  assert.equal(c.OPENSHELL_SANDBOX, `it's "odd" $(x) \`y\` a b`);
  assert.equal(c.OPENSHELL_LOG_LEVEL, "debug");
  // The network settings are per boot, in the driver's `network` file, not here.
  assert.equal(c.OPENSHELL_GUEST_DNS, undefined);
  assert.throws(() => parseGuestConfig("A=$(reboot)\n"), /cannot read the value of A/);
  assert.throws(() => parseGuestConfig("not an assignment\n"), /cannot read line/);
});

Deno.test("host driver: the gateway's VM-driver path with supervisors on this host", async (t) => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osup-hd-" });
  await writeHostDriverDir(dir);
  const gw = await spawnGateway({ driverDir: dir });
  const driverState = `${gw.stateDir}/vm`;
  const api = gatewayApi(gw.port);
  let gatewayGone = false;
  try {
    await api.waitHealthy();
    await t.step("create → READY, serving the host key the gateway provisioned", async () => {
      // No second ComputeDriver: the gateway talks to the real VM driver's service.
      assert.match(gw.stderr(), /compute driver ready.*openshell-driver-vm/);
      const sb = await api.create("hd-one");
      await api.waitForPhase(sb.id, READY);
      const session = await api.sshSession(sb.id);
      // The real VM driver wrote the guest files: the key the gateway provisioned, 0600.
      const keyFile = `${driverState}/sandboxes/${sb.id}/guest/${GUEST_FILES.sshHostKey.fwcfg}`;
      const key = await Deno.readTextFile(keyFile);
      assert.equal(((await Deno.stat(keyFile)).mode ?? 0) & 0o777, 0o600);
      const publicKey = publicKeyOfPrivate(key);
      assert.match(session.host_key_fingerprint, /^SHA256:/);
      assert.equal(fingerprintOfPublicKey(publicKey), session.host_key_fingerprint);
      await Deno.writeTextFile(`${dir}/known_hosts`, `sandbox ${publicKey}\n`);
      const route = {
        ...connectRoute({
          host: "127.0.0.1",
          port: gw.port,
          connectPath: session.connect_path,
          sandboxId: sb.id,
          token: session.token,
        }),
        knownHostsFile: `${dir}/known_hosts`,
      };
      const r = await ssh(route, "echo pinned");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "pinned\n");

      assert.equal(await api.delete("hd-one"), true);
      await waitFor(
        "the deleted sandbox's supervisor to stop",
        async () => (await pids(`--sandbox-id ${sb.id}`)).length === 0,
        { timeoutMs: 15_000, intervalMs: 100 },
      );
    });

    await t.step("a supervisor that dies → ProcessExited → ERROR", async () => {
      const sb = await api.create("hd-two");
      await api.waitForPhase(sb.id, READY);
      const [pid] = await pids(`--sandbox-id ${sb.id}`);
      Deno.kill(pid, "SIGKILL");
      const failed = await api.waitForPhase(sb.id, "SANDBOX_PHASE_ERROR");
      const cond = failed.status?.conditions.find((c) => c.type === "Ready");
      assert.equal(cond?.reason, "ProcessExited");
    });

    await t.step("the driver and its supervisors die with the gateway", async () => {
      const sb = await api.create("hd-three");
      await api.waitForPhase(sb.id, READY);
      assert.equal((await pids(`--sandbox-id ${sb.id}`)).length, 1);
      assert.ok((await pids(`--state-dir ${driverState}`)).length >= 1, "driver running");
      api.close();
      await gw.kill();
      gatewayGone = true;
      await waitFor(
        "driver and supervisor to exit",
        async () =>
          (await pids(`--state-dir ${driverState}`)).length === 0 &&
          (await pids(`--sandbox-id ${sb.id}`)).length === 0,
        { timeoutMs: 15_000, intervalMs: 100 },
      );
    });
  } finally {
    api.close();
    if (!gatewayGone) await gw.shutdown();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
