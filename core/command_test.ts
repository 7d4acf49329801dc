import assert from "node:assert/strict";
import { runCommand } from "./command.ts";

Deno.test("runCommand: exit status, stdout and stderr as text; stdin written and closed", async () => {
  const r = await runCommand(["sh", "-c", 'cat; echo "to err" >&2; exit 3'], {
    stdin: "piped in\n",
  });
  assert.deepEqual(r, { code: 3, stdout: "piped in\n", stderr: "to err\n" });
  // Without stdin the program reads end-of-file at once.
  assert.deepEqual(await runCommand(["sh", "-c", "cat; echo done"]), {
    code: 0,
    stdout: "done\n",
    stderr: "",
  });
});

Deno.test("runCommand: env is added to this environment, or is the whole of it with clearEnv", async () => {
  const show = ["/bin/sh", "-c", 'echo "${OS_RC_X:-unset} ${HOME:-nohome}"'];
  const added = await runCommand(show, { env: { OS_RC_X: "x" } });
  assert.match(added.stdout, /^x \S+/);
  assert.notEqual(added.stdout, "x nohome\n");
  const only = await runCommand(show, { env: { OS_RC_X: "y" }, clearEnv: true });
  assert.equal(only.stdout, "y nohome\n");
  const dir = await Deno.makeTempDir();
  try {
    const pwd = await runCommand(["pwd"], { cwd: dir });
    assert.equal(pwd.stdout.trim(), await Deno.realPath(dir));
  } finally {
    await Deno.remove(dir);
  }
});

Deno.test("runCommand: a program past its timeout is killed", async () => {
  const r = await runCommand(["sleep", "30"], { timeoutMs: 100 });
  assert.equal(r.code, 137);
});
