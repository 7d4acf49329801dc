import assert from "node:assert/strict";
import { FRAME_GOAWAY, GoawayFilter, H2_PREFACE, looksLikeH2 } from "./goaway_filter.ts";

function frame(type: number, payload: number[]): Uint8Array {
  const len = payload.length;
  return new Uint8Array([
    len >> 16,
    (len >> 8) & 0xff,
    len & 0xff,
    type,
    0,
    0,
    0,
    0,
    1,
    ...payload,
  ]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Deterministic pseudo-random numbers. */
function rng(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
}

Deno.test("GOAWAY frames are removed, everything else passes unchanged, for any chunking", () => {
  const rand = rng(42);
  for (let trial = 0; trial < 200; trial++) {
    const frames: Uint8Array[] = [H2_PREFACE];
    const expected: Uint8Array[] = [H2_PREFACE];
    let goaways = 0;
    const count = 1 + Math.floor(rand() * 12);
    for (let f = 0; f < count; f++) {
      const type = rand() < 0.25 ? FRAME_GOAWAY : Math.floor(rand() * 10);
      const payload = Array.from(
        { length: Math.floor(rand() * 40) },
        () => Math.floor(rand() * 256),
      );
      const fr = frame(type, payload);
      frames.push(fr);
      if (type === FRAME_GOAWAY) goaways++;
      else expected.push(fr);
    }
    const input = concat(frames);
    const filter = new GoawayFilter();
    const out: Uint8Array[] = [];
    let pos = 0;
    while (pos < input.length) {
      const n = 1 + Math.floor(rand() * 20);
      out.push(filter.push(input.subarray(pos, pos + n)));
      pos += n;
    }
    assert.deepEqual([...concat(out)], [...concat(expected)], `trial ${trial}`);
    assert.equal(filter.dropped, goaways);
  }
});

Deno.test("a chunk without GOAWAY comes back as the same object (no copy)", () => {
  const filter = new GoawayFilter();
  const chunk = concat([H2_PREFACE, frame(0, [1, 2, 3]), frame(4, [])]);
  assert.equal(filter.push(chunk), chunk);
});

Deno.test("a GOAWAY split across chunks is removed and its neighbours kept", () => {
  const filter = new GoawayFilter();
  filter.push(H2_PREFACE);
  const data = frame(0, [9, 9]);
  const goaway = frame(FRAME_GOAWAY, [0, 0, 0, 1, 0, 0, 0, 0]);
  const all = concat([data, goaway, data]);
  const parts = [all.subarray(0, 13), all.subarray(13, 15), all.subarray(15)];
  const out = concat(parts.map((p) => filter.push(p)));
  assert.deepEqual([...out], [...concat([data, data])]);
  assert.equal(filter.dropped, 1);
});

Deno.test("looksLikeH2 recognises the client preface, even partially", () => {
  assert.equal(looksLikeH2(H2_PREFACE), true);
  assert.equal(looksLikeH2(H2_PREFACE.subarray(0, 3)), true);
  assert.equal(looksLikeH2(new TextEncoder().encode("CONNECT /x HTTP/1.1\r\n")), false);
  assert.equal(looksLikeH2(new Uint8Array()), false);
});
