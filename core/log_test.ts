import assert from "node:assert/strict";
import { Logger, parseLogLevel } from "./log.ts";

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
