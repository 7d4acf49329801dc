import assert from "node:assert/strict";
import { alive, waitFor } from "../core/testing.ts";
import { killAndRemove, SessionCgroups } from "./session_cgroup.ts";
import { writableCgroup2Root } from "../testing/supervisor.ts";

const root = await writableCgroup2Root();
const noCgroup = root === undefined;

/**
 * A shell that waits for a line on stdin, then starts `sleep`s that leave
 * its process group and session (`setsid`) and are orphaned to PID 1 (the
 * subshell exits), prints their pids and waits.
 */
function spawnTree(): Deno.ChildProcess {
  return new Deno.Command("/bin/sh", {
    args: [
      "-c",
      "read go; (setsid sleep 301 & echo $!; nohup sleep 302 >/dev/null 2>&1 & echo $!); " +
      "echo done; exec sleep 303",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
}

async function startTree(cgroups: SessionCgroups) {
  const child = spawnTree();
  const group = await cgroups.attach(child.pid);
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode("go\n"));
  await w.close();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("done\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const orphans = out.trim().split("\n").filter((l) => /^\d+$/.test(l)).map(Number);
  assert.equal(orphans.length, 2, out);
  // The pipe keeps child.stdout locked: cancelling the reader ends the pipe and the stream.
  const closeOutput = () => reader.cancel().catch(() => {});
  return { child, group, orphans, closeOutput };
}

async function cgroupPids(path: string): Promise<number[]> {
  const text = await Deno.readTextFile(`${path}/cgroup.procs`);
  return text.trim().split("\n").filter(Boolean).map(Number).sort();
}

Deno.test("session cgroups: a directory outside cgroup2 or without a parent is refused", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "oscg" });
  try {
    const plain = await SessionCgroups.open(`${tmp}/sessions`);
    assert.equal(plain.ok, false);
    assert.match((plain as { reason: string }).reason, /is not in a cgroup v2 hierarchy/);
    assert.deepEqual([...Deno.readDirSync(tmp)], [], "the directory it made is gone again");
    const orphan = await SessionCgroups.open(`${tmp}/no/such`);
    assert.match((orphan as { reason: string }).reason, /its parent is missing/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test({
  name: "session cgroups: ending a session kills its setsid'd and orphaned processes",
  ignore: noCgroup,
  async fn() {
    const dir = `${root}/openshell-test-unit-${crypto.randomUUID().slice(0, 8)}`;
    try {
      const opened = await SessionCgroups.open(dir);
      assert.ok(opened.ok, JSON.stringify(opened));
      const cgroups = opened.cgroups;
      const { child, group, orphans, closeOutput } = await startTree(cgroups);
      // Every descendant landed in the group, though none is a child of the shell.
      const members = await cgroupPids(group.path);
      for (const pid of [child.pid, ...orphans]) assert.ok(members.includes(pid), `${pid}`);
      assert.equal(cgroups.active, 1);
      for (const pid of orphans) assert.ok(await alive(pid));

      await group.end();
      for (const pid of orphans) assert.equal(await alive(pid), false, `${pid} survived`);
      assert.equal((await child.status).signal, "SIGKILL");
      await closeOutput();
      assert.equal(cgroups.active, 0);
      await assert.rejects(Deno.stat(group.path), Deno.errors.NotFound);
      await group.end(); // idempotent
    } finally {
      await killAndRemove(dir);
    }
  },
});

Deno.test({
  name: "session cgroups: killAll ends every session; a successor sweeps a killed one's leftovers",
  ignore: noCgroup,
  async fn() {
    const dir = `${root}/openshell-test-unit-${crypto.randomUUID().slice(0, 8)}`;
    try {
      const first = await SessionCgroups.open(dir);
      assert.ok(first.ok);
      const a = await startTree(first.cgroups);
      const b = await startTree(first.cgroups);
      await first.cgroups.killAll();
      for (const pid of [...a.orphans, ...b.orphans]) assert.equal(await alive(pid), false);
      for (const t of [a, b]) {
        await t.child.status;
        await t.closeOutput();
      }

      // A supervisor SIGKILLed with a live session: its successor's open() ends it.
      const c = await startTree(first.cgroups);
      const second = await SessionCgroups.open(dir);
      assert.ok(second.ok);
      for (const pid of c.orphans) assert.equal(await alive(pid), false);
      await c.child.status;
      await c.closeOutput();
      assert.deepEqual(
        [...Deno.readDirSync(dir)].filter((e) => e.isDirectory),
        [],
        "no stale session cgroup left",
      );
    } finally {
      await killAndRemove(dir);
    }
  },
});

Deno.test({
  name: "session cgroups: a pid that already exited is accepted (the group stays empty)",
  ignore: noCgroup,
  async fn() {
    const dir = `${root}/openshell-test-unit-${crypto.randomUUID().slice(0, 8)}`;
    try {
      const opened = await SessionCgroups.open(dir);
      assert.ok(opened.ok);
      const gone = new Deno.Command("/bin/true").spawn();
      await gone.status;
      await waitFor("the exited pid to be reaped", async () => !(await alive(gone.pid)));
      const group = await opened.cgroups.attach(gone.pid);
      assert.deepEqual(await cgroupPids(group.path), []);
      await group.end();
    } finally {
      await killAndRemove(dir);
    }
  },
});
