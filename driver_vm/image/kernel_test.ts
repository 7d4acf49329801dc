import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { bzImagePayload, hasPvhEntry, lz4LegacyDecode, pvhKernel } from "./kernel.ts";

/** 50 lines of text as `lz4 -l -9` (LZ4 1.9.4) writes it: 3850 bytes in 71. */
const SAMPLE_LINE =
  "hello hello hello hello openshell openshell openshell 0123456789 abc abc abc\n";
const SAMPLE_LZ4 = new Uint8Array(Buffer.from(
  "AiFMGD8AAABuaGVsbG8gBgBQb3BlbnMLAA8KAALkMDEyMzQ1Njc4OSBhYmMEAB8KTQD//////////////////7NQIGFiYwo=",
  "base64",
));

/** An x86-64 ELF header with one PT_NOTE segment holding `notes`. */
function elf(notes: { name: string; type: number; desc?: number }[]): Uint8Array {
  const enc = new TextEncoder();
  const parts = notes.map((n) => {
    const name = enc.encode(n.name + "\0");
    const nameLen = Math.ceil(name.length / 4) * 4;
    const b = new Uint8Array(12 + nameLen + 4);
    const v = new DataView(b.buffer);
    v.setUint32(0, name.length, true);
    v.setUint32(4, 4, true);
    v.setUint32(8, n.type, true);
    b.set(name, 12);
    v.setUint32(12 + nameLen, n.desc ?? 0x1000850, true);
    return b;
  });
  const notesLen = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(64 + 56 + notesLen);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  v.setUint16(18, 62, true); // EM_X86_64
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setUint16(54, 56, true); // e_phentsize
  v.setUint16(56, 1, true); // e_phnum
  v.setUint32(64, 4, true); // PT_NOTE
  v.setBigUint64(64 + 8, 120n, true); // p_offset
  v.setBigUint64(64 + 32, BigInt(notesLen), true); // p_filesz
  let at = 120;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A minimal bzImage: a setup header (protocol 2.15) and `payload` where it says. */
function bzImage(payload: Uint8Array): Uint8Array {
  const setupSectors = 1;
  const start = (setupSectors + 1) * 512;
  const out = new Uint8Array(start + 16 + payload.length);
  const v = new DataView(out.buffer);
  out[0x1f1] = setupSectors;
  v.setUint32(0x202, 0x53726448, true); // "HdrS"
  v.setUint16(0x206, 0x20f, true);
  v.setUint32(0x248, 16, true); // payload_offset
  v.setUint32(0x24c, payload.length, true);
  out.set(payload, start + 16);
  return out;
}

/** `data` as one legacy LZ4 frame of literals only (a valid, if uncompressed, block). */
function lz4Literals(data: Uint8Array): Uint8Array {
  const extra: number[] = [];
  let n = data.length - 15;
  while (n >= 255) {
    extra.push(255);
    n -= 255;
  }
  extra.push(n);
  const block = new Uint8Array([0xf0, ...extra, ...data]);
  const out = new Uint8Array(8 + block.length + 4);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0x184c2102, true);
  v.setUint32(4, block.length, true);
  out.set(block, 8);
  v.setUint32(8 + block.length, data.length, true); // the kernel's appended size
  return out;
}

Deno.test("kernel: LZ4 legacy frames decode (overlapping matches, long runs)", () => {
  const text = new TextDecoder().decode(lz4LegacyDecode(SAMPLE_LZ4));
  assert.equal(text, SAMPLE_LINE.repeat(50));
});

Deno.test("kernel: malformed LZ4 and output past the bound are refused", () => {
  assert.throws(() => lz4LegacyDecode(new Uint8Array([1, 2, 3, 4])), /not LZ4/);
  const bad = SAMPLE_LZ4.slice();
  bad[15] = 0xff; // the first match offset now points before the start
  bad[16] = 0xff;
  assert.throws(() => lz4LegacyDecode(bad), /LZ4/);
  assert.throws(() => lz4LegacyDecode(SAMPLE_LZ4, 1000), /more than 1000 bytes/);
});

Deno.test("kernel: the PVH note is found, and only in a 64-bit x86 ELF", () => {
  assert.equal(hasPvhEntry(elf([{ name: "Xen", type: 6 }, { name: "Xen", type: 18 }])), true);
  assert.equal(hasPvhEntry(elf([{ name: "Xen", type: 6 }])), false);
  assert.equal(hasPvhEntry(elf([{ name: "GNU", type: 18 }])), false);
  const arm = elf([{ name: "Xen", type: 18 }]);
  new DataView(arm.buffer).setUint16(18, 183, true); // EM_AARCH64
  assert.equal(hasPvhEntry(arm), false);
  assert.equal(hasPvhEntry(new Uint8Array(10)), false);
});

Deno.test("kernel: a bzImage with an LZ4 PVH ELF gives the ELF; anything else gives nothing", () => {
  const pvh = elf([{ name: "Xen", type: 18 }]);
  const image = bzImage(lz4Literals(pvh));
  assert.deepEqual(bzImagePayload(image)?.length, lz4Literals(pvh).length);
  assert.deepEqual(pvhKernel(image), pvh);
  assert.equal(pvhKernel(bzImage(lz4Literals(elf([{ name: "Xen", type: 6 }])))), undefined);
  assert.equal(pvhKernel(bzImage(new Uint8Array([0x1f, 0x8b, 8, 0]))), undefined, "gzip");
  assert.equal(pvhKernel(new Uint8Array(4096)), undefined, "no setup header");
});
