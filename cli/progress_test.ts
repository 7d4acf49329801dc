import assert from "node:assert/strict";
import { createStyle } from "./output.ts";
import { Progress } from "./progress.ts";

Deno.test("plain progress: one line per change, with elapsed time", () => {
  let now = 1000;
  const out: string[] = [];
  const p = new Progress({
    write: (t) => out.push(t),
    live: false,
    style: createStyle(false),
    now: () => now,
  });
  p.phase("Provisioning");
  now += 1500;
  p.phase("Provisioning");
  p.phase("Provisioning", "Starting: VM is starting");
  p.note("event: scheduled");
  now += 2000;
  p.finish("Ready");
  assert.deepEqual(out, [
    "[  0.0s] Provisioning\n",
    "[  1.5s] Provisioning (Starting: VM is starting)\n",
    "[  1.5s] event: scheduled\n",
    "Ready (3.5s)\n",
  ]);
});

Deno.test("live progress redraws one line in place and clears it for notes", () => {
  const out: string[] = [];
  const p = new Progress({
    write: (t) => out.push(t),
    live: true,
    style: createStyle(false),
    now: () => 0,
    tickMs: 10_000,
  });
  p.phase("Provisioning");
  p.note("hello");
  p.stop();
  assert.equal(out[0], "\r\x1b[2K⠋ Provisioning 0.0s");
  assert.deepEqual(out.slice(1, 3), ["\r\x1b[2K", "hello\n"]);
  assert.ok(out[3].startsWith("\r\x1b[2K⠙ Provisioning"));
  assert.equal(out.at(-1), "\r\x1b[2K", "the live line is removed on stop");
});
