/**
 * `openshell gateway start|stop|status|logs` through a real install in a
 * temp dir: every command is the installed `openshell` (its own grants),
 * run from another directory, and the gateway is the installed one
 * (`--drivers none` here: no VM boots; the e2e starts VMs).
 */
import assert from "node:assert/strict";
import { installPlan } from "../../core/install.ts";
import { listProcesses } from "../../core/procs.ts";
import { waitFor } from "../../core/testing.ts";
import { makeTestInstall, runInstalled } from "../../testing/install.ts";
import type { StdStreams } from "../context.ts";
import { main } from "../main.ts";
import { gatewayArgs, isOurProcess, tailLines } from "./local_gateway.ts";

Deno.test("local gateway: its processes are the gateway, driver, qemu and socat of its dirs", () => {
  const dirs = ["/s/gateway", "/s/vm"];
  const yes = [
    "/x/deno run --allow-read=/s/gateway,/s/vm/compute-driver.sock /r/gateway/main.ts --port 1",
    "/x/deno run --allow-net=unix:/s/vm/compute-driver.sock /r/driver_vm/main.ts --state-dir /s/vm",
    "/usr/bin/qemu-system-x86_64 -name x -pidfile /s/vm/sandboxes/a/qemu.pid",
    "socat - UNIX-CONNECT:/s/vm/fwd/0.sock",
  ];
  for (const cmd of yes) assert.ok(isOurProcess(cmd, dirs), cmd);
  const no = [
    "tail -f /s/gateway/gateway.log", // a user's tail: not one of ours
    "/x/deno run /r/gateway/main.ts --state-dir /s/gateway2", // another gateway's dir
    "/usr/bin/qemu-system-x86_64 -pidfile /other/vm/sandboxes/a/qemu.pid",
  ];
  for (const cmd of no) assert.ok(!isOurProcess(cmd, dirs), cmd);
});

Deno.test("local gateway: the flags fix the install's paths and addresses", () => {
  const plan = installPlan({
    root: "/o",
    repo: "/r",
    deno: "/d",
    copyDeno: false,
    stateDir: "/s",
    vmCacheDir: "/c",
    gatewayListen: { host: "127.0.0.1", port: 7000 },
    supervisorListen: { host: "127.0.0.1", port: 7001 },
    supervisorGateway: { host: "127.0.0.1", port: 7001 },
    sshSocketPath: "/run/openshell/ssh.sock",
    supervisorFilesDir: "/etc/openshell",
  });
  assert.deepEqual(
    gatewayArgs(plan.manifest, { drivers: "vm", runtimeDir: "/c/runtime-1", extra: ["--x"] }),
    [
      "--state-dir",
      "/s/gateway",
      "--bind",
      "127.0.0.1",
      "--port",
      "7000",
      "--supervisor-bind",
      "127.0.0.1",
      "--supervisor-port",
      "7001",
      "--drivers",
      "vm",
      "--driver-dir",
      "/o/bin",
      "--vm-driver-state-dir",
      "/s/vm",
      "--vm-runtime-dir",
      "/c/runtime-1",
      "--log-file",
      "/s/gateway/gateway.log",
      "--x",
    ],
  );
});

Deno.test("local gateway: tailLines reads the last lines of a large file from its end", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/log`;
    const lines = Array.from({ length: 20_000 }, (_, i) => `line ${i} ${"x".repeat(40)}`);
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    assert.deepEqual(await tailLines(path, 3), lines.slice(-3));
    assert.deepEqual(await tailLines(path, 5000), lines.slice(-5000));
    await Deno.writeTextFile(path, "a\nb");
    assert.deepEqual(await tailLines(path, 5), ["a", "b"]);
    assert.deepEqual(await tailLines(`${dir}/missing`, 5), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("local gateway: a CLI that is not installed says how to get one", async () => {
  let stderr = "";
  const streams: StdStreams = {
    stdin: { read: () => Promise.resolve(null), isTerminal: () => false },
    stdout: { write: (p) => Promise.resolve(p.length), isTerminal: () => false },
    stderr: {
      writeSync: (p) => {
        stderr += new TextDecoder().decode(p);
        return p.length;
      },
      isTerminal: () => false,
    },
  };
  const code = await main(["gateway", "start"], {
    env: (n) => ({ HOME: "/nonexistent" } as Record<string, string>)[n],
    streams,
    signals: false,
  });
  assert.equal(code, 1);
  assert.equal(
    stderr,
    "error: 'openshell gateway start' runs the installed gateway: install it from a checkout " +
      "with 'deno task install' and use the openshell it puts on the PATH\n",
  );
});

Deno.test("local gateway: start, refuse a second start, status, logs, stop; kill -9 leaves a stale pid file that start replaces", async () => {
  const inst = await makeTestInstall();
  const m = inst.plan.manifest;
  const sh = (cmd: string) => runInstalled(inst, cmd, { timeoutMs: 90_000 });
  const gatewayPids = async () =>
    (await listProcesses()).filter((p) =>
      p.args.includes("gateway/main.ts") && p.args.includes(m.gateway.stateDir)
    ).map((p) => p.pid);
  try {
    const start = await sh("openshell gateway start --drivers none");
    assert.equal(start.code, 0, start.stderr);
    const pid = Number(await Deno.readTextFile(m.gateway.pidFile));
    assert.match(
      start.stdout,
      new RegExp(
        `^Gateway local is running \\(pid ${pid}\\): ${m.gateway.url}, no compute driver\n`,
      ),
    );
    assert.ok(start.stdout.includes(`logs:  ${m.gateway.logFile}`));
    assert.deepEqual(await gatewayPids(), [pid]);
    // Registered as local, active, with its client bundle: plain `status` reaches it.
    const status = await sh("openshell status && openshell gateway list");
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /Gateway: {2}local\n/);
    assert.match(status.stdout, /Status: {3}Connected/);
    assert.match(status.stdout, /\* +local +https:\/\/127\.0\.0\.1:\d+ +mtls/);

    const again = await sh("openshell gateway start --drivers none");
    assert.equal(again.code, 1);
    assert.equal(
      again.stderr,
      `error: a local gateway is already running (pid ${pid}, ${m.gateway.url}); ` +
        "stop it with: openshell gateway stop\n",
    );
    const st = await sh("openshell gateway status");
    assert.equal(st.code, 0, st.stderr);
    assert.ok(
      st.stdout.startsWith(`Local gateway: running (pid ${pid}), ${m.gateway.url}, Connected`),
    );
    const logs = await sh("openshell gateway logs -n 50");
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /Server listening on 127\.0\.0\.1:\d+/);

    const stop = await sh("openshell gateway stop");
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(stop.stdout, `Stopped gateway local (pid ${pid}); no driver or VM left.\n`);
    assert.deepEqual(await gatewayPids(), []);
    await assert.rejects(() => Deno.stat(m.gateway.pidFile));
    const down = await sh("openshell gateway status");
    assert.equal(down.code, 1);
    assert.match(
      down.stdout,
      /^Local gateway: not running \(start it with: openshell gateway start\)/,
    );
    const stopAgain = await sh("openshell gateway stop");
    assert.equal(stopAgain.stdout, "No local gateway was running.\n");

    // kill -9: the pid file is left behind, stale; the next start replaces it.
    assert.equal((await sh("openshell gateway start --drivers none")).code, 0);
    const first = Number(await Deno.readTextFile(m.gateway.pidFile));
    Deno.kill(first, "SIGKILL");
    await waitFor("the gateway gone", async () => (await gatewayPids()).length === 0);
    assert.equal((await sh("openshell gateway status")).code, 1);
    const restart = await sh("openshell gateway start --drivers none");
    assert.equal(restart.code, 0, restart.stderr);
    const second = Number(await Deno.readTextFile(m.gateway.pidFile));
    assert.notEqual(second, first);
    assert.equal((await sh("openshell gateway stop")).code, 0);
    assert.deepEqual(await gatewayPids(), []);
  } finally {
    for (const pid of await gatewayPids()) Deno.kill(pid, "SIGKILL");
    await inst.remove();
  }
});
