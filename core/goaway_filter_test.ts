import assert from "node:assert/strict";
import {
  FLAG_END_STREAM,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADERS,
  FRAME_RST_STREAM,
  GoawayFilter,
  H2_PREFACE,
  H2FrameScanner,
  H2StreamTracker,
  looksLikeH2,
  MAX_TRACKED_STREAMS,
} from "./goaway_filter.ts";

function frame(type: number, payload: number[], flags = 0, stream = 1): Uint8Array {
  const len = payload.length;
  return new Uint8Array([
    len >> 16,
    (len >> 8) & 0xff,
    len & 0xff,
    type,
    flags,
    (stream >>> 24) & 0x7f,
    (stream >> 16) & 0xff,
    (stream >> 8) & 0xff,
    stream & 0xff,
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

Deno.test("the scanner reports each frame's type, flags and stream id, for any chunking", () => {
  const rand = rng(7);
  for (let trial = 0; trial < 100; trial++) {
    const want: [number, number, number][] = [];
    const parts: Uint8Array[] = [];
    for (let f = 0; f < 1 + Math.floor(rand() * 10); f++) {
      const h: [number, number, number] = [
        Math.floor(rand() * 10),
        Math.floor(rand() * 256),
        Math.floor(rand() * 0x7fffffff),
      ];
      want.push(h);
      parts.push(frame(h[0], [1, 2, 3].slice(0, Math.floor(rand() * 4)), h[1], h[2]));
    }
    const got: [number, number, number][] = [];
    const scanner = new H2FrameScanner({ onFrame: (t, fl, id) => got.push([t, fl, id]) });
    const input = concat(parts);
    let out: Uint8Array = new Uint8Array();
    for (let pos = 0; pos < input.length;) {
      const n = 1 + Math.floor(rand() * 12);
      out = concat([out, scanner.push(input.subarray(pos, pos + n))]);
      pos += n;
    }
    assert.deepEqual(got, want, `trial ${trial}`);
    assert.deepEqual([...out], [...input], "a scanner without dropGoaway changes nothing");
  }
});

Deno.test("the stream tracker: HEADERS opens, END_STREAM or RST from the server closes", () => {
  const changes: number[] = [];
  const t = new H2StreamTracker((n) => changes.push(n));
  t.client(FRAME_HEADERS, 0, 1);
  t.client(FRAME_HEADERS, 0, 3);
  t.client(FRAME_HEADERS, FLAG_END_STREAM, 3); // client trailers: still open
  t.client(FRAME_DATA, FLAG_END_STREAM, 1); // client half-close: still open
  assert.equal(t.open, 2);
  t.server(FRAME_HEADERS, 0, 1); // response headers
  t.server(FRAME_DATA, 0, 1);
  assert.equal(t.open, 2);
  t.server(FRAME_HEADERS, FLAG_END_STREAM, 1); // trailers end stream 1
  t.client(FRAME_RST_STREAM, 0, 3); // the client cancels stream 3
  assert.equal(t.open, 0);
  t.client(FRAME_HEADERS, 0, 5);
  t.server(FRAME_RST_STREAM, 0, 5); // refused by the server
  t.client(FRAME_HEADERS, 0, 0); // connection-level frames are ignored
  assert.equal(t.open, 0);
  assert.deepEqual(changes, [1, 2, 1, 0, 1, 0]);
});

Deno.test("the stream tracker never records more than MAX_TRACKED_STREAMS", () => {
  const t = new H2StreamTracker();
  for (let id = 1; id < 4 * MAX_TRACKED_STREAMS; id += 2) t.client(FRAME_HEADERS, 0, id);
  assert.equal(t.open, MAX_TRACKED_STREAMS);
});

Deno.test("GoawayFilter reports frames to its listener, the removed GOAWAY included", () => {
  const seen: number[] = [];
  const filter = new GoawayFilter((type) => seen.push(type));
  filter.push(concat([H2_PREFACE, frame(FRAME_HEADERS, [1]), frame(FRAME_GOAWAY, [0, 0])]));
  assert.deepEqual(seen, [FRAME_HEADERS, FRAME_GOAWAY]);
  assert.equal(filter.dropped, 1);
});
