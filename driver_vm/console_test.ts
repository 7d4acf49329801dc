import assert from "node:assert/strict";
import { LineSplitter, RotatingLog } from "./console.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("LineSplitter: lines across chunks, CR and escapes removed, blanks skipped", () => {
  const s = new LineSplitter();
  assert.deepEqual(s.push(enc("\x1b[?7l\x1b[2Ja\r\n\n  \nb")), ["a"]);
  assert.deepEqual(s.push(enc("c  \n")), ["bc"]);
  assert.deepEqual(s.push(enc("tail")), []);
  assert.deepEqual(s.flush(), ["tail"]);
  assert.deepEqual(s.flush(), []);
});

Deno.test("LineSplitter: C1, OSC 52 and DCS never reach a line", () => {
  const s = new LineSplitter();
  const lines = s.push(enc("a\x1b]52;c;ZXZpbA==\x07b\u009b31mc\x1bP1$r\x1b\\d\u0085e\n"));
  assert.deepEqual(lines, ["abcde"]);
});

Deno.test("LineSplitter: a long line keeps its first bytes and says how many were cut", () => {
  const s = new LineSplitter(10);
  assert.deepEqual(s.push(enc("0123456789abcdef")), []);
  assert.deepEqual(s.push(enc("ghij\nnext\n")), ["0123456789…[truncated 10 bytes]", "next"]);
  // a multi-byte character cut at the cap counts as cut, never half-decoded
  const u = new LineSplitter(4);
  assert.deepEqual(u.push(enc("abc€def\n")), ["abc…[truncated 6 bytes]"]);
});

Deno.test("LineSplitter: memory stays at the cap however long the line grows", () => {
  const s = new LineSplitter(1024);
  const chunk = new Uint8Array(64 * 1024).fill(0x41);
  for (let i = 0; i < 160; i++) assert.deepEqual(s.push(chunk), []); // 10 MiB, no newline
  const [line] = s.push(enc("\n"));
  assert.equal(line, "A".repeat(1024) + `…[truncated ${160 * 64 * 1024 - 1024} bytes]`);
});

Deno.test("RotatingLog: never past its size; the previous file is kept as .1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "conlog" });
  try {
    const path = `${dir}/console.log`;
    const log = new RotatingLog(path, { maxBytes: 1000 });
    for (let i = 0; i < 25; i++) await log.write(enc(`${String(i).padStart(2, "0")}`.repeat(50)));
    await log.close();
    const current = await Deno.readTextFile(path);
    const previous = await Deno.readTextFile(`${path}.1`);
    assert.ok(current.length <= 1000 && previous.length <= 1000);
    assert.equal(
      previous,
      Array.from({ length: 10 }, (_, i) => String(i + 10).repeat(50)).join(""),
    );
    assert.equal(current, Array.from({ length: 5 }, (_, i) => String(i + 20).repeat(50)).join(""));
    // a reopened log continues the existing file and still rotates at the size
    const again = new RotatingLog(path, { maxBytes: 1000 });
    await again.write(enc("x".repeat(600)));
    await again.close();
    assert.equal((await Deno.readTextFile(`${path}.1`)).length, 500);
    assert.equal(await Deno.readTextFile(path), "x".repeat(600));
    // writes after the directory went away are dropped quietly
    await Deno.remove(dir, { recursive: true });
    const gone = new RotatingLog(path);
    await gone.write(enc("lost"));
    await gone.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
