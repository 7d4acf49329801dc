import assert from "node:assert/strict";
import type { SandboxLogLine } from "../../core/protocol.ts";
import { createStyle } from "../output.ts";
import { formatLogLine, jsonLogLine, notFoundMessage } from "./sandbox.ts";

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
  assert.equal(out, "- INFO  [console] abcdefgh\ti k=v!\n");
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

Deno.test("formatLogLine: one line per event; the target only when it adds something", () => {
  const t = Date.UTC(2026, 0, 2, 3, 4, 5);
  const plain = createStyle(false);
  assert.equal(
    formatLogLine(
      line({
        timestamp_ms: t,
        source: "gateway",
        target: "openshell_gateway",
        message: "sandbox dev created",
      }),
      plain,
    ),
    "2026-01-02T03:04:05.000Z INFO  [gateway] sandbox dev created\n",
  );
  assert.equal(
    formatLogLine(
      line({ timestamp_ms: t, target: "openshell-sandbox", message: "sshd started" }),
      plain,
    ),
    "2026-01-02T03:04:05.000Z INFO  [console] openshell-sandbox: sshd started\n",
  );
  // An OCSF event (its JSON is the message) shows as its own message, on one line.
  const ocsf = JSON.stringify({
    class_uid: 4001,
    activity_name: "Close",
    message: "relay closed channel_id=c1: closed by the gateway",
    severity_id: 1,
    status_id: 1,
    unmapped: { channel_id: "c1" },
  });
  const event = line({ timestamp_ms: t, target: "ocsf", message: ocsf });
  assert.equal(
    formatLogLine(event, plain),
    "2026-01-02T03:04:05.000Z INFO  [console] ocsf: relay closed channel_id=c1: closed by the gateway\n",
  );
  // -o json: the event whole, as an object, and its message as the line's message.
  const json = JSON.parse(jsonLogLine(event));
  assert.equal(json.message, "relay closed channel_id=c1: closed by the gateway");
  assert.deepEqual(json.ocsf, JSON.parse(ocsf));
  // Something under target ocsf that is no event stays as it was.
  const junk = line({ target: "ocsf", message: "{not json" });
  assert.equal(formatLogLine(junk, plain), "- INFO  [console] ocsf: {not json\n");
  assert.deepEqual(JSON.parse(jsonLogLine(junk)), junk);
});

Deno.test("delete: the names that were not there, in one line", () => {
  assert.equal(notFoundMessage(["nope"]), 'sandbox "nope" not found');
  assert.equal(notFoundMessage(["a", "b"]), 'sandboxes "a", "b" not found');
});
