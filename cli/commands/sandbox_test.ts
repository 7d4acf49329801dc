import assert from "node:assert/strict";
import type { SandboxLogLine } from "../../core/protocol.ts";
import { createStyle } from "../output.ts";
import { formatLogLine, jsonLogLine } from "./sandbox.ts";

function line(over: Partial<SandboxLogLine> = {}): SandboxLogLine {
  return {
    sandbox_id: "sb",
    timestamp_ms: 0,
    level: "INFO",
    target: "console",
    message: "hello",
    source: "console",
    fields: {},
    ...over,
  };
}

/** Every C0/C1 control but tab and newline, plus DEL. */
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

Deno.test("formatLogLine: no control character but tab and newline reaches the terminal", () => {
  const hostile = line({
    level: "INFO\x1b[8m",
    target: "con\x9b2Jsole",
    source: "console\x07",
    message: "a\x1b]52;c;cm0gLXJmIH4K\x07b\x1bP+q544e\x1b\\c\x90dcs\x9cd\x1b[31me\x85f\rg\x7fh\ti",
    fields: { "k\x1b[1m": "v\x9d0;title\x9c!" },
  });
  const out = formatLogLine(hostile, createStyle(false));
  assert.doesNotMatch(out, CONTROLS, JSON.stringify(out));
  assert.equal(out, "- INFO  [console] console: abcdefgh\ti k=v!\n");
  // colours the CLI adds itself are still there when colour is on
  assert.ok(formatLogLine(line({ level: "ERROR" }), createStyle(true)).includes("\x1b[31mERROR"));
});

Deno.test("jsonLogLine: DEL and C1 escaped too; the line parses back unchanged", () => {
  const l = line({ message: "a\x1b]52;c;x\x07b\x9bc\x7fd\u0085e" });
  const out = jsonLogLine(l);
  assert.doesNotMatch(out.slice(0, -1), CONTROLS);
  assert.ok(out.includes("\\u009b") && out.includes("\\u007f") && out.includes("\\u001b"));
  assert.deepEqual(JSON.parse(out), l);
});
