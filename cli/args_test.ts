import assert from "node:assert/strict";
import {
  commandHelp,
  COMMANDS,
  envOption,
  GLOBAL_OPTIONS,
  type Invocation,
  parseCommandLine,
  sinceOption,
  sshProxyGateway,
  topHelp,
  UsageError,
} from "./args.ts";

function run(argv: string[], env: Record<string, string> = {}): Invocation {
  const r = parseCommandLine(argv, (k) => env[k]);
  assert.equal(r.kind, "run");
  return (r as { invocation: Invocation }).invocation;
}

function usage(argv: string[], pattern: RegExp, env: Record<string, string> = {}): void {
  assert.throws(() => parseCommandLine(argv, (k) => env[k]), (e) => {
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
    const flat = text.replace(/\s+/g, " ");
    for (const [name, option] of Object.entries({ ...GLOBAL_OPTIONS, ...spec.options })) {
      if (option.hidden) continue;
      assert.ok(text.includes(`--${name}`), `${spec.id}: --${name}`);
      if (option.env) assert.ok(flat.includes(`env ${option.env}`), `${spec.id}: ${option.env}`);
    }
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
  usage(["sandbox", "list", "--bogus"], /^unknown option --bogus for 'openshell sandbox list'$/);
  usage(["--bogus", "status"], /^unknown option --bogus for 'openshell'$/);
  usage(
    ["sandbox", "list", "--name"],
    /^unknown option --name \(did you mean --names\?\) for 'openshell sandbox list'$/,
  );
  usage(["sandbox", "list", "--names=yes"], /^--names takes no value$/);
  usage(["sandbox", "create", "--name"], /^--name needs a value$/);
  usage(["-g"], /^-g needs a value$/);
  usage(["gateway", "add", "x"], /missing URL/);
  usage(["gateway", "select", "a", "b"], /unexpected argument "b"/);
  usage(["sandbox", "exec", "dev", "ls"], /put the command after '--'/);
  usage(["status", "-x"], /^unknown option -x for 'openshell status'$/);
  usage(["sandbox", "exec", "dev"], /missing command after '--'/);
  usage(["sandbox", "exec", "dev", "--"], /missing command after '--'/);
  usage(["status", "extra"], /unexpected argument "extra"/);
});

Deno.test("a command without '--': the error shows the command line with '--' in its place", () => {
  const cases: [string[], string][] = [
    [
      ["sandbox", "exec", "dev", "uname", "-a"],
      `unknown option -a for 'openshell sandbox exec': put the command after '--': ` +
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
      `-e needs a value: put the command after '--': ` +
      "openshell sandbox exec dev -- grep -e",
    ],
    [
      ["sandbox", "create", "echo", "--frob"],
      `unknown option --frob for 'openshell sandbox create': put the command after '--': ` +
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
    assert.equal(e.message, `unknown option -a for 'openshell sandbox exec'`);
    assert.equal(e.seeHelp, true);
    return true;
  });
});

Deno.test("option values are typed and checked at parse, env twins and defaults applied", () => {
  const list = run(["sandbox", "list", "--limit", "5", "-o", "json"]);
  assert.deepEqual([list.values.limit, list.values.offset, list.values.output], [5, 0, "json"]);
  assert.equal(run(["sandbox", "get", "x"]).values.output, "text", "each command its default");
  const exec = run(["sandbox", "exec", "dev", "--timeout", "2m", "--", "true"]);
  assert.equal(exec.values.timeout, 120, "a duration, in seconds");
  const create = run(["sandbox", "create", "--disk-gib", "20", "-e", "A=1,2"], {
    OPENSHELL_PROVISION_TIMEOUT: "60",
  });
  assert.deepEqual(
    [create.values["disk-gib"], create.values.timeout, create.from.timeout, create.values.env],
    [20, 60, "env", ["A=1,2"]],
  );
  assert.equal(
    run(["sandbox", "create", "--timeout", "9"], { OPENSHELL_PROVISION_TIMEOUT: "60" })
      .values.timeout,
    9,
  );
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["sandbox", "list", "--limit", "0"], {}, /^--limit must be between 1 and 2147483647, got 0$/],
    [["sandbox", "list", "-o", "yaml"], {}, /^--output must be one of table, json, got "yaml"$/],
    [["sandbox", "create", "--timeout", "abc"], {}, /^--timeout must be seconds or a duration/],
    [
      ["sandbox", "create"],
      { OPENSHELL_PROVISION_TIMEOUT: "soon" },
      /^OPENSHELL_PROVISION_TIMEOUT \(--timeout\) must be seconds or a duration/,
    ],
    [["sandbox", "create", "--disk-gib", "0"], {}, /^--disk-gib must be between 1 and 2048 GiB/],
    [["sandbox", "create", "--disk-gib", "1.5"], {}, /^--disk-gib must be a whole number of GiB/],
    [
      ["sandbox", "create", "-e", "1A=x"],
      {},
      /^--env needs KEY=VALUE with KEY a variable name, got "1A=x"$/,
    ],
    [["sandbox", "exec", "--env", "NOEQ", "--", "x"], {}, /^--env needs KEY=VALUE/],
    [["gateway", "start", "--drivers", "k8s"], {}, /^--drivers must be one of vm, none/],
  ];
  for (const [argv, env, re] of cases) usage(argv, re, env);
  assert.deepEqual(envOption(["A=1", "B_2=x=y", "C="]), { A: "1", B_2: "x=y", C: "" });
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
          `--since must be a duration (90s, 10m, 1h, 2d) or a time (2026-01-02T15:04:05Z), got "${bad}"`,
      bad,
    );
  }
  usage(
    ["sandbox", "logs", "dev", "--level", "loud"],
    /^--level must be one of error, warn, info, debug, trace, got "loud"$/,
  );
  usage(
    ["sandbox", "logs", "--source", "console,vm"],
    /^--source must be one of gateway, console, sandbox, egress, got "vm"$/,
  );
  const logs = run([
    "sandbox",
    "logs",
    "dev",
    "--since",
    "10m",
    "--level",
    "WARN",
    "--source",
    "console,gateway",
    "--source",
    "console",
  ]);
  assert.deepEqual([logs.values.since, logs.values.level, logs.values.source], [
    "10m",
    "warn",
    ["console", "gateway", "console"],
  ]);
});

Deno.test("ssh-proxy: --gateway-url is the URL; --gateway is a name, or upstream's URL form", () => {
  const given = (argv: string[]) => {
    const inv = run(["ssh-proxy", ...argv]);
    return sshProxyGateway((n) => inv.from[n] === "argv" ? inv.values[n] as string : undefined);
  };
  const url = "https://gw:8080/connect/ssh";
  const cases: [string[], { url?: string; name?: string }][] = [
    [["--gateway-url", url, "--gateway", "prod"], { url, name: "prod" }], // what ssh sessions emit
    [["--gateway", url, "--gateway-name", "prod"], { url, name: "prod" }], // upstream's form
    [["--gateway", url], { url }],
    [["--name", "dev", "--gateway", "prod"], { name: "prod" }], // what ssh-config emits
    [["-g", "prod", "--gateway-name", "other"], { name: "other" }],
    [["--gateway-url", url, "--gateway", "http://elsewhere:1"], { url }],
    [[], {}],
  ];
  for (const [argv, expected] of cases) assert.deepEqual(given(argv), expected, argv.join(" "));
  // An env twin never supplies the tunnel URL or its TLS files.
  const inv = run(["ssh-proxy", "--gateway-url", url], { OPENSHELL_GATEWAY: "prod" });
  assert.equal(inv.values.gateway, "prod");
  assert.deepEqual(
    sshProxyGateway((n) => inv.from[n] === "argv" ? inv.values[n] as string : undefined),
    { url },
  );
  usage(
    ["ssh-proxy", "--gateway-url", url, "--token", "s3cret"],
    /^--token is not accepted on the command line, where every user can read it \(ps\): set OPENSHELL_SSH_TOKEN instead$/,
  );
  assert.equal(run(["ssh-proxy"], { OPENSHELL_SSH_TOKEN: "t0k" }).values.token, "t0k");
});
