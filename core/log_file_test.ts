import assert from "node:assert/strict";
import { LOG_LINE_MAX_BYTES, RotatingLogFile } from "./log_file.ts";

Deno.test("log file: appends lines, private to its owner", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/gateway.log`;
    await Deno.writeTextFile(path, "earlier\n", { mode: 0o600 });
    const f = new RotatingLogFile({ path, maxBytes: 4096 });
    f.write("one");
    f.write("two");
    f.close();
    assert.equal(await Deno.readTextFile(path), "earlier\none\ntwo\n");
    const fresh = new RotatingLogFile({ path: `${dir}/new.log` });
    fresh.close();
    assert.equal((await Deno.stat(`${dir}/new.log`)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("log file: 100 times the cap written, two files of at most the cap remain", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/gateway.log`;
    const cap = 8192;
    const f = new RotatingLogFile({ path, maxBytes: cap });
    const line = "x".repeat(99); // 100 bytes with the newline
    for (let i = 0; i < (100 * cap) / 100; i++) f.write(`${line.slice(String(i).length)}${i}`);
    f.close();
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names.sort(), ["gateway.log", "gateway.log.1"]);
    const cur = await Deno.readTextFile(path);
    const prev = await Deno.readTextFile(`${path}.1`);
    assert.ok(cur.length <= cap && prev.length <= cap, `${cur.length} ${prev.length}`);
    assert.ok(prev.length > cap - 100, "the previous part was filled up to the cap");
    // The newest line is last in FILE, and FILE.1 ends where FILE begins.
    const last = Number(cur.trimEnd().split("\n").at(-1)!.replace(/^x+/, ""));
    assert.equal(last, 100 * cap / 100 - 1);
    const firstCur = Number(cur.split("\n")[0].replace(/^x+/, ""));
    const lastPrev = Number(prev.trimEnd().split("\n").at(-1)!.replace(/^x+/, ""));
    assert.equal(firstCur, lastPrev + 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("log file: a huge line is cut; a vanished directory only drops lines", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/g.log`;
    const f = new RotatingLogFile({ path, maxBytes: 1024 * 1024 });
    f.write("y".repeat(LOG_LINE_MAX_BYTES * 3));
    const text = await Deno.readTextFile(path);
    assert.equal(new TextEncoder().encode(text).length, LOG_LINE_MAX_BYTES);
    assert.ok(text.endsWith(`[line cut at ${LOG_LINE_MAX_BYTES} bytes]\n`));
    await Deno.remove(dir, { recursive: true });
    f.write("dropped");
    f.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
