import assert from "node:assert/strict";
import { EgressConfigError, parseEgressConfig } from "./config.ts";

const none = () => undefined;

Deno.test("egress config: defaults, flags, env twins (a flag wins)", () => {
  const p = parseEgressConfig(["--state-dir", "/s/egress/"], none);
  assert.deepEqual(p, {
    kind: "run",
    config: {
      stateDir: "/s/egress",
      logLevel: "info",
      maxTotal: 1024,
      maxPerSandbox: 64,
      idleSecs: 300,
      eventsPerSec: 100,
    },
  });
  const env: Record<string, string> = {
    OPENSHELL_EGRESS_STATE_DIR: "/e",
    OPENSHELL_EGRESS_MAX_CONNECTIONS: "10",
    OPENSHELL_EGRESS_MAX_CONNECTIONS_PER_SANDBOX: "99",
    OPENSHELL_LOG_LEVEL: "debug",
  };
  const e = parseEgressConfig(["--idle-timeout-secs=5"], (n) => env[n]);
  assert.equal(e.kind, "run");
  if (e.kind !== "run") return;
  assert.equal(e.config.stateDir, "/e");
  assert.equal(e.config.maxTotal, 10);
  assert.equal(e.config.maxPerSandbox, 10, "never more per sandbox than in all");
  assert.equal(e.config.idleSecs, 5);
  assert.equal(e.config.logLevel, "debug");
  const f = parseEgressConfig(["--state-dir=/f"], (n) => env[n]);
  assert.equal(f.kind === "run" && f.config.stateDir, "/f");
  assert.deepEqual(parseEgressConfig(["--help"], none), { kind: "help" });
  assert.deepEqual(parseEgressConfig(["--version"], none), { kind: "version" });
});

Deno.test("egress config: mistakes are one line naming the flag", () => {
  const err = (args: string[], env: Record<string, string> = {}) => {
    try {
      parseEgressConfig(args, (n) => env[n]);
    } catch (e) {
      assert.ok(e instanceof EgressConfigError);
      return e.message;
    }
    throw new Error("expected an error");
  };
  assert.equal(err([]), "--state-dir is required (see --help)");
  assert.equal(err(["--state-dir", "rel"]), '--state-dir must be an absolute path: "rel"');
  assert.match(err(["--state-dir", "/a,b"]), /commas/);
  assert.match(err(["--state-dir", `/${"x".repeat(100)}`]), /too long for its Unix sockets/);
  assert.equal(
    err(["--state-dir", "/s", "--max-connections", "0"]),
    "--max-connections must be 1..65536, not 0",
  );
  assert.match(
    err(["--state-dir", "/s"], { OPENSHELL_EGRESS_EVENTS_PER_SEC: "lots" }),
    /^OPENSHELL_EGRESS_EVENTS_PER_SEC must be a whole number/,
  );
  assert.match(
    err(["--state-dir", "/s", "--log-level", "loud"]),
    /^--log-level: invalid log level/,
  );
  assert.match(err(["--bogus"]), /Unknown option '--bogus'.*see --help/);
});
