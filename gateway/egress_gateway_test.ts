/**
 * Integration: a real gateway process (`--drivers none --egress`) running
 * the real egress proxy (egress/main.ts under its exact grants). Policies go
 * from CreateSandbox/UpdateConfig to the proxy and back as LOADED; a proxy
 * that dies is restarted and given every policy again; its connection events
 * land in the sandbox's logs; neither a SIGTERM nor a SIGKILL of the gateway
 * leaves the proxy behind. Guest connections are made on the proxy's guest
 * socket with the driver's header line, to denied hosts only (nothing is
 * dialled).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { policyHash } from "../core/policy.ts";
import type { SandboxPolicy, Wire } from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { alive, findProcesses, waitFor } from "../core/testing.ts";
import { apiClient, spawnGateway, type TestGateway } from "../testing/gateway.ts";

function allow(host: string, port = 443): Wire<SandboxPolicy> {
  return { network_policies: { r: { name: "r", endpoints: [{ host, port }] } } };
}

/** Pids of the egress proxies serving `stateDir`. */
async function egressPids(stateDir: string): Promise<number[]> {
  return (await findProcesses(`${stateDir}/egress`))
    .filter((p) => p.cmdline.includes("egress/main.ts") && !p.cmdline.startsWith("/bin/sh"))
    .map((p) => p.pid);
}

/** A guest connection as the VM driver makes it: header line, then an HTTP request. */
function guestRequest(socket: string, sandboxId: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socket);
    let data = "";
    c.on("connect", () => c.write(`OPENSHELL-EGRESS/1 ${sandboxId} http\n${request}`));
    c.on("data", (d) => {
      data += d.toString();
      if (data.includes("\r\n\r\n") && /Content-Length: (\d+)/i.test(data)) {
        const len = Number(/Content-Length: (\d+)/i.exec(data)![1]);
        if (data.length >= data.indexOf("\r\n\r\n") + 4 + len) c.end();
      }
    });
    c.on("error", reject);
    c.on("close", () => resolve(data));
  });
}

async function withEgressGateway(fn: (gw: TestGateway) => Promise<void>): Promise<void> {
  const gw = await spawnGateway({ egress: true });
  try {
    await fn(gw);
  } catch (err) {
    console.error(gw.stderr());
    throw err;
  } finally {
    if (await alive(gw.pid)) await gw.stop();
  }
}

Deno.test("gateway + egress: policies load, update, survive a proxy restart; events reach the logs", async () => {
  await withEgressGateway(async (gw) => {
    const api = apiClient(gw.port);
    try {
      const status = (name: string, version = 0) =>
        api.call(api.raw.GetSandboxPolicyStatus, { name, version });
      const loaded = (name: string, version: number) =>
        waitFor(`policy ${version} of ${name} LOADED`, async () => {
          const s = await status(name, version);
          return s.revision?.status === "POLICY_STATUS_LOADED" ? s : undefined;
        }, { timeoutMs: 10_000 });

      // Create with a policy: revision 1, LOADED within a bounded wait.
      const created = await api.call(api.raw.CreateSandbox, {
        name: "pol",
        spec: { policy: allow("pypi.org") },
      });
      const id = created.sandbox!.id;
      const v1 = await loaded("pol", 1);
      assert.equal(v1.revision?.policy_hash, policyHash(allow("pypi.org")));
      assert.equal(v1.active_version, 1);
      assert.ok(v1.revision!.loaded_at_ms > 0);
      const got = await api.call(api.raw.GetSandbox, { name: "pol" });
      assert.equal(got.sandbox!.current_policy_version, 1);
      assert.equal(got.sandbox!.spec?.policy?.network_policies?.r.endpoints?.[0].host, "pypi.org");

      // An invalid policy: INVALID_ARGUMENT naming the field; nothing created.
      await assert.rejects(
        api.call(api.raw.CreateSandbox, {
          name: "bad",
          spec: {
            policy: {
              network_policies: {
                x: { endpoints: [{ host: "a.example", port: 1, protocol: "rest" }] },
              },
            },
          },
        }),
        (e: { code: number; details: string }) =>
          e.code === Code.INVALID_ARGUMENT &&
          /^spec\.policy\.network_policies\["x"\]\.endpoints\[0\]\.protocol:/.test(e.details),
      );
      await assert.rejects(
        api.call(api.raw.UpdateConfig, {
          name: "pol",
          policy: allow("a.example"),
          setting_key: "k",
        }),
        (e: { code: number; details: string }) =>
          e.code === Code.INVALID_ARGUMENT && e.details.startsWith("setting_key:"),
      );

      // UpdateConfig: version 2 with the policy's hash; LOADED; v1 stays LOADED in history.
      const upd = await api.call(api.raw.UpdateConfig, {
        name: "pol",
        policy: allow("files.pythonhosted.org"),
      });
      assert.equal(upd.version, 2);
      assert.equal(upd.policy_hash, policyHash(allow("files.pythonhosted.org")));
      assert.equal((await loaded("pol", 2)).active_version, 2);
      const list = await api.call(api.raw.ListSandboxPolicies, {
        name: "pol",
        limit: 10,
      });
      assert.deepEqual(list.revisions.map((r) => [r.version, r.status]), [
        [2, "POLICY_STATUS_LOADED"],
        [1, "POLICY_STATUS_LOADED"],
      ]);

      // A denied CONNECT through the guest socket: 403 naming the fix, and an egress log line.
      const guest = `${gw.stateDir}/egress/guest.sock`;
      const answer = await guestRequest(
        guest,
        id,
        "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
      );
      assert.match(answer, /^HTTP\/1\.1 403/);
      assert.match(answer, /openshell policy set .* --allow pypi\.org:443/);
      const egressLines = await waitFor("an egress log line", async () => {
        const logs = await api.call(api.raw.GetSandboxLogs, {
          sandbox_id: id,
          sources: ["egress"],
        });
        return logs.logs.length > 0 ? logs.logs : undefined;
      }, { timeoutMs: 10_000 });
      assert.ok(egressLines.every((l) => l.source === "egress"));
      assert.ok(
        egressLines.some((l) => l.message.includes("pypi.org")),
        JSON.stringify(egressLines),
      );

      // Kill the proxy: the gateway starts another and gives it version 2 again.
      const [first] = await waitFor("the egress proxy's pid", async () => {
        const pids = await egressPids(gw.stateDir);
        return pids.length === 1 ? pids : undefined;
      });
      Deno.kill(first, "SIGKILL");
      await waitFor("a new egress proxy", async () => {
        const pids = await egressPids(gw.stateDir);
        return pids.length === 1 && pids[0] !== first ? pids : undefined;
      }, { timeoutMs: 20_000 });
      // The new proxy enforces version 2: a denied host is still answered for this sandbox
      // (an unknown sandbox would be refused outright), and the policy is the new one.
      await waitFor("the policy re-applied", async () => {
        const a = await guestRequest(
          guest,
          id,
          "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
        ).catch(() => "");
        return /^HTTP\/1\.1 403/.test(a) ? true : undefined;
      }, { timeoutMs: 20_000 });
      assert.match(gw.stderr(), /egress proxy exited with status/);
      assert.match(gw.stderr(), /egress proxy reconciled.*applied=1/);

      // Delete: the proxy forgets the sandbox.
      await api.call(api.raw.DeleteSandbox, { name: "pol" });
      const after = await guestRequest(
        guest,
        id,
        "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
      ).catch(() => "");
      assert.doesNotMatch(after, /^HTTP\/1\.1 403/, "an unknown sandbox gets no answer");
    } finally {
      api.close();
    }
  });
});

Deno.test("gateway + egress: SIGTERM and SIGKILL of the gateway leave no egress proxy", async () => {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    const gw = await spawnGateway({ egress: true });
    try {
      const pids = await waitFor("the egress proxy", async () => {
        const p = await egressPids(gw.stateDir);
        return p.length === 1 ? p : undefined;
      });
      if (signal === "SIGTERM") await gw.stop();
      else await gw.kill();
      await waitFor(`egress gone after ${signal}`, async () => !(await alive(pids[0])), {
        timeoutMs: 10_000,
      });
    } catch (err) {
      console.error(gw.stderr());
      throw err;
    } finally {
      if (await alive(gw.pid)) await gw.kill();
    }
  }
});
