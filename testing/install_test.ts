import assert from "node:assert/strict";
import { applyPlan, InstallError, uninstall } from "../core/install.ts";
import { listProcesses } from "../core/procs.ts";
import { waitFor } from "../core/testing.ts";
import { makeTestInstall, runInstalled } from "./install.ts";

// An install in a temp dir runs every role's installed command: these tests cross roles, so they
// live beside the fixture (core/install_test.ts has the plan's unit tests).

Deno.test("install into a temp root: files in place, own files replaced, others refused, uninstall", async () => {
  const inst = await makeTestInstall({ copyDeno: true });
  try {
    const plan = inst.plan;
    for (const f of plan.files) {
      const st = await Deno.stat(f.path);
      assert.equal(st.mode! & 0o777, f.mode, f.path);
    }
    // The copy of deno is a hard link of the running one (same file system here).
    const [a, b] = await Promise.all([Deno.stat(Deno.execPath()), Deno.stat(plan.manifest.deno)]);
    assert.equal(a.size, b.size);
    // Installing again replaces its own files.
    await applyPlan(plan, { cache: false });
    // A file it did not write is refused, or replaced with force.
    await Deno.writeTextFile(plan.manifest.bin.cli, "#!/bin/sh\necho someone else's\n");
    await assert.rejects(() => applyPlan(plan, { cache: false }), (e: unknown) => {
      assert.ok(e instanceof InstallError);
      assert.match(e.message, /openshell exists and was not written by deno task install/);
      return true;
    });
    await applyPlan(plan, { cache: false, force: true });
    // A stranger's file in bin/ stays.
    const other = `${plan.options.root}/bin/other-tool`;
    await Deno.writeTextFile(other, "#!/bin/sh\n");
    const removed = await uninstall(plan.options.root);
    assert.deepEqual(removed.sort(), [...plan.manifest.files].sort());
    for (const p of plan.manifest.files) await assert.rejects(() => Deno.stat(p));
    await Deno.stat(other);
    await assert.rejects(() => uninstall(plan.options.root), /no install manifest/);
  } finally {
    await inst.remove();
  }
});

Deno.test("installed commands run from any directory, with no deno on the PATH", async () => {
  const inst = await makeTestInstall();
  try {
    const r = await runInstalled(
      inst,
      "command -v deno || echo no-deno; openshell --version; openshell-driver-vm --version; " +
        "openshell-sandbox --version; openshell-gateway --help | head -1 | cut -d: -f1",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      "no-deno\nopenshell 0.1.0\nopenshell-driver-vm 0.1.0\nopenshell-sandbox 0.1.0\n" +
        "openshell-gateway\n",
    );
  } finally {
    await inst.remove();
  }
});

Deno.test("no orphans: the installed driver exits when its parent dies; a forking wrapper would keep it", async () => {
  const inst = await makeTestInstall();
  const m = inst.plan.manifest;
  const sock = `${m.vm.stateDir}/compute-driver.sock`;
  const endpoint = `http://127.0.0.1:${m.gateway.supervisorListen.port}`;
  const forking = `${inst.dir}/forking-driver`;
  // The same wrapper without `exec`: the shell stays, between the parent and deno.
  const text = await Deno.readTextFile(m.bin["driver-vm"]);
  await Deno.writeTextFile(forking, text.replace(/\nexec /, "\n"), { mode: 0o755 });
  const alive = async (pid: number) => (await listProcesses()).some((p) => p.pid === pid);
  /** Starts `wrapper` under a parent shell; resolves with the parent and the driver's pid. */
  const start = async (wrapper: string) => {
    await Deno.remove(sock).catch(() => {});
    const parent = new Deno.Command("/bin/sh", {
      args: ["-c", `"$0" --openshell-endpoint ${endpoint} --vm-accel tcg & echo $!; wait`, wrapper],
      env: inst.env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const started = Number((await reader.read()).value?.trim());
    await reader.cancel();
    await waitFor("the driver's socket", () => Deno.stat(sock).then(() => true, () => false), {
      timeoutMs: 20_000,
    });
    const driver = (await listProcesses()).find((p) =>
      p.args.includes("driver_vm/main.ts") && p.args.includes(m.vm.stateDir) &&
      (p.pid === started || p.ppid === started)
    );
    assert.ok(driver, "no driver process");
    return { parent, started, driver: driver.pid };
  };
  const leftovers: number[] = [];
  try {
    const exec = await start(m.bin["driver-vm"]);
    assert.equal(exec.driver, exec.started, "the installed wrapper execs: same pid");
    leftovers.push(exec.driver);
    exec.parent.kill("SIGKILL");
    await exec.parent.status;
    await waitFor("the installed driver to exit", async () => !(await alive(exec.driver)), {
      timeoutMs: 10_000,
      intervalMs: 50,
    });

    const fork = await start(forking);
    assert.notEqual(fork.driver, fork.started, "the forking wrapper stays in between");
    leftovers.push(fork.driver, fork.started);
    fork.parent.kill("SIGKILL");
    await fork.parent.status;
    // The driver watches its own parent only. Behind a forking wrapper that is the wrapper's
    // shell, which outlives the killed parent (it was reparented), so the driver sees no
    // change and keeps running.
    const procs = await listProcesses();
    const wrapper = procs.find((p) => p.pid === fork.started);
    assert.ok(wrapper, "the wrapper's shell outlives the killed parent");
    assert.notEqual(wrapper.ppid, fork.parent.pid, "the wrapper's shell was reparented");
    assert.equal(
      procs.find((p) => p.pid === fork.driver)?.ppid,
      fork.started,
      "the driver behind a forking wrapper keeps the same parent, so it keeps running",
    );
  } finally {
    for (const pid of leftovers) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await inst.remove();
  }
});
