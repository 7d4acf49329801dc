import assert from "node:assert/strict";
import {
  commandHelp,
  COMMANDS,
  envOption,
  integerOption,
  type Invocation,
  outputOption,
  parseCommandLine,
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
  usage(["sandbox", "exec", "dev"], /missing command after '--'/);
  usage(["sandbox", "exec", "dev", "--"], /missing command after '--'/);
  usage(["status", "extra"], /unexpected argument "extra"/);
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
