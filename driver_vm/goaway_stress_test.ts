/**
 * The GOAWAY hazard (denoland/deno#36788) on the VM driver's socket: client
 * processes that keep a watch stream open, send MiB-sized calls and then
 * close their channel gracefully (HTTP/2 GOAWAY) must leave the driver
 * alive. The driver once died in `deno task test` with
 * `nghttp2_session.c:2402: find_stream_on_goaway_func: Assertion` (exit
 * 134) when its grpc-js client closed.
 *
 * `OPENSHELL_STRESS_UNSAFE=1` starts the driver with the GOAWAY filter off
 * (`OPENSHELL_UNSAFE_KEEP_GOAWAY=1`) to reproduce the failure; figures in
 * docs/vm.md.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { driverGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { ComputeDriverClient } from "../core/protocol.ts";
import { waitFor } from "../core/testing.ts";
import { fakeRuntime } from "./testing.ts";

const ROUNDS = Number(Deno.env.get("OPENSHELL_STRESS_ROUNDS") ?? 8);
const MIB_PER_ROUND = Number(Deno.env.get("OPENSHELL_STRESS_MIB") ?? 32);
const UNSAFE = Deno.env.get("OPENSHELL_STRESS_UNSAFE") === "1";
const HERE = new URL(".", import.meta.url).pathname.replace(/\/$/, "");

Deno.test(`driver: ${ROUNDS} clients send ${MIB_PER_ROUND} MiB each, then close gracefully`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmgoaway" });
  const state = `${dir}/state`;
  const rt = `${dir}/rt`;
  await fakeRuntime(rt);
  await Deno.mkdir(state);
  const [exe, ...args] = roleCommand(
    "driver-vm",
    driverGrants({
      stateDir: state,
      gateway: { host: "127.0.0.1", port: 9 },
      runtimeDir: rt,
      qemu: "/bin/false",
      setpriv: "/usr/bin/setpriv",
    }),
    [
      "--state-dir",
      state,
      "--openshell-endpoint",
      "http://127.0.0.1:9",
      "--runtime-dir",
      rt,
      "--qemu",
      "/bin/false",
      "--vm-accel",
      "tcg",
    ],
  );
  const driver = new Deno.Command(exe, {
    args,
    env: UNSAFE ? { OPENSHELL_UNSAFE_KEEP_GOAWAY: "1" } : {},
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const pump = (async () => {
    const dec = new TextDecoder();
    for await (const c of driver.stderr) stderr += dec.decode(c, { stream: true });
  })();
  let died = false;
  const status = driver.status.then((s) => {
    died = true;
    return s;
  });
  const socket = `${state}/compute-driver.sock`;
  await waitFor("the driver's socket file", async () => {
    if (died) throw new Error(`the driver exited:\n${stderr}`);
    return (await Deno.stat(socket).catch(() => undefined))?.isSocket;
  }, { timeoutMs: 20_000 });
  const probe = new ComputeDriverClient(`unix:${socket}`, grpc.credentials.createInsecure());
  const caps = () =>
    new Promise<void>((res, rej) =>
      (probe as unknown as { GetCapabilities(r: unknown, cb: (e: unknown) => void): void })
        .GetCapabilities({}, (e) => e ? rej(e) : res())
    );
  try {
    await waitFor("the driver's socket", () => {
      if (died) throw new Error(`the driver exited:\n${stderr}`);
      return caps().then(() => true, () => undefined);
    }, { timeoutMs: 20_000 });
    for (let round = 1; round <= ROUNDS; round++) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${HERE}/testdata/goaway_client.ts`, socket, String(MIB_PER_ROUND)],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      assert.equal(new TextDecoder().decode(out.stdout).trim(), "done", `client of round ${round}`);
      assert.equal(out.code, 0, `client of round ${round}`);
      // The driver handles the client's close after the client is gone: ask it once more.
      await caps().catch(() => {});
      assert.equal(died, false, `driver died in round ${round}:\n${stderr.slice(-2000)}`);
    }
    await caps();
    assert.equal(died, false);
  } finally {
    probe.close();
    try {
      driver.kill("SIGTERM");
    } catch { /* gone */ }
    const s = await status;
    await pump;
    await Deno.remove(dir, { recursive: true });
    if (!UNSAFE) assert.equal(s.code, 0, stderr.slice(-2000));
  }
});
