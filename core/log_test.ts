import assert from "node:assert/strict";
import { errorMessage, Logger, MAX_FIELD_CHARS, parseLogLevel, parseLogLine } from "./log.ts";

Deno.test("text lines carry level, target, message and fields; levels filter", () => {
  const lines: string[] = [];
  const log = new Logger({ level: "info", target: "gw", sink: (l) => lines.push(l), now: () => 0 });
  log.debug("hidden");
  log.info("hello", { port: 80, name: "a b" });
  assert.deepEqual(lines, ['1970-01-01T00:00:00.000Z INFO  gw: hello port=80 name="a b"']);
});

Deno.test("json lines are parseable and with() adds fields", () => {
  const lines: string[] = [];
  const log = new Logger({ format: "json", sink: (l) => lines.push(l), now: () => 0 }).with({
    sandbox: "s1",
  });
  log.warn("careful", { n: 1, skipped: undefined });
  const obj = JSON.parse(lines[0]);
  assert.equal(obj.level, "warn");
  assert.equal(obj.message, "careful");
  assert.equal(obj.sandbox, "s1");
  assert.equal(obj.n, 1);
  assert.equal("skipped" in obj, false);
});

Deno.test("parseLogLevel accepts names in any case and rejects others", () => {
  assert.equal(parseLogLevel("DEBUG"), "debug");
  assert.throws(() => parseLogLevel("loud"), /invalid log level "loud"/);
});

Deno.test("errorMessage renders Errors, grpc status objects and other objects readably", () => {
  assert.equal(errorMessage(new Error("boom")), "boom");
  // what grpc-js emits on a server stream: a plain {code, details} object
  assert.equal(
    errorMessage({ code: 14, details: "supervisor heartbeats missed" }),
    "UNAVAILABLE: supervisor heartbeats missed",
  );
  assert.equal(errorMessage({ code: "ECONNRESET", message: "reset" }), "ECONNRESET: reset");
  assert.equal(errorMessage({ message: "only a message" }), "only a message");
  assert.equal(errorMessage({ code: 1 }), "CANCELLED");
  assert.equal(errorMessage({ weird: [1, 2] }), '{"weird":[1,2]}');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(errorMessage(cyclic), "[Object]");
  assert.equal(errorMessage("text"), "text");
  assert.equal(errorMessage(undefined), "undefined");
  for (const v of [{}, { code: 2, details: "x" }, cyclic]) {
    assert.ok(!errorMessage(v).includes("[object Object]"), JSON.stringify(errorMessage(v)));
  }
});

Deno.test("field values are bounded: a 1 MiB value does not make a 1 MiB log line", () => {
  const lines: string[] = [];
  const text = new Logger({ sink: (l) => lines.push(l), now: () => 0 });
  const json = new Logger({ format: "json", sink: (l) => lines.push(l), now: () => 0 });
  const huge = "x".repeat(1024 * 1024);
  text.warn("bad id", { id: huge });
  json.warn("bad id", { id: huge });
  for (const l of lines) assert.ok(l.length < MAX_FIELD_CHARS + 200, `line of ${l.length}`);
  assert.match(lines[0], /id="x+…\(1048576 chars\)"$/);
  assert.match(JSON.parse(lines[1]).id, /^x{2048}…\(1048576 chars\)$/);
});

Deno.test("parseLogLine reads back what Logger wrote, text and JSON; withTarget renames", () => {
  const lines: string[] = [];
  const sink = (l: string) => lines.push(l);
  new Logger({ target: "openshell-driver-vm", sink, now: () => 1000 }).warn("VM exited", {
    status: 1,
  });
  new Logger({ sink, now: () => 2000 }).info("no target here");
  new Logger({ format: "json", target: "sup", sink, now: () => 3000 }).error("bad", { n: 2 });
  assert.deepEqual(lines.map(parseLogLine), [
    {
      timeMs: 1000,
      level: "warn",
      target: "openshell-driver-vm",
      message: "VM exited status=1",
      fields: {},
    },
    { timeMs: 2000, level: "info", target: "", message: "no target here", fields: {} },
    { timeMs: 3000, level: "error", target: "sup", message: "bad", fields: { n: "2" } },
  ]);
  const renamed: string[] = [];
  new Logger({ target: "gateway", sink: (l) => renamed.push(l), now: () => 0 }).with({ a: 1 })
    .withTarget("driver").info("hi");
  assert.deepEqual(renamed, ["1970-01-01T00:00:00.000Z INFO  driver: hi a=1"]);
  for (
    const other of [
      "plain text",
      "[    0.000000] Linux version 6.1",
      '{"class_uid":4001,"message":"x"}',
      "{not json",
      "2026-01-01T00:00:00Z LOUD x: y",
    ]
  ) {
    assert.equal(parseLogLine(other), undefined, other);
  }
});
