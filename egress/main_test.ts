/**
 * The real `openshell-egress` process, started as its launcher starts it
 * (`deno run` with exactly its grants): it serves both sockets, enforces a
 * policy pushed over the control socket, and stops cleanly on SIGTERM.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { egressGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { EgressProxyClient, unaryCall } from "../core/protocol.ts";
import { waitFor } from "../core/testing.ts";
import { netnsUnavailable, startNetnsServer } from "../testing/netns.ts";
import { deniedBody } from "./http_proxy.ts";
import { openGuest, readHead, readToEnd, writeAll } from "./testing.ts";

const dec = new TextDecoder();

function spawnEgress(stateDir: string, extra: string[] = []): Deno.ChildProcess {
  const [exe, ...args] = roleCommand("egress", egressGrants({ stateDir }), [
    "--state-dir",
    stateDir,
    ...extra,
  ]);
  return new Deno.Command(exe, {
    args,
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

Deno.test({
  name: "the egress process under its grants: policy over control.sock, CONNECT, 403, SIGTERM",
  ignore: !!netnsUnavailable(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "osegm" });
    const state = `${dir}/egress`;
    const srv = await startNetnsServer();
    const child = spawnEgress(state);
    const stderr = new Response(child.stderr).text();
    let client: EgressProxyClient | undefined;
    try {
      client = new EgressProxyClient(
        `unix:${state}/control.sock`,
        grpc.credentials.createInsecure(),
      );
      await waitFor(
        "the control socket answers",
        () => unaryCall(client!, client!.ListPolicies, {}),
        {
          ignoreErrors: true,
        },
      );
      const res = await unaryCall(client, client.ApplyPolicy, {
        sandbox_id: "sb-main",
        version: 3,
        policy: {
          network_policies: {
            ns: {
              endpoints: [{
                host: srv.address,
                port: srv.port,
                allowed_ips: [`${srv.address}/32`],
              }],
            },
          },
        },
      });
      assert.equal(res.loaded_version, 3);
      const list = await unaryCall(client, client.ListPolicies, {});
      assert.deepEqual(list.policies.map((p) => [p.sandbox_id, p.version]), [["sb-main", 3]]);

      const c = await openGuest(`${state}/guest.sock`, "sb-main", "http");
      await writeAll(
        c,
        `CONNECT ${srv.address}:${srv.port} HTTP/1.1\r\n\r\nGET /hello HTTP/1.0\r\n\r\n`,
      );
      const head = await readHead(c);
      assert.equal(head.status, 200);
      const text = dec.decode(head.rest) + dec.decode(await readToEnd(c));
      assert.match(text, /hello from 10\.213\./);
      c.close();

      const d = await openGuest(`${state}/guest.sock`, "sb-main", "http");
      await writeAll(d, `CONNECT ${srv.address}:${srv.port + 1} HTTP/1.1\r\n\r\n`);
      const denied = await readHead(d);
      assert.equal(denied.status, 403);
      assert.equal(
        dec.decode(denied.rest) + dec.decode(await readToEnd(d)),
        deniedBody(srv.address, srv.port + 1),
      );
      d.close();

      // An invalid policy is refused naming the field; the old one stays.
      await assert.rejects(
        unaryCall(client, client.ApplyPolicy, {
          sandbox_id: "sb-main",
          version: 4,
          policy: { network_policies: { x: { endpoints: [{ host: "a.*.com", port: 1 }] } } },
        }),
        /INVALID_ARGUMENT.*policy\.network_policies\["x"\]\.endpoints\[0\]\.host/,
      );
      client.close();
      client = undefined;
      child.kill("SIGTERM");
      const status = await child.status;
      assert.equal(status.code, 0);
      await assert.rejects(Deno.stat(`${state}/guest.sock`), Deno.errors.NotFound);
      await assert.rejects(Deno.stat(`${state}/control.sock`), Deno.errors.NotFound);
      assert.match(await stderr, /listening/);
    } finally {
      client?.close();
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
      await child.status;
      await stderr.catch(() => {});
      await srv.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the egress process: --help, and a missing --state-dir is one line and exit 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osegh" });
  try {
    const run = async (args: string[]) => {
      const [exe, ...rest] = roleCommand("egress", egressGrants({ stateDir: dir }), args);
      const out = await new Deno.Command(exe, { args: rest, clearEnv: true, stdin: "null" })
        .output();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    };
    const help = await run(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^openshell-egress: /);
    assert.match(help.stdout, /--state-dir DIR .*\n.*\[required; env OPENSHELL_EGRESS_STATE_DIR\]/);
    const missing = await run([]);
    assert.equal(missing.code, 2);
    assert.equal(
      missing.stderr,
      "openshell-egress: --state-dir (or OPENSHELL_EGRESS_STATE_DIR) is required\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
