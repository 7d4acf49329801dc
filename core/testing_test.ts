import assert from "node:assert/strict";
import { alive, findProcesses, freePort, probeGrants, waitFor } from "./testing.ts";

Deno.test("waitFor returns the first value that is not undefined or false", async () => {
  let n = 0;
  assert.equal(
    await waitFor("third try", () => ++n === 3 ? "done" : undefined, { intervalMs: 1 }),
    "done",
  );
  let m = 0;
  assert.equal(await waitFor("a true", () => ++m >= 2, { intervalMs: 1 }), true);
  assert.equal(await waitFor("zero is a value", () => 0), 0);
});

Deno.test("waitFor gives up at its deadline; errors stop it unless ignored", async () => {
  await assert.rejects(
    waitFor("never", () => false, { timeoutMs: 20, intervalMs: 5 }),
    /timed out after 20 ms waiting for never/,
  );
  await assert.rejects(
    waitFor("boom", () => {
      throw new Error("boom");
    }),
    /boom/,
  );
  let n = 0;
  const v = await waitFor("flaky", () => {
    if (++n < 3) throw new Error("not yet");
    return n;
  }, { ignoreErrors: true, intervalMs: 1 });
  assert.equal(v, 3);
});

Deno.test("process helpers see a child come and go", async () => {
  const marker = `osmarker-${crypto.randomUUID()}`;
  // `read` is a shell builtin: no forked child (whose argv is briefly the shell's) to find too.
  const child = new Deno.Command("sh", { args: ["-c", `read -r x # ${marker}`], stdin: "piped" })
    .spawn();
  try {
    assert.equal(await alive(child.pid), true);
    const found = await findProcesses(marker);
    assert.deepEqual(found.map((p) => p.pid), [child.pid]);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await child.stdin.close().catch(() => {});
  }
  assert.equal(await alive(child.pid), false);
  const port = freePort();
  assert.ok(port > 0 && port < 65536);
});

Deno.test("probeGrants: runs the probe with exactly the given flags; names must differ", async () => {
  const none = { net: [], read: [], write: [], run: [], env: [], ignoreEnv: true } as const;
  const results = await probeGrants(none, [
    { name: "spawn", op: "spawn", cmd: "/bin/true" },
    { name: "read", op: "read", path: "/etc/hostname" },
    { name: "env", op: "env", var: "HOME" },
  ], { HOME: "/root" });
  assert.deepEqual(results, { spawn: "NotCapable", read: "NotCapable", env: "unset" });
  const some = { ...none, run: ["/bin/true"], env: ["HOME"] };
  assert.deepEqual(
    await probeGrants(some, [
      { name: "spawn", op: "spawn", cmd: "/bin/true" },
      { name: "env", op: "env", var: "HOME" },
    ], { HOME: "/root" }),
    { spawn: "ok", env: "ok" },
  );
  await assert.rejects(
    probeGrants(none, [{ name: "x", op: "sys" }, { name: "x", op: "sys" }]),
    /names must differ/,
  );
});
