/**
 * Supervisor tokens end to end: a gateway that enforces them, with the
 * host-process driver fixture provisioning real supervisors.
 */
import assert from "node:assert/strict";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import type { CreateSshSessionResponse, Sandbox } from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { writeHostDriverDir } from "../supervisor/host_driver.ts";
import { ensureSandboxUser, gatewayApi } from "../supervisor/testing.ts";
import { connectFakeSupervisor, startGateway } from "./testing.ts";

Deno.test("a provisioned supervisor token is required; the host key fingerprint is reported", async () => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osauth" });
  await writeHostDriverDir(dir);
  const gw = await startGateway({ driverDir: dir, auth: true });
  const api = gatewayApi(gw.port);
  try {
    await api.waitHealthy();
    const sb: Sandbox = await api.create("guarded");
    // The driver's supervisor presents the token the gateway provisioned.
    await api.waitForPhase(sb.id, "SANDBOX_PHASE_READY", 60_000);

    const anonymous = connectFakeSupervisor({ port: gw.port, sandboxId: sb.id });
    const noToken = await anonymous.ended;
    assert.equal(noToken.code, Code.UNAUTHENTICATED);
    assert.match(noToken.details, /supervisor token/);
    anonymous.close();

    const impostor = connectFakeSupervisor({
      port: gw.port,
      sandboxId: sb.id,
      metadata: { [SUPERVISOR_TOKEN_METADATA]: "not-the-token" },
    });
    assert.equal((await impostor.ended).code, Code.UNAUTHENTICATED);
    impostor.close();

    // The real session was never superseded.
    assert.equal((await api.get("guarded")).phase, "SANDBOX_PHASE_READY");
    const ssh: CreateSshSessionResponse = await api.sshSession(sb.id);
    assert.match(ssh.host_key_fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(await api.delete("guarded"), true);
  } finally {
    api.close();
    await gw.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
