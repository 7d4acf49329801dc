import assert from "node:assert/strict";
import { FlagError, type FlagSpec, parseFlags, renderHelp } from "./flags.ts";

const specs: FlagSpec[] = [
  {
    name: "port",
    type: "integer",
    env: "T_PORT",
    default: 8080,
    min: 0,
    max: 65535,
    description: "Port",
  },
  { name: "mode", type: "string", choices: ["a", "b"], default: "a", description: "Mode" },
  { name: "verbose", type: "boolean", env: "T_VERBOSE", default: false, description: "Chatty" },
  { name: "name", type: "string", description: "Name", short: "n" },
];

const noEnv = (_k: string): string | undefined => undefined;

Deno.test("flags beat env twins, env beats defaults", () => {
  const env = (k: string) => ({ T_PORT: "9000", T_VERBOSE: "yes" } as Record<string, string>)[k];
  assert.deepEqual(parseFlags(specs, [], env).values, {
    port: 9000,
    mode: "a",
    verbose: true,
    name: undefined,
  });
  const p = parseFlags(
    specs,
    ["--port", "1", "--no-verbose", "-n", "x", "pos", "--", "--tail"],
    env,
  );
  assert.deepEqual(p.values, { port: 1, mode: "a", verbose: false, name: "x" });
  assert.deepEqual(p.positionals, ["pos", "--tail"]);
});

Deno.test("bad values and unknown flags give one-line messages", () => {
  const err = (args: string[], env = noEnv) => {
    try {
      parseFlags(specs, args, env);
    } catch (e) {
      assert.ok(e instanceof FlagError);
      return e.message;
    }
    throw new Error("expected a FlagError");
  };
  assert.equal(err(["--port", "x"]), `--port: expected a whole number, got "x"`);
  assert.equal(err(["--port", "70000"]), "--port: must be at most 65535, got 70000");
  assert.equal(err(["--mode", "c"]), `--mode: expected one of a, b, got "c"`);
  assert.equal(err(["--bogus"]), "unknown flag --bogus (see --help)");
  assert.equal(err(["--port"]), "--port needs a value");
  assert.equal(
    err([], (k) => k === "T_VERBOSE" ? "maybe" : undefined),
    `T_VERBOSE: expected true or false, got "maybe"`,
  );
});

Deno.test("help lists every flag with env twin and default", () => {
  const text = renderHelp("usage: x [flags]", specs);
  assert.match(text, /--port PORT|--port INTEGER/);
  assert.match(text, /env T_PORT; default 8080/);
  assert.match(text, /one of a\|b/);
  assert.match(text, /-h, --help/);
  assert.equal(parseFlags(specs, ["--help"], noEnv).help, true);
});
