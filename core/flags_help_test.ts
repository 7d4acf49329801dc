import assert from "node:assert/strict";
import type { FlagTable } from "./flags.ts";
import { renderHelp } from "./flags_help.ts";

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
  tag: { kind: "list", env: "T_TAG", repeatable: true, choices: ["a", "b", "c"], help: "Tags" },
  mem: { kind: "size", unit: "MiB", min: 256, max: 4096, env: "T_MEM", default: 1024, help: "Mem" },
  wait: { kind: "duration", min: 1, max: 86400, default: 300, help: "Wait" },
  token: {
    kind: "string",
    env: "T_TOKEN",
    secret: true,
    envOnly: true,
    default: "s3cret",
    help: "Token",
  },
  level: {
    kind: "choice",
    choices: ["error", "warn", "info", "debug", "trace"],
    value: "LEVEL",
    help: "A long description that goes on and on about what the level does, so that it wraps",
    env: "T_LEVEL_WITH_A_LONG_NAME",
  },
} satisfies FlagTable;

Deno.test("help: one layout with every visible option, its facts and env twin", () => {
  const text = renderHelp({
    about: "tool: does things.",
    usage: "tool [OPTIONS]",
    sections: [{ title: "Options", flags: TABLE, help: true }],
    examples: ["tool --port 1"],
  });
  const expectations: RegExp[] = [
    /^tool: does things\.\n\nUsage: tool \[OPTIONS\]\n\nOptions:\n/,
    /^ {6}--port PORT +Port \[0 to 65535; default 8080; env T_PORT\]$/m,
    /^ {6}--mode fast\|slow +Mode \[default fast\]$/m,
    /^ {2}-v, --verbose +Chatty \[env T_VERBOSE\]$/m,
    /^ {6}--tag A,B +Tags \[one of a, b, c; repeatable; env T_TAG\]$/m,
    /^ {6}--mem SIZE +Mem \[256 to 4096 MiB; default 1024 MiB; env T_MEM\]$/m,
    /^ {6}--wait DURATION +Wait \[1s to 86400s; default 300s\]$/m,
    /^ {6}--token VALUE +Token \[env T_TOKEN only\]$/m,
    /^ {2}-h, --help +Show this help$/m,
    /\n\nExamples:\n {2}tool --port 1\n$/,
  ];
  for (const re of expectations) assert.match(text, re);
  const hidden = { old: { kind: "string", hidden: true, help: "Old" } } satisfies FlagTable;
  assert.doesNotMatch(
    renderHelp({ usage: "x", sections: [{ title: "O", flags: hidden }] }),
    /--old/,
  );
});

Deno.test("help: long lines wrap, an env twin stays whole, command rows line up", () => {
  const text = renderHelp({
    usage: ["tool A", "tool B"],
    sections: [
      { title: "Options", flags: TABLE },
      { title: "Commands", rows: [["run", "Run it"], ["stop-all", "Stop everything"]] },
    ],
    footer: "Run 'tool COMMAND --help'.",
  });
  assert.ok(text.split("\n").every((l) => l.length <= 100), "at most 100 columns");
  assert.match(text, /^Usage: tool A\n {7}tool B$/m);
  assert.match(text, /env T_LEVEL_WITH_A_LONG_NAME\]$/m, "never split");
  assert.match(text, /^ {2}run {7}Run it\n {2}stop-all {2}Stop everything$/m);
  assert.match(text, /\n\nRun 'tool COMMAND --help'\.\n$/);
  assert.doesNotMatch(text, /s3cret/, "a secret's default is never shown");
});
