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

Deno.test("plain progress: a detail that only gets more precise is not printed twice", () => {
  const out: string[] = [];
  const p = new Progress({
    write: (t) => out.push(t),
    live: false,
    style: createStyle(false),
    now: () => 0,
    tickMs: 0,
  });
  p.phase("Provisioning", "Starting: VM is starting", "Provisioning Starting");
  p.phase("Provisioning", "Starting: VM is starting (accel tcg)", "Provisioning Starting");
  p.phase("Provisioning", "Booting: kernel up", "Provisioning Booting");
  p.stop();
  assert.deepEqual(out, [
    "[  0.0s] Provisioning (Starting: VM is starting)\n",
    "[  0.0s] Provisioning (Booting: kernel up)\n",
  ]);
});

Deno.test("plain progress: a 'still' line after each quiet period, none while lines come", () => {
  let now = 0;
  const out: string[] = [];
  const p = new Progress({
    write: (t) => out.push(t),
    live: false,
    style: createStyle(false),
    now: () => now,
    tickMs: 0,
    quietMs: 5000,
  });
  p.phase("Provisioning", "Starting: VM is starting (accel tcg)");
  for (let t = 1000; t <= 12_000; t += 1000) {
    now = t;
    if (t === 7000) p.note("Normal: Started: qemu started (accel tcg)");
    p.tick();
  }
  p.stop();
  now = 30_000;
  p.tick();
  assert.deepEqual(out, [
    "[  0.0s] Provisioning (Starting: VM is starting (accel tcg))\n",
    "[  5.0s] still Provisioning (Starting: VM is starting (accel tcg))\n",
    "[  7.0s] Normal: Started: qemu started (accel tcg)\n",
    "[ 12.0s] still Provisioning (Starting: VM is starting (accel tcg))\n",
  ]);
});
