import assert from "node:assert/strict";
import { envTwins, FlagError, type FlagTable } from "../core/flags.ts";
import { EGRESS_FLAGS, egressUsage, parseEgressConfig } from "./config.ts";

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
    OPENSHELL_EGRESS_EVENTS_PER_SEC: "7",
    OPENSHELL_LOG_LEVEL: "DEBUG",
  };
  const e = parseEgressConfig(["--idle-timeout-secs=5"], (n) => env[n]);
  assert.deepEqual(e, {
    kind: "run",
    config: {
      stateDir: "/e",
      logLevel: "debug",
      maxTotal: 10,
      maxPerSandbox: 10, // never more per sandbox than in all
      idleSecs: 5,
      eventsPerSec: 7,
    },
  });
  const f = parseEgressConfig(
    ["--state-dir=/f", "--max-connections", "20", "--idle-timeout-secs", "2m"],
    (n) => env[n],
  );
  assert.equal(f.kind === "run" && f.config.stateDir, "/f");
  assert.equal(f.kind === "run" && f.config.maxTotal, 20);
  assert.equal(f.kind === "run" && f.config.idleSecs, 120);
  // An empty env twin (a launcher's unset variable) counts as not given.
  const g = parseEgressConfig(
    ["--state-dir", "/g"],
    (n) => n === "OPENSHELL_EGRESS_MAX_CONNECTIONS" ? "" : undefined,
  );
  assert.equal(g.kind === "run" && g.config.maxTotal, 1024);
  assert.deepEqual(parseEgressConfig(["--help"], none), { kind: "help" });
  assert.deepEqual(parseEgressConfig(["-h"], none), { kind: "help" });
  assert.deepEqual(parseEgressConfig(["--version"], none), { kind: "version" });
});

Deno.test("egress config: every option has its OPENSHELL_* twin", () => {
  assert.deepEqual(envTwins(EGRESS_FLAGS).sort(), [
    "OPENSHELL_EGRESS_EVENTS_PER_SEC",
    "OPENSHELL_EGRESS_IDLE_TIMEOUT_SECS",
    "OPENSHELL_EGRESS_MAX_CONNECTIONS",
    "OPENSHELL_EGRESS_MAX_CONNECTIONS_PER_SANDBOX",
    "OPENSHELL_EGRESS_STATE_DIR",
    "OPENSHELL_LOG_LEVEL",
  ]);
});

Deno.test("egress config: mistakes are one line naming the flag", () => {
  const err = (args: string[], env: Record<string, string> = {}) => {
    try {
      parseEgressConfig(args, (n) => env[n]);
    } catch (e) {
      assert.ok(e instanceof FlagError, String(e));
      assert.ok(!e.message.includes("\n"), e.message);
      return e.message;
    }
    throw new Error("expected an error");
  };
  assert.equal(err([]), "--state-dir (or OPENSHELL_EGRESS_STATE_DIR) is required");
  assert.equal(err(["--state-dir", "rel"]), '--state-dir must be an absolute path, got "rel"');
  assert.match(err(["--state-dir", "/a,b"]), /^--state-dir must not contain commas/);
  assert.match(
    err(["--state-dir", `/${"x".repeat(90)}`]),
    /^--state-dir is too long for a Unix socket path \(\/x+\/control\.sock exceeds 103 bytes\)/,
  );
  // The longest that fits: its control.sock is exactly 103 bytes.
  const longest = `/${"x".repeat(89)}`;
  assert.equal(`${longest}/control.sock`.length, 103);
  const ok = parseEgressConfig(["--state-dir", longest], none);
  assert.equal(ok.kind === "run" && ok.config.stateDir, longest);
  assert.equal(
    err(["--state-dir", "/s", "--max-connections", "0"]),
    "--max-connections must be between 1 and 65536, got 0",
  );
  assert.match(
    err(["--state-dir", "/s"], { OPENSHELL_EGRESS_EVENTS_PER_SEC: "lots" }),
    /^OPENSHELL_EGRESS_EVENTS_PER_SEC \(--events-per-sec\) must be a whole number/,
  );
  assert.equal(
    err(["--state-dir", "/s", "--idle-timeout-secs", "2d"]),
    "--idle-timeout-secs must be between 1 and 86400 seconds, got 172800 seconds",
  );
  assert.match(
    err(["--state-dir", "/s", "--log-level", "loud"]),
    /^--log-level must be one of error, warn, info, debug, trace/,
  );
  assert.match(
    err(["--state-dir", "/s"], {
      OPENSHELL_EGRESS_STATE_DIR: "/ignored",
      OPENSHELL_LOG_LEVEL: "x",
    }),
    /^OPENSHELL_LOG_LEVEL \(--log-level\) must be one of/,
  );
  assert.equal(err(["--bogus"]), "unknown option --bogus (see --help)");
  assert.equal(
    err(["--max-connection", "3"]),
    "unknown option --max-connection (did you mean --max-connections?) (see --help)",
  );
  assert.equal(err(["--state-dir", "/s", "extra"]), 'unexpected argument "extra" (see --help)');
});

Deno.test("egress config: --help in the common layout, with each option's facts and twin", () => {
  const help = egressUsage();
  assert.match(help, /^openshell-egress: the sandboxes' egress proxy/);
  assert.match(help, /\nUsage: openshell-egress --state-dir DIR \[OPTIONS\]\n/);
  assert.match(
    help,
    /\n {6}--state-dir DIR {2,}State dir[^[]*\[required; env OPENSHELL_EGRESS_STATE_DIR\]/,
  );
  for (const [name, spec] of Object.entries(EGRESS_FLAGS as FlagTable)) {
    assert.ok(help.includes(`--${name}`), name);
    if (spec.env) assert.ok(help.includes(`env ${spec.env}`), spec.env);
  }
  assert.match(help, /\[1 to 65536; default 1024;\s+env OPENSHELL_EGRESS_MAX_CONNECTIONS\]/);
  assert.match(help, /-h, --help/);
});
