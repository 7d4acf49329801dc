import assert from "node:assert/strict";
import { UsageError } from "./args.ts";
import type { StdStreams } from "./context.ts";
import { CliError } from "./errors.ts";
import { describeFailure, main } from "./main.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(argv: string[], env: Record<string, string> = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const dec = new TextDecoder();
  const streams: StdStreams = {
    stdin: { read: () => Promise.resolve(null), isTerminal: () => false },
    stdout: {
      write: (p) => {
        stdout += dec.decode(p);
        return Promise.resolve(p.length);
      },
      isTerminal: () => false,
    },
    stderr: {
      writeSync: (p) => {
        stderr += dec.decode(p);
        return p.length;
      },
      isTerminal: () => false,
    },
  };
  const code = await main(argv, { env: (n) => env[n], streams, closeClient: true, signals: false });
  return { code, stdout, stderr };
}

Deno.test("help and version go to stdout with status 0", async () => {
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: openshell \[GLOBAL OPTIONS\] COMMAND/m);
  const cmd = await run(["sandbox", "exec", "--help"]);
  assert.equal(cmd.code, 0);
  assert.match(cmd.stdout, /Usage: openshell sandbox exec \[OPTIONS\] \[NAME\] -- CMD\.\.\./);
  const version = await run(["--version"]);
  assert.equal(version.stdout, "openshell 0.1.0\n");
});

Deno.test("usage errors: one line on stderr, status 2, no stack", async () => {
  const r = await run(["sandbox", "list", "--frobnicate"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.equal(
    r.stderr,
    `error: unknown option --frobnicate for 'openshell sandbox list' (see 'openshell sandbox list --help')\n`,
  );
  const debug = await run(["nope", "--debug"]);
  assert.equal(debug.code, 2);
  assert.match(debug.stderr, /^error: unknown command 'nope'/);
});

Deno.test("failures: one line, status 1; --debug adds the stack", async () => {
  const xdg = await Deno.makeTempDir();
  try {
    const r = await run(["sandbox", "list"], { XDG_CONFIG_HOME: xdg });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: no gateway configured: pass --gateway-endpoint URL/);
    assert.equal(r.stderr.split("\n").length, 2, "exactly one line");
    const d = await run(["sandbox", "list", "--debug"], { XDG_CONFIG_HOME: xdg });
    assert.match(d.stderr, /^error: no gateway configured/);
    assert.match(d.stderr, /\n {4}at /, "stack trace with --debug");
  } finally {
    await Deno.remove(xdg, { recursive: true });
  }
});

Deno.test("gateway add/select/list/remove through main", async () => {
  const xdg = await Deno.makeTempDir();
  const env = { XDG_CONFIG_HOME: xdg };
  try {
    const add = await run(["gateway", "add", "one", "http://127.0.0.1:7"], env);
    assert.equal(add.code, 0, add.stderr);
    assert.equal(add.stdout, "Added gateway one (http://127.0.0.1:7), now active\n");
    assert.equal((await run(["gateway", "add", "two", "http://127.0.0.1:8"], env)).code, 0);
    const dup = await run(["gateway", "add", "two", "http://127.0.0.1:9"], env);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /gateway "two" already exists/);
    assert.equal((await run(["gateway", "select", "two"], env)).stdout, "Active gateway: two\n");
    const list = await run(["gateway", "list"], env);
    assert.equal(
      list.stdout,
      "    NAME   ENDPOINT             TLS\n" +
        "    one    http://127.0.0.1:7   -\n" +
        "*   two    http://127.0.0.1:8   -\n",
    );
    const json = JSON.parse((await run(["gateway", "list", "-o", "json"], env)).stdout);
    assert.deepEqual(json.map((g: { name: string; active: boolean }) => [g.name, g.active]), [
      ["one", false],
      ["two", true],
    ]);
    const missing = await run(["gateway", "select", "nope"], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: gateway "nope" is not registered/);
    const badCa = await run(["gateway", "add", "x", "https://h:1", "--ca", `${xdg}/none.pem`], env);
    assert.match(badCa.stderr, /cannot read --ca .*none\.pem: no such file/);
    assert.equal((await run(["gateway", "remove", "two"], env)).code, 0);
    const status = await run(["status"], env);
    assert.match(status.stderr, /no gateway configured/, "the removed gateway is no longer active");
  } finally {
    await Deno.remove(xdg, { recursive: true });
  }
});

Deno.test("a reader that went away (broken pipe) ends the CLI quietly with 141", async () => {
  let stderr = "";
  const code = await main(["--help"], {
    env: () => undefined,
    signals: false,
    streams: {
      stdin: { read: () => Promise.resolve(null), isTerminal: () => false },
      stdout: {
        write: () => Promise.reject(new Deno.errors.BrokenPipe("Broken pipe (os error 32)")),
        isTerminal: () => false,
      },
      stderr: {
        writeSync: (p) => {
          stderr += new TextDecoder().decode(p);
          return p.length;
        },
        isTerminal: () => false,
      },
    },
  });
  assert.equal(code, 141);
  assert.equal(stderr, "");
});

Deno.test("failure descriptions", () => {
  assert.deepEqual(describeFailure(new CliError("boom", 3)), { message: "boom", exitCode: 3 });
  assert.deepEqual(describeFailure(new UsageError("bad", "sandbox get")), {
    message: "bad (see 'openshell sandbox get --help')",
    exitCode: 2,
  });
  assert.deepEqual(describeFailure(new Deno.errors.NotCapable("Requires net access\nmore")), {
    message: "not permitted: Requires net access",
    exitCode: 1,
  });
  assert.deepEqual(describeFailure(new Error("one\ntwo")), { message: "one", exitCode: 1 });
  // A usage error found while a command runs points at that command's help.
  assert.deepEqual(describeFailure(new UsageError("bad value"), "sandbox logs"), {
    message: "bad value (see 'openshell sandbox logs --help')",
    exitCode: 2,
  });
  assert.deepEqual(describeFailure(new UsageError("bad value", "", { seeHelp: false })), {
    message: "bad value",
    exitCode: 2,
  });
});

Deno.test("a bad option value points at the help page of the command that lists it", async () => {
  for (
    const [argv, line] of [
      [
        ["sandbox", "create", "--timeout", "abc"],
        `--timeout must be seconds or a duration such as 90s, 10m, 1h, 2d, got "abc" ` +
        `(see 'openshell sandbox create --help')`,
      ],
      [
        ["sandbox", "exec", "dev", "--timeout", "abc", "--", "true"],
        `--timeout must be seconds or a duration such as 90s, 10m, 1h, 2d, got "abc" ` +
        `(see 'openshell sandbox exec --help')`,
      ],
      [
        ["sandbox", "logs", "dev", "--since", "yesterday"],
        `--since must be a duration (90s, 10m, 1h, 2d) or a time (2026-01-02T15:04:05Z), ` +
        `got "yesterday" (see 'openshell sandbox logs --help')`,
      ],
    ] as const
  ) {
    const r = await run([...argv]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [2, "", `error: ${line}\n`]);
    const option = line.split(" ")[0];
    const help = await run([argv[0], argv[1], "--help"]);
    assert.ok(help.stdout.includes(`${option} `), `${argv[1]} --help lists ${option}`);
  }
});

Deno.test("exec with a command but no '--': the error shows the fixed command line", async () => {
  const r = await run(["sandbox", "exec", "dev", "uname", "-a"]);
  assert.deepEqual([r.code, r.stderr], [
    2,
    `error: unknown option -a for 'openshell sandbox exec': put the command after '--': ` +
    "openshell sandbox exec dev -- uname -a\n",
  ]);
});
