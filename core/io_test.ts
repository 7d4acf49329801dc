import assert from "node:assert/strict";
import { writeAll } from "./io.ts";

Deno.test("writeAll: short writes are continued until every byte is written, in order", async () => {
  const got: number[] = [];
  let calls = 0;
  const sink = {
    write(p: Uint8Array): Promise<number> {
      calls++;
      const n = Math.min(3, p.length); // at most 3 bytes a call
      got.push(...p.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  const data = new Uint8Array(10).map((_, i) => i);
  await writeAll(sink, data);
  assert.deepEqual(got, [...data]);
  assert.equal(calls, 4);
  await writeAll(sink, new Uint8Array());
  assert.equal(calls, 4, "nothing to write: no call");
});

Deno.test("writeAll: a failing write rejects", async () => {
  const sink = { write: () => Promise.reject(new Deno.errors.BrokenPipe("gone")) };
  await assert.rejects(writeAll(sink, new Uint8Array(1)), Deno.errors.BrokenPipe);
});
