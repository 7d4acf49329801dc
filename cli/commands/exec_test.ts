import assert from "node:assert/strict";
import { readStdin, timeoutMessage } from "./exec.ts";

Deno.test("timeoutMessage: only a 124 that arrived once --timeout had passed", () => {
  assert.equal(
    timeoutMessage(124, 5, 5_300),
    "the command did not finish within 5 s (--timeout) and was stopped",
  );
  assert.equal(timeoutMessage(124, 5, 200), undefined, "the command exited 124 by itself");
  assert.equal(timeoutMessage(124, 0, 60_000), undefined, "no --timeout");
  assert.equal(timeoutMessage(0, 5, 6_000), undefined);
});

Deno.test("readStdin: reads everything, refuses more than 4 MiB", async () => {
  const chunks = [new Uint8Array([1, 2]), new Uint8Array([3])];
  const small = {
    read: (p: Uint8Array) => {
      const c = chunks.shift();
      if (!c) return Promise.resolve(null);
      p.set(c);
      return Promise.resolve(c.length);
    },
  };
  assert.deepEqual(await readStdin(small), new Uint8Array([1, 2, 3]));
  const endless = { read: (p: Uint8Array) => Promise.resolve(p.length) };
  await assert.rejects(readStdin(endless), /stdin is larger than 4 MiB/);
});
