import assert from "node:assert/strict";
import type { Sandbox } from "../core/protocol.ts";
import {
  colorEnabled,
  createStyle,
  displayWidth,
  formatAge,
  formatElapsed,
  phaseLabel,
  phaseReason,
  renderTable,
  sandboxDetails,
  sandboxTable,
  stripAnsi,
  toJson,
} from "./output.ts";

function sandbox(over: Partial<Sandbox> = {}): Sandbox {
  return {
    id: "sb-1",
    name: "alpha",
    namespace: "",
    spec: null,
    status: null,
    phase: "SANDBOX_PHASE_READY",
    created_at_ms: 1_000_000,
    current_policy_version: 0,
    ...over,
  };
}

Deno.test("colours only on a terminal, never with NO_COLOR or TERM=dumb", () => {
  assert.equal(colorEnabled({ isTerminal: true }), true);
  assert.equal(colorEnabled({ isTerminal: false }), false);
  assert.equal(colorEnabled({ isTerminal: true, noColor: "1" }), false);
  assert.equal(colorEnabled({ isTerminal: true, noColor: "" }), true, "empty NO_COLOR is unset");
  assert.equal(colorEnabled({ isTerminal: true, term: "dumb" }), false);
});

Deno.test("styles add escape codes only when enabled", () => {
  assert.equal(createStyle(false).red("x"), "x");
  assert.equal(createStyle(true).red("x"), "\x1b[31mx\x1b[39m");
  assert.equal(stripAnsi(createStyle(true).bold("ab")), "ab");
  assert.equal(displayWidth(createStyle(true).green("héllo")), 5);
});

Deno.test("tables align columns (escape codes do not count) without trailing blanks", () => {
  const style = createStyle(true);
  const text = renderTable(["NAME", "PHASE"], [[style.cyan("a"), "Ready"], ["longer", "Error"]]);
  assert.equal(
    stripAnsi(text),
    "NAME     PHASE\n" +
      "a        Ready\n" +
      "longer   Error\n",
  );
  assert.equal(renderTable(["A", "B"], [["x", ""]]), "A   B\nx\n");
});

Deno.test("sandbox table and details", () => {
  const now = 1_000_000 + 125_000;
  assert.equal(
    sandboxTable(
      [sandbox(), sandbox({ name: "b", id: "sb-2", phase: "SANDBOX_PHASE_ERROR" })],
      now,
      createStyle(false),
    ),
    "NAME    ID     PHASE   AGE\n" +
      "alpha   sb-1   Ready   2m\n" +
      "b       sb-2   Error   2m\n",
  );
  const details = sandboxDetails(
    sandbox({
      phase: "SANDBOX_PHASE_PROVISIONING",
      status: {
        sandbox_name: "alpha",
        agent_pod: "",
        agent_fd: "",
        sandbox_fd: "",
        conditions: [{
          type: "Ready",
          status: "False",
          reason: "Starting",
          message: "VM is starting",
          last_transition_time: "",
        }],
      },
    }),
    now,
    createStyle(false),
  );
  assert.match(details, /^Name: {7}alpha$/m);
  assert.match(details, /^Phase: {6}Provisioning$/m);
  assert.match(details, /^Reason: {5}Starting: VM is starting$/m);
  assert.match(details, /^ {2}Ready=False {2}Starting: VM is starting$/m);
});

Deno.test("phase labels, reasons, ages, elapsed, JSON", () => {
  assert.equal(phaseLabel("SANDBOX_PHASE_READY"), "Ready");
  assert.equal(phaseLabel("SANDBOX_PHASE_WHATEVER"), "WHATEVER");
  assert.equal(phaseReason(sandbox()), "");
  assert.equal(formatAge(0, 5), "-");
  assert.equal(formatAge(10_000, 5_000), "0s");
  assert.equal(formatAge(0 + 1, 3 * 86400_000), "2d");
  assert.equal(formatAge(1, 7_200_001), "2h");
  assert.equal(formatElapsed(3_449), "3.4s");
  assert.equal(toJson({ a: [1] }), '{\n  "a": [\n    1\n  ]\n}\n');
});
