import assert from "node:assert/strict";
import {
  choicesOption,
  commandHelp,
  COMMANDS,
  envOption,
  integerOption,
  type Invocation,
  levelOption,
  outputOption,
  parseCommandLine,
  sinceOption,
  topHelp,
  UsageError,
} from "./args.ts";

function run(argv: string[]): Invocation {
  const r = parseCommandLine(argv);
  assert.equal(r.kind, "run");
  return (r as { invocation: Invocation }).invocation;
}

function usage(argv: string[], pattern: RegExp): void {
  assert.throws(() => parseCommandLine(argv), (e) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"), "one line");
    return true;
  });
}

Deno.test("commands, positionals and the command after --", () => {
  const inv = run(["sandbox", "create", "--name", "dev", "--no-keep", "--", "sh", "-c", "exit 7"]);
  assert.equal(inv.spec.id, "sandbox create");
  assert.equal(inv.values.name, "dev");
  assert.equal(inv.values["no-keep"], true);
  assert.deepEqual(inv.trailing, ["sh", "-c", "exit 7"]);

  const exec = run([
    "sandbox",
    "exec",
    "dev",
    "-e",
    "A=1",
    "--env",
    "B=2",
    "-t",
    "--",
    "ls",
    "--",
    "-l",
  ]);
  assert.deepEqual(exec.positionals, ["dev"]);
  assert.deepEqual(exec.values.env, ["A=1", "B=2"]);
  assert.equal(exec.values.tty, true);
  assert.deepEqual(exec.trailing, ["ls", "--", "-l"], "later -- belong to the command");

  const del = run(["sandbox", "delete", "a", "b", "--", "-odd"]);
  assert.deepEqual(del.positionals, ["a", "b", "-odd"]);
});

Deno.test("global options go before the command or among its options", () => {
  const a = run(["--gateway-endpoint", "http://h:1", "-g", "x", "sandbox", "list", "--names"]);
  assert.equal(a.values["gateway-endpoint"], "http://h:1");
  assert.equal(a.values.gateway, "x");
  assert.equal(a.values.names, true);
  const b = run(["sandbox", "list", "--gateway-endpoint=http://h:2", "--debug"]);
  assert.equal(b.values["gateway-endpoint"], "http://h:2");
  assert.equal(b.values.debug, true);
});

Deno.test("help for every command, group and the top level", () => {
  for (const spec of COMMANDS) {
    const r = parseCommandLine([...spec.id.split(" "), "--help"]);
    assert.equal(r.kind, "run");
    const inv = (r as { invocation: Invocation }).invocation;
    assert.equal(inv.values.help, true);
    const text = commandHelp(inv.spec);
    assert.match(text, new RegExp(`Usage: openshell ${spec.id}`));
    assert.match(text, /--gateway-endpoint URL/);
  }
  const required = parseCommandLine(["sandbox", "exec", "-h"]);
  assert.equal(required.kind, "run", "--help wins over missing arguments");
  const top = parseCommandLine(["--help"]);
  assert.equal(top.kind, "help");
  assert.match((top as { text: string }).text, /sandbox\s+Create, use and delete sandboxes/);
  assert.doesNotMatch(topHelp(), /ssh-proxy/, "hidden commands are not listed");
  const group = parseCommandLine(["sandbox", "--help"]);
  assert.match((group as { text: string }).text, /^\s+ssh-config\s+Print an OpenSSH/m);
  const viaHelp = parseCommandLine(["help", "sandbox", "create"]);
  assert.match((viaHelp as { text: string }).text, /Usage: openshell sandbox create/);
  assert.deepEqual(parseCommandLine(["--version"]), { kind: "version" });
});

Deno.test("bad command lines are one-line usage errors", () => {
  usage([], /^missing command$/);
  usage(["nope"], /unknown command 'nope'/);
  usage(["sandbox"], /'openshell sandbox' needs a command/);
  usage(["sandbox", "frob"], /unknown command 'sandbox frob'/);
  usage(["sandbox", "list", "--bogus"], /unknown option "--bogus" for 'openshell sandbox list'/);
  usage(["--bogus", "status"], /unknown option "--bogus" for 'openshell'/);
  usage(["sandbox", "list", "--names=yes"], /option "--names" takes no value/);
  usage(["sandbox", "create", "--name"], /option "--name" needs a value/);
  usage(["-g"], /option "-g" needs a value/);
  usage(["gateway", "add", "x"], /missing URL/);
  usage(["gateway", "select", "a", "b"], /unexpected argument "b"/);
  usage(["sandbox", "exec", "dev", "ls"], /put the command after '--'/);
  usage(["status", "-x"], /^unknown option "-x" for 'openshell status'$/);
  usage(["sandbox", "exec", "dev"], /missing command after '--'/);
  usage(["sandbox", "exec", "dev", "--"], /missing command after '--'/);
  usage(["status", "extra"], /unexpected argument "extra"/);
});

Deno.test("a command without '--': the error shows the command line with '--' in its place", () => {
  const cases: [string[], string][] = [
    [
      ["sandbox", "exec", "dev", "uname", "-a"],
      `unknown option "-a" for 'openshell sandbox exec': put the command after '--': ` +
      "openshell sandbox exec dev -- uname -a",
    ],
    [
      ["sandbox", "exec", "dev", "ls"],
      `unexpected argument "ls": put the command after '--': openshell sandbox exec dev -- ls`,
    ],
    [
      ["sandbox", "exec", "-w", "/tmp", "dev", "ls", "-t", "a b"],
      `unexpected argument "ls": put the command after '--': ` +
      "openshell sandbox exec -w /tmp dev -- ls -t 'a b'",
    ],
    [
      ["sandbox", "exec", "dev", "grep", "-e"],
      `option "-e" needs a value: put the command after '--': ` +
      "openshell sandbox exec dev -- grep -e",
    ],
    [
      ["sandbox", "create", "echo", "--frob"],
      `unknown option "--frob" for 'openshell sandbox create': put the command after '--': ` +
      "openshell sandbox create -- echo --frob",
    ],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseCommandLine(argv), (e) => {
      assert.ok(e instanceof UsageError);
      assert.equal(e.message, message);
      assert.equal(e.seeHelp, false, "the fix is in the message; no help page needed");
      return true;
    });
  }
  // Without a word beyond NAME there is nothing to move: the usual error and its help page.
  assert.throws(() => parseCommandLine(["sandbox", "exec", "dev", "-a"]), (e) => {
    assert.ok(e instanceof UsageError);
    assert.equal(e.message, `unknown option "-a" for 'openshell sandbox exec'`);
    assert.equal(e.seeHelp, true);
    return true;
  });
});

Deno.test("number, env and output option values", () => {
  assert.equal(integerOption("timeout", undefined), undefined);
  assert.equal(integerOption("timeout", "30"), 30);
  assert.throws(
    () => integerOption("timeout", "-1", { unit: "seconds" }),
    /whole number of seconds/,
  );
  assert.throws(() => integerOption("limit", "1.5"), /--limit needs a whole number/);
  assert.throws(() => integerOption("limit", "0", { min: 1 }), /between 1 and/);
  assert.deepEqual(envOption("env", ["A=1", "B_2=x=y", "C="]), { A: "1", B_2: "x=y", C: "" });
  assert.throws(() => envOption("env", ["1A=x"]), /KEY=VALUE/);
  assert.throws(() => envOption("env", ["NOEQ"]), /KEY=VALUE/);
  assert.equal(outputOption(undefined, ["table", "json"]), "table");
  assert.equal(outputOption("json", ["table", "json"]), "json");
  assert.throws(() => outputOption("yaml", ["table", "json"]), /--output must be table or json/);
});

Deno.test("logs filters: --since durations and times, --level, --source", () => {
  const now = Date.UTC(2026, 0, 2, 12, 0, 0);
  assert.equal(sinceOption("since", undefined, now), undefined);
  assert.equal(sinceOption("since", "90s", now), now - 90_000);
  assert.equal(sinceOption("since", "10m", now), now - 600_000);
  assert.equal(sinceOption("since", "1h", now), now - 3_600_000);
  assert.equal(sinceOption("since", "2d", now), now - 2 * 86_400_000);
  assert.equal(sinceOption("since", "2026-01-02T11:00:00Z", now), now - 3_600_000);
  assert.equal(sinceOption("since", "2026-01-02T13:30:00.5+02:00", now), now - 1_800_000 + 500);
  for (const bad of ["10", "abc", "1w", "2026-01-02", "-5m", "2026-13-45T99:00:00Z"]) {
    assert.throws(
      () => sinceOption("since", bad, now),
      (e) =>
        e instanceof UsageError &&
        e.message ===
          `--since needs a duration (90s, 10m, 1h, 2d) or a time (2026-01-02T15:04:05Z), not "${bad}"`,
      bad,
    );
  }
  assert.equal(levelOption("level", "WARN"), "warn");
  assert.throws(
    () => levelOption("level", "loud"),
    /^UsageError: --level must be one of error, warn, info, debug, trace, not "loud"$/,
  );
  const sources = ["gateway", "console", "sandbox"];
  assert.deepEqual(choicesOption("source", ["console,gateway", "console"], sources), [
    "console",
    "gateway",
  ]);
  assert.deepEqual(choicesOption("source", [], sources), []);
  assert.throws(
    () => choicesOption("source", ["vm"], sources),
    /--source must be gateway, console, sandbox, not "vm"/,
  );
  const logs = run([
    "sandbox",
    "logs",
    "dev",
    "--since",
    "10m",
    "--level",
    "warn",
    "--source",
    "console",
  ]);
  assert.deepEqual([logs.values.since, logs.values.level, logs.values.source], [
    "10m",
    "warn",
    ["console"],
  ]);
});
