/**
 * The GOAWAY hazard (denoland/deno#36788): grpc-js clients that stream
 * through a relay and then close their channel gracefully (HTTP/2 GOAWAY)
 * used to abort the gateway inside nghttp2. The clients are supervisors, on
 * the supervisor plane, where relays are served. Fifty such clients in a row must
 * leave the gateway alive and healthy.
 *
 * Without the GOAWAY filter this fails: run it with
 * `OPENSHELL_STRESS_UNSAFE=1` to start the gateway with the filter off
 * (it then dies within a few rounds; see docs/gateway.md for figures).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { apiClient, byoSupervisor, sendConnect, spawnGateway } from "../testing/gateway.ts";

const ROUNDS = Number(Deno.env.get("OPENSHELL_STRESS_ROUNDS") ?? 50);
const MIB_PER_ROUND = Number(Deno.env.get("OPENSHELL_STRESS_MIB") ?? 32);
const UNSAFE = Deno.env.get("OPENSHELL_STRESS_UNSAFE") === "1";
const HERE = new URL(".", import.meta.url).pathname.replace(/\/$/, "");

Deno.test(`${ROUNDS} clients stream ${MIB_PER_ROUND} MiB through a relay, then close gracefully`, async () => {
  const gw = await spawnGateway({ env: UNSAFE ? { OPENSHELL_UNSAFE_KEEP_GOAWAY: "1" } : {} });
  const api = apiClient(gw.port);
  let died = false;
  gw.exited.then(() => died = true);
  try {
    const byo = await byoSupervisor(gw, "stress");
    const sb = byo.sandbox;
    const block = Buffer.alloc(256 * 1024, 0x5a);
    const total = MIB_PER_ROUND * 1024 * 1024;
    for (let round = 1; round <= ROUNDS; round++) {
      // A fresh client process: a new HTTP/2 connection that ends with GOAWAY.
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${HERE}/testdata/goaway_client.ts`,
          String(gw.supervisorPort),
          sb.id,
          byo.hostKey.fingerprint,
        ],
        env: { OPENSHELL_SUPERVISOR_TOKEN: byo.token },
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await reader.read();
      assert.equal(first.value?.trim(), "accepted", `round ${round}`);
      const { token } = await api.call(api.raw.CreateSshSession, {
        sandbox_id: sb.id,
      });
      const t = await sendConnect(gw.port, { "x-sandbox-id": sb.id, "x-sandbox-token": token });
      assert.equal(t.status, 200, `round ${round}: ${t.head}`);
      let received = 0;
      t.socket.on("data", (c: Buffer) => received += c.length);
      const done = new Promise((r) => t.socket.once("end", r));
      t.socket.resume();
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += block.length;
          if (!t.socket.write(block)) return void t.socket.once("drain", pump);
        }
        t.socket.end();
      };
      pump();
      await done;
      assert.equal(received, total, `round ${round}`);
      while (!(await reader.read()).done) { /* drain */ }
      assert.equal((await child.status).code, 0, `client of round ${round}`);
      assert.equal(died, false, `gateway died in round ${round}:\n${gw.stderr().slice(-2000)}`);
    }
    const health = await api.call(api.raw.Health, {});
    assert.equal(health.status, "SERVICE_STATUS_HEALTHY");
    assert.equal(died, false);
  } finally {
    api.close();
    const code = await gw.stop();
    if (!died) assert.equal(code, 0, gw.stderr().slice(-2000));
  }
});
