import assert from "node:assert/strict";
import {
  capLine,
  MAX_LINE_BYTES,
  stripControls,
  truncateForEcho,
  truncateUtf8,
  utf8Length,
} from "./text.ts";

const enc = (s: string) => new TextEncoder().encode(s).length;

Deno.test("utf8Length agrees with TextEncoder, lone surrogates included", () => {
  for (const s of ["", "abc", "é", "€uro", "😀x", "a\ud800b", "\udc00", "\ud83d"]) {
    assert.equal(utf8Length(s), enc(s), JSON.stringify(s));
  }
});

Deno.test("truncateUtf8: short text is returned as is; long text is cut on a character", () => {
  assert.deepEqual(truncateUtf8("hello", 8), { text: "hello", cutBytes: 0 });
  assert.deepEqual(truncateUtf8("hello", 5), { text: "hello", cutBytes: 0 });
  assert.deepEqual(truncateUtf8("hello!", 5), { text: "hello", cutBytes: 1 });
  // "€" is 3 bytes: 4 bytes of budget keep "a€" (4), not half a character
  assert.deepEqual(truncateUtf8("a€€", 5), { text: "a€", cutBytes: 3 });
  assert.deepEqual(truncateUtf8("😀😀", 5), { text: "😀", cutBytes: 4 });
  assert.deepEqual(truncateUtf8("abc", 0), { text: "", cutBytes: 3 });
});

Deno.test("capLine: at most MAX_LINE_BYTES plus a marker giving the bytes cut", () => {
  const line = "x".repeat(1024 * 1024);
  const capped = capLine(line);
  assert.equal(
    capped,
    "x".repeat(MAX_LINE_BYTES) + `…[truncated ${1024 * 1024 - MAX_LINE_BYTES} bytes]`,
  );
  assert.equal(capLine("short"), "short");
  assert.equal(capLine("x".repeat(MAX_LINE_BYTES)), "x".repeat(MAX_LINE_BYTES), "exactly the cap");
});

Deno.test("truncateForEcho: short ids unchanged, long ones cut with their length", () => {
  assert.equal(truncateForEcho("sandbox-1"), "sandbox-1");
  const long = "a".repeat(1024 * 1024);
  const echoed = truncateForEcho(long);
  assert.equal(echoed, "a".repeat(128) + "…(1048576 chars)");
  assert.equal(truncateForEcho("abcdef", 3), "abc…(6 chars)");
  // a surrogate pair at the cut is not split
  assert.equal(truncateForEcho("ab😀cd", 3), "ab…(6 chars)");
});

Deno.test("stripControls: every C0/C1 control goes except tab and newline", () => {
  assert.equal(
    stripControls("plain text\twith tab\nand newline"),
    "plain text\twith tab\nand newline",
  );
  // CSI (colour, cursor, erase), in its ESC and 8-bit forms
  assert.equal(stripControls("\x1b[31mred\x1b[0m \x1b[2J\x1b[?25l!"), "red !");
  assert.equal(stripControls("\x9b31mred\x9b0m"), "red");
  // OSC 52 (clipboard write) ended by BEL or ST, OSC 8 hyperlink, window title
  assert.equal(stripControls("a\x1b]52;c;ZXZpbA==\x07b"), "ab");
  assert.equal(stripControls("a\x1b]0;title\x1b\\b"), "ab");
  assert.equal(stripControls("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
  assert.equal(stripControls("a\x9d52;c;ZXZpbA==\x9cb"), "ab");
  // DCS, SOS, PM, APC strings
  assert.equal(stripControls('a\x1bP$q"p\x1b\\b'), "ab");
  assert.equal(stripControls("a\x90payload\x9cb"), "ab");
  assert.equal(stripControls("a\x1b_apc\x1b\\b\x1b^pm\x1b\\c\x1bXsos\x1b\\d"), "abcd");
  // an unterminated string runs to the end; a lone ESC goes
  assert.equal(stripControls("safe\x1b]52;c;AAAA"), "safe");
  assert.equal(stripControls("a\x1bb\x1b"), "a");
  // two-character escapes (charset selection, RIS)
  assert.equal(stripControls("\x1b(0q\x1bcok"), "qok");
  // remaining C0, DEL and C1 controls
  assert.equal(stripControls("a\rb\bc\x00d\x07e\x7ff\x85g\x8dh\x9ai"), "abcdefghi");
  // printable non-ASCII stays
  assert.equal(stripControls("é 😀 \u00a0 ü"), "é 😀 \u00a0 ü");
  for (let c = 0; c < 0xa0; c++) {
    const out = stripControls(`<${String.fromCharCode(c)}>`);
    const keep = c === 9 || c === 10 || (c >= 0x20 && c < 0x7f);
    assert.equal(out.length === 3, keep, `U+${c.toString(16)}`);
  }
});
