import assert from "node:assert/strict";
import { Logger } from "../core/log.ts";
import { passChildLine, spawnChild, waitUntilAnswering } from "./child_process.ts";

function collect(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    log: new Logger({ target: "gateway", sink: (l) => lines.push(l), now: () => 0 }),
    lines,
  };
}

Deno.test("passChildLine: the child's own log lines keep their level and target", () => {
  const { log, lines } = collect();
  passChildLine(log, "2020-05-05T05:05:05.000Z WARN  openshell-egress: denied host=x", "egress");
  passChildLine(log, "plain text", "egress");
  passChildLine(log, "  ", "egress");
  assert.deepEqual(lines, [
    "1970-01-01T00:00:00.000Z WARN  openshell-egress: denied host=x",
    "1970-01-01T00:00:00.000Z INFO  gateway: plain text component=egress",
  ]);
});

Deno.test("spawnChild: output reaches the log; stop escalates to SIGKILL when SIGTERM is ignored", async () => {
  const { log, lines } = collect();
  const child = spawnChild({
    binary: "/bin/sh",
    args: ["-c", "trap '' TERM; echo started; while :; do sleep 1; done"],
    what: "test child",
    component: "test",
    log,
  });
  // The probe answers once the child printed its first line.
  await waitUntilAnswering(child, () => {
    if (!lines.some((l) => l.includes("started"))) return Promise.reject(new Error("not yet"));
    return Promise.resolve(true);
  }, { what: "test child", probeName: "output", timeoutMs: 10_000 });
  const code = await child.stop(200);
  assert.equal(child.gone, true);
  assert.notEqual(code, 0);
  assert.ok(lines.some((l) => l.includes("started component=test")), lines.join("\n"));
});

Deno.test("waitUntilAnswering: a child that exits first is an error with its status", async () => {
  const { log } = collect();
  const child = spawnChild({
    binary: "/bin/sh",
    args: ["-c", "exit 3"],
    what: "test child",
    component: "test",
    log,
  });
  await child.exited;
  await assert.rejects(
    waitUntilAnswering(child, () => Promise.reject(new Error("no")), {
      what: "test child",
      probeName: "Ping",
    }),
    /test child exited with status 3 before it was ready/,
  );
});

Deno.test("waitUntilAnswering: cancelled through the signal kills the child", async () => {
  const { log } = collect();
  const child = spawnChild({
    binary: "/bin/sh",
    args: ["-c", "while :; do sleep 1; done"],
    what: "test child",
    component: "test",
    log,
  });
  const abort = new AbortController();
  abort.abort();
  await assert.rejects(
    waitUntilAnswering(child, () => Promise.reject(new Error("no")), {
      what: "test child",
      probeName: "Ping",
      signal: abort.signal,
    }),
    /start cancelled/,
  );
  assert.equal(child.gone, true);
});

Deno.test("spawnChild: a missing binary is one clear error", () => {
  const { log } = collect();
  assert.throws(
    () =>
      spawnChild({
        binary: "/nonexistent/openshell-egress",
        args: [],
        what: "egress proxy",
        component: "egress",
        log,
      }),
    /cannot start egress proxy \/nonexistent\/openshell-egress/,
  );
});
