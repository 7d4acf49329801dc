import assert from "node:assert/strict";
import {
  type EnvReader,
  FlagError,
  type FlagTable,
  givenAs,
  NO_ENV,
  parseFlags,
  tokenize,
  tokenProblem,
} from "./flags.ts";

const TABLE = {
  port: {
    kind: "int",
    env: "T_PORT",
    default: 8080,
    min: 0,
    max: 65535,
    value: "PORT",
    help: "Port",
  },
  mode: { kind: "choice", choices: ["fast", "slow"], default: "fast", help: "Mode" },
  verbose: { kind: "bool", env: "T_VERBOSE", short: "v", help: "Chatty" },
  name: { kind: "string", short: "n", env: "T_NAME", help: "Name" },
  dir: { kind: "path", env: "T_DIR", help: "Directory" },
  tag: { kind: "list", env: "T_TAG", repeatable: true, choices: ["a", "b", "c"], help: "Tags" },
  env: { kind: "string", short: "e", repeatable: true, help: "K=V" },
  mem: { kind: "size", unit: "MiB", min: 256, max: 4096, env: "T_MEM", default: 1024, help: "Mem" },
  wait: { kind: "duration", min: 1, max: 86400, default: 300, help: "Wait" },
  token: { kind: "string", env: "T_TOKEN", secret: true, envOnly: true, help: "Token" },
  code: {
    kind: "string",
    help: "Code",
    check: (v: string | number) => /^[a-z]+$/.test(String(v)) ? undefined : "must be lower-case",
  },
} satisfies FlagTable;

function envOf(vars: Record<string, string>): EnvReader {
  return (k) => vars[k];
}

function error(argv: string[], env: EnvReader = NO_ENV, table: FlagTable = TABLE): string {
  try {
    parseFlags(table, argv, env);
  } catch (e) {
    assert.ok(e instanceof FlagError, String(e));
    assert.ok(!e.message.includes("\n"), "one line");
    return e.message;
  }
  throw new Error(`expected a FlagError for ${JSON.stringify(argv)}`);
}

Deno.test("precedence: an option beats its env twin, which beats the default", () => {
  const cases: [string[], Record<string, string>, number, string][] = [
    [[], {}, 8080, "default"],
    [[], { T_PORT: "9000" }, 9000, "env"],
    [[], { T_PORT: "  " }, 8080, "default"], // an empty twin is unset
    [["--port", "1"], { T_PORT: "9000" }, 1, "argv"],
    [["--port=2"], { T_PORT: "9000" }, 2, "argv"],
    [["--port", ""], { T_PORT: "9000" }, 9000, "env"], // an empty value is not given
    [["--port", "3", "--port", "4"], {}, 4, "argv"], // the last one wins
  ];
  for (const [argv, env, port, from] of cases) {
    const p = parseFlags(TABLE, argv, envOf(env));
    assert.deepEqual([p.values.port, p.from.port], [port, from], JSON.stringify([argv, env]));
  }
});

Deno.test("values of every kind, typed", () => {
  const p = parseFlags(
    TABLE,
    [
      "-v",
      "-nx",
      "--dir",
      "/srv/x/",
      "--tag",
      "a,b",
      "--tag=c",
      "-e",
      "A=1,2",
      "--env",
      "B=2",
      "--mem",
      "2Gi",
      "--wait",
      "10m",
      "--mode",
      "SLOW",
      "pos",
      "--",
      "--port",
      "x",
    ],
    NO_ENV,
  );
  const port: number = p.values.port;
  const name: string | undefined = p.values.name;
  const tags: string[] = p.values.tag;
  const verbose: boolean = p.values.verbose;
  assert.deepEqual(
    [port, name, tags, verbose, p.values.env, p.values.dir, p.values.mem, p.values.wait],
    [8080, "x", ["a", "b", "c"], true, ["A=1,2", "B=2"], "/srv/x", 2048, 600],
  );
  assert.equal(p.values.mode, "slow", "a choice is matched in any case");
  assert.deepEqual(p.positionals, ["pos", "--port", "x"], "nothing after -- is an option");
  const env = parseFlags(TABLE, [], envOf({ T_TAG: "b, c", T_VERBOSE: "yes", T_MEM: "512" }));
  assert.deepEqual([env.values.tag, env.values.verbose, env.values.mem], [["b", "c"], true, 512]);
  assert.deepEqual(
    parseFlags(TABLE, ["--no-verbose"], envOf({ T_VERBOSE: "1" })).values.verbose,
    false,
  );
  const none = parseFlags(TABLE, [], NO_ENV).values;
  assert.deepEqual([none.tag, none.env, none.verbose, none.name], [[], [], false, undefined]);
});

Deno.test("bad values: one line naming the option or its env twin", () => {
  const cases: [string[], Record<string, string>, string][] = [
    [["--port", "x"], {}, `--port must be a whole number, got "x"`],
    [["--port", "70000"], {}, "--port must be between 0 and 65535, got 70000"],
    [[], { T_PORT: "-1" }, "T_PORT (--port) must be between 0 and 65535, got -1"],
    [["--mode", "medium"], {}, `--mode must be one of fast, slow, got "medium"`],
    [["--tag", "a,z"], {}, `--tag must be one of a, b, c, got "z"`],
    [[], { T_VERBOSE: "maybe" }, `T_VERBOSE (--verbose) must be true or false, got "maybe"`],
    [["--dir", "rel"], {}, `--dir must be an absolute path, got "rel"`],
    [["--dir", "/a\nb"], {}, "--dir must not contain control characters"],
    [["--mem", "64"], {}, "--mem must be between 256 and 4096 MiB, got 64 MiB"],
    [["--mem", "8Gi"], {}, "--mem must be between 256 and 4096 MiB, got 8192 MiB"],
    [
      ["--mem", "1.5Gi"],
      {},
      `--mem must be a whole number of MiB (or a size such as 512Mi, 2Gi), got "1.5Gi"`,
    ],
    [
      ["--mem", "1000Ki"],
      {},
      `--mem must be a whole number of MiB (or a size such as 512Mi, 2Gi), got "1000Ki"`,
    ],
    [["--wait", "0"], {}, "--wait must be between 1 and 86400 seconds, got 0 seconds"],
    [
      ["--wait", "1w"],
      {},
      `--wait must be seconds or a duration such as 90s, 10m, 1h, 2d, got "1w"`,
    ],
    [["--code", "ABC"], {}, "--code must be lower-case"],
    [["--bogus"], {}, "unknown option --bogus (see --help)"],
    [["--verbos"], {}, "unknown option --verbos (did you mean --verbose?) (see --help)"],
    [["-x"], {}, "unknown option -x (see --help)"],
    [["--port"], {}, "--port needs a value (see --help)"],
    [["--name", "--port", "1"], {}, "--name needs a value (see --help)"],
    [["--verbose=yes"], {}, "--verbose takes no value (see --help)"],
  ];
  for (const [argv, env, message] of cases) assert.equal(error(argv, envOf(env)), message);
});

Deno.test("required options, and secrets that stay off the command line and out of messages", () => {
  const table = {
    id: { kind: "string", env: "T_ID", required: true, help: "Id" },
    key: { kind: "int", env: "T_KEY", secret: true, help: "Key" },
  } satisfies FlagTable;
  assert.equal(error([], NO_ENV, table), "--id (or T_ID) is required");
  assert.equal(parseFlags(table, [], envOf({ T_ID: "x" })).values.id, "x");
  assert.equal(
    error(["--id", "x", "--key", "s3cret"], NO_ENV, table),
    "--key must be a whole number",
  );
  assert.equal(
    error(["--token", "s3cret"]),
    "--token is not accepted on the command line, where every user can read it (ps): " +
      "set T_TOKEN instead",
  );
  assert.equal(parseFlags(TABLE, [], envOf({ T_TOKEN: "s3cret" })).values.token, "s3cret");
});

Deno.test("--help wins over bad values and missing required options; so does an action", () => {
  const table = {
    id: { kind: "string", env: "T_ID", required: true, help: "Id" },
    version: { kind: "bool", action: true, help: "Print the version" },
  } satisfies FlagTable;
  assert.equal(parseFlags(table, ["--help"], NO_ENV).help, true);
  assert.equal(parseFlags(table, ["--version"], NO_ENV).values.version, true);
  assert.equal(error(["--no-version"], NO_ENV, table), "--id (or T_ID) is required");
  const p = parseFlags(table, [], envOf({ T_ID: "x" }));
  assert.deepEqual([givenAs(table, p.from, "id"), p.from.version], ["T_ID", "default"]);
  const q = parseFlags(table, ["--id=y"], envOf({ T_ID: "x" }));
  assert.deepEqual([givenAs(table, q.from, "id"), q.values.id], ["--id", "y"]);
  assert.equal(parseFlags(TABLE, ["--port", "x", "-h"], NO_ENV).help, true);
  assert.equal(parseFlags(TABLE, [], NO_ENV).help, false);
});

Deno.test("tokens: values, short groups, unknown options and their problems", () => {
  const tokens = tokenize(TABLE, ["-vn", "x", "--bogus=1", "pos", "-e"]);
  assert.deepEqual(tokens.map((t) => [t.kind, t.index, tokenProblem(TABLE, t)]), [
    ["option", 0, undefined],
    ["option", 0, undefined],
    ["unknown", 2, "unknown option --bogus"],
    ["positional", 3, undefined],
    ["option", 4, "-e needs a value"],
  ]);
});
