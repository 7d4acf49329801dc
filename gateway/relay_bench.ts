/**
 * In-process benches of the relay plane's byte handling (`deno bench -A
 * gateway/relay_bench.ts`). Each group has a baseline doing the least work
 * that moves the same bytes, so the figures read as overhead:
 *
 * - `GoawayFilter.push` over an HTTP/2 DATA-frame stream cut into 64 KiB
 *   chunks (what the listener sees) vs copying the chunks;
 * - `bridge()` between two in-memory duplex pairs vs `a.pipe(b); b.pipe(a)`;
 * - `RelayFrame` protobuf encode + decode of 4 MiB as 16/64/256 KiB frames
 *   (the serialization grpc-js does per relay frame) vs one 4 MiB copy.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { type Duplex, duplexPair } from "node:stream";
import { bridge } from "../core/bridge.ts";
import { OpenShellClient } from "../core/protocol.ts";
import { GoawayFilter, H2_PREFACE } from "../core/goaway_filter.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- GoawayFilter -----------------------------------------------------------

/** `bytes` of HTTP/2 DATA frames (16 KiB payloads, the default max frame size) after the preface. */
function h2Stream(bytes: number): Uint8Array {
  const out = new Uint8Array(H2_PREFACE.length + bytes + Math.ceil(bytes / (16 * KiB)) * 9);
  out.set(H2_PREFACE);
  let o = H2_PREFACE.length;
  for (let left = bytes; left > 0;) {
    const n = Math.min(16 * KiB, left);
    out.set([n >> 16, (n >> 8) & 0xff, n & 0xff, 0x0, 0, 0, 0, 0, 1], o);
    o += 9 + n;
    left -= n;
  }
  return out;
}

function chunks(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let o = 0; o < bytes.length; o += size) out.push(bytes.subarray(o, o + size));
  return out;
}

const H2_CHUNKS = chunks(h2Stream(4 * MiB), 64 * KiB);
let sink = 0;

Deno.bench({
  name: "copy each 64 KiB chunk (baseline)",
  group: "4 MiB of HTTP/2 DATA frames in 64 KiB chunks",
  baseline: true,
  fn: () => {
    for (const c of H2_CHUNKS) sink += c.slice().length;
  },
});

Deno.bench({
  name: "GoawayFilter.push",
  group: "4 MiB of HTTP/2 DATA frames in 64 KiB chunks",
  fn: () => {
    const filter = new GoawayFilter();
    for (const c of H2_CHUNKS) sink += filter.push(c).length;
  },
});

// ---- bridge -----------------------------------------------------------------

const BLOCK = new Uint8Array(64 * KiB);

/** Writes `bytes` into `from` (with backpressure) and resolves when `to` has read them all. */
function pushThrough(from: Duplex, to: Duplex, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    to.on("data", (c: Uint8Array) => {
      got += c.length;
      if (got >= bytes) resolve();
    });
    to.on("error", reject);
    let left = bytes;
    const more = () => {
      while (left > 0) {
        left -= BLOCK.length;
        if (!from.write(BLOCK)) {
          from.once("drain", more);
          return;
        }
      }
    };
    more();
  });
}

async function throughPairs(connect: (a: Duplex, b: Duplex) => void): Promise<void> {
  const [client, a] = duplexPair();
  const [b, server] = duplexPair();
  connect(a, b);
  await pushThrough(client, server, 8 * MiB);
  await pushThrough(server, client, MiB);
  for (const s of [client, a, b, server]) s.destroy();
}

Deno.bench({
  name: "a.pipe(b); b.pipe(a) (baseline)",
  group: "8 MiB one way + 1 MiB back through two duplex pairs",
  baseline: true,
  // `async` matters: deno bench awaits only functions declared async.
  fn: async () => {
    await throughPairs((a, b) => {
      a.pipe(b);
      b.pipe(a);
    });
  },
});

Deno.bench({
  name: "bridge(a, b)",
  group: "8 MiB one way + 1 MiB back through two duplex pairs",
  fn: async () => {
    await throughPairs((a, b) => {
      bridge(a, b);
    });
  },
});

// ---- RelayFrame serialization -----------------------------------------------

const relayMethod = OpenShellClient.service.RelayStream;
const PAYLOAD = Buffer.from(crypto.getRandomValues(new Uint8Array(64 * KiB)));
const FOUR_MIB = Buffer.concat(Array.from({ length: 64 }, () => PAYLOAD));

Deno.bench({
  name: "copy 4 MiB once (baseline)",
  group: "RelayFrame encode + decode of 4 MiB",
  baseline: true,
  fn: () => {
    sink += Buffer.from(FOUR_MIB).length;
  },
});

for (const frame of [16 * KiB, 64 * KiB, 256 * KiB]) {
  Deno.bench({
    name: `${frame / KiB} KiB frames`,
    group: "RelayFrame encode + decode of 4 MiB",
    fn: () => {
      for (let o = 0; o < FOUR_MIB.length; o += frame) {
        const wire = relayMethod.requestSerialize({
          payload: "data",
          data: FOUR_MIB.subarray(o, o + frame),
        });
        sink += (relayMethod.requestDeserialize(wire) as { data: Uint8Array }).data.length;
      }
    },
  });
}

globalThis.addEventListener("unload", () => {
  if (sink < 0) console.log(sink); // keeps the work observable
});
