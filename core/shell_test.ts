import assert from "node:assert/strict";
import { buildRemoteCommand, shellJoin, shellQuote } from "./shell.ts";

async function shEcho(line: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", `printf '%s\\n' ${line}`] }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("shellQuote leaves safe words alone and quotes the rest", () => {
  assert.equal(shellQuote("echo"), "echo");
  assert.equal(shellQuote("/usr/bin/x-y_z.1"), "/usr/bin/x-y_z.1");
  assert.equal(shellQuote(""), "''");
  assert.equal(shellQuote("a b"), "'a b'");
  assert.equal(shellQuote("it's"), `'it'"'"'s'`);
});

Deno.test("shellJoin round-trips awkward words through a real sh", async () => {
  const words = ["plain", "two words", "it's", "$HOME", "`id`", 'a"b', "", "semi;colon", "*"];
  assert.equal(await shEcho(shellJoin(words)), words.map((w) => w + "\n").join(""));
});

Deno.test("buildRemoteCommand sorts env, quotes values and prefixes cd", () => {
  assert.equal(
    buildRemoteCommand({
      command: ["sh", "-c", "echo $B $A"],
      workdir: "/tmp/my dir",
      environment: { B: "2 2", A: "1" },
    }),
    `cd '/tmp/my dir' && A=1 B='2 2' sh -c 'echo $B $A'`,
  );
  assert.equal(buildRemoteCommand({ command: ["true"] }), "true");
});
