import assert from "node:assert/strict";
import { listProcesses, parsePs } from "./procs.ts";

Deno.test("procs: ps lines parsed; a command line keeps its spaces", () => {
  const text = "    1     0 Ss   /sbin/init splash\n  4242     1 Sl+  deno run  -A x.ts\n" +
    "  77   4242 Z    \nnot a line\n";
  assert.deepEqual(parsePs(text), [
    { pid: 1, ppid: 0, state: "Ss", args: "/sbin/init splash" },
    { pid: 4242, ppid: 1, state: "Sl+", args: "deno run  -A x.ts" },
    { pid: 77, ppid: 4242, state: "Z", args: "" },
  ]);
});

Deno.test("procs: this process and a child are listed with their command lines", async () => {
  const child = new Deno.Command("/usr/bin/sleep", { args: ["30.5"], stdin: "null" }).spawn();
  try {
    const all = await listProcesses();
    const me = all.find((p) => p.pid === Deno.pid);
    assert.ok(me && me.args.includes("deno"), JSON.stringify(me));
    const kid = all.find((p) => p.pid === child.pid);
    assert.deepEqual(kid && { ppid: kid.ppid, args: kid.args }, {
      ppid: Deno.pid,
      args: "/usr/bin/sleep 30.5",
    });
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});
