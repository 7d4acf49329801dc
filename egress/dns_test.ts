import assert from "node:assert/strict";
import dnsPacketModule from "dns-packet";
import { Buffer } from "node:buffer";
import { Logger } from "../core/log.ts";
import { answerQuery, type DnsContext, MAX_DNS_MESSAGE, Rcode } from "./dns.ts";
import { PolicyTable } from "./policies.ts";
import {
  closedByPeer,
  openGuest,
  readToEnd,
  startTestEgress,
  tableResolver,
  writeAll,
} from "./testing.ts";

// deno-lint-ignore no-explicit-any
const dnsPacket = dnsPacketModule as any;

function query(name: string, type = "A", id = 4242): Uint8Array {
  return new Uint8Array(dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name }],
  }));
}

// deno-lint-ignore no-explicit-any
function decode(bytes: Uint8Array): any {
  return dnsPacket.decode(Buffer.from(bytes));
}

function ctx(): DnsContext {
  const policies = new PolicyTable();
  policies.apply("sb1", 1, {
    network_policies: {
      pypi: {
        endpoints: [{ host: "pypi.org", port: 443 }, { host: "**.pythonhosted.org", port: 443 }],
      },
      db: { endpoints: [{ host: "db.corp", port: 5432, allowed_ips: ["10.1.0.0/16"] }] },
    },
  });
  return {
    policies,
    resolve: tableResolver({
      "pypi.org": ["151.101.0.223", "2a04:4e42::223", "127.0.0.1", "::1"],
      "files.pythonhosted.org": ["151.101.64.223"],
      "db.corp": ["10.1.2.3", "10.2.0.1"],
    }),
    hostAddrs: () => ["192.0.2.50"],
    log: new Logger({ level: "error", sink: () => {} }),
  };
}

Deno.test("dns: allowed names get their vetted addresses; everything else NXDOMAIN", async () => {
  const c = ctx();
  const a = decode((await answerQuery(c, "sb1", query("pypi.org")))!);
  assert.equal(a.type, "response");
  assert.equal(a.id, 4242);
  assert.equal(a.rcode, "NOERROR");
  assert.equal(a.flag_rd, true);
  assert.deepEqual(a.questions, [{ name: "pypi.org", type: "A", class: "IN" }]);
  assert.deepEqual(a.answers.map((x: { data: string; ttl: number }) => [x.data, x.ttl]), [[
    "151.101.0.223",
    30,
  ]]);
  const aaaa = decode((await answerQuery(c, "sb1", query("PyPI.org.", "AAAA")))!);
  assert.deepEqual(aaaa.answers.map((x: { data: string }) => x.data), ["2a04:4e42::223"]);
  const deep = decode((await answerQuery(c, "sb1", query("files.pythonhosted.org")))!);
  assert.deepEqual(deep.answers.map((x: { data: string }) => x.data), ["151.101.64.223"]);
  // Private addresses only inside allowed_ips.
  const db = decode((await answerQuery(c, "sb1", query("db.corp")))!);
  assert.deepEqual(db.answers.map((x: { data: string }) => x.data), ["10.1.2.3"]);
  for (const name of ["evil.net", "pypi.org.evil.net", "x.pypi.org", "localhost"]) {
    const r = decode((await answerQuery(c, "sb1", query(name)))!);
    assert.equal(r.rcode, "NXDOMAIN", name);
    assert.deepEqual(r.answers, []);
  }
  // Unknown sandbox: NXDOMAIN for everything.
  assert.equal(decode((await answerQuery(c, "sb-unknown", query("pypi.org")))!).rcode, "NXDOMAIN");
  // Other types: empty NOERROR for an allowed name, NXDOMAIN otherwise.
  const mx = decode((await answerQuery(c, "sb1", query("pypi.org", "MX")))!);
  assert.equal(mx.rcode, "NOERROR");
  assert.deepEqual(mx.answers, []);
  assert.equal(decode((await answerQuery(c, "sb1", query("evil.net", "TXT")))!).rcode, "NXDOMAIN");
  // An allowed name that does not resolve: empty NOERROR.
  c.policies.apply("sb1", 2, {
    network_policies: { x: { endpoints: [{ host: "gone.test", port: 1 }] } },
  });
  const gone = decode((await answerQuery(c, "sb1", query("gone.test")))!);
  assert.equal(gone.rcode, "NOERROR");
  assert.deepEqual(gone.answers, []);
});

Deno.test("dns: malformed, truncated, oversized and non-query messages", async () => {
  const c = ctx();
  const good = query("pypi.org");
  const rcode = (b: Uint8Array | undefined) => b ? (b[3] & 0x0f) : undefined;
  assert.equal(await answerQuery(c, "sb1", good.subarray(0, 11)), undefined, "no header");
  assert.equal(
    await answerQuery(c, "sb1", new Uint8Array(MAX_DNS_MESSAGE + 1)),
    undefined,
    "too long",
  );
  // A response instead of a query: closed.
  const resp = good.slice();
  resp[2] |= 0x80;
  assert.equal(await answerQuery(c, "sb1", resp), undefined);
  // Truncated anywhere past the header: FORMERR with the same id, never a throw.
  for (let n = 12; n < good.length; n++) {
    const r = await answerQuery(c, "sb1", good.subarray(0, n));
    assert.ok(r, `cut at ${n}`);
    assert.equal((r[0] << 8) | r[1], 4242);
    assert.equal(rcode(r), Rcode.FORMERR, `cut at ${n}`);
  }
  // Two questions: FORMERR. Another opcode: NOTIMP.
  const two = new Uint8Array(dnsPacket.encode({
    type: "query",
    id: 1,
    questions: [{ type: "A", name: "a.test" }, { type: "A", name: "pypi.org" }],
  }));
  assert.equal(rcode(await answerQuery(c, "sb1", two)), Rcode.FORMERR);
  const status = good.slice();
  status[2] |= 2 << 3;
  assert.equal(rcode(await answerQuery(c, "sb1", status)), Rcode.NOTIMP);
  // A compression pointer loop in the question name: FORMERR.
  const loop = new Uint8Array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  assert.equal(rcode(await answerQuery(c, "sb1", loop)), Rcode.FORMERR);
  // Random bytes: an answer or a close, never an exception.
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff;
  for (let i = 0; i < 2000; i++) {
    const len = 12 + (rand() % 80);
    const bytes = new Uint8Array(len);
    for (let j = 0; j < len; j++) bytes[j] = rand();
    bytes[2] &= 0x07; // a query with opcode 0, so the parser runs
    const r = await answerQuery(c, "sb1", bytes);
    if (r) assert.ok(r.length >= 12);
  }
  // Mutations of a good query.
  for (let i = 0; i < 2000; i++) {
    const bytes = good.slice();
    bytes[12 + (rand() % (bytes.length - 12))] = rand();
    const r = await answerQuery(c, "sb1", bytes);
    if (r) assert.ok(r.length >= 12);
  }
});

Deno.test("dns over TCP on the guest socket: framed answers in order; a bad frame closes", async () => {
  const eg = await startTestEgress({
    resolve: tableResolver({ "ok.test": ["198.51.100.7", "2001:db8::7"] }),
  });
  try {
    await eg.apply("sb1", 1, {
      network_policies: { ok: { endpoints: [{ host: "ok.test", port: 443 }] } },
    });
    const c = await openGuest(eg.guestSocket, "sb1", "dns");
    const frame = (m: Uint8Array) => {
      const f = new Uint8Array(2 + m.length);
      f[0] = m.length >> 8;
      f[1] = m.length & 255;
      f.set(m, 2);
      return f;
    };
    // Three pipelined queries in one write (two in the header's packet is the driver's business).
    const batch = [
      query("ok.test", "A", 1),
      query("denied.test", "A", 2),
      query("ok.test", "AAAA", 3),
    ];
    const all = new Uint8Array(batch.reduce((n, q) => n + q.length + 2, 0));
    let at = 0;
    for (const q of batch) {
      all.set(frame(q), at);
      at += q.length + 2;
    }
    await writeAll(c, all);
    const answers: ReturnType<typeof decode>[] = [];
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(4096);
    while (answers.length < 3) {
      const n = await c.read(chunk);
      assert.ok(n !== null, "closed early");
      const next = new Uint8Array(buf.length + n);
      next.set(buf);
      next.set(chunk.subarray(0, n), buf.length);
      buf = next;
      while (buf.length >= 2 && buf.length >= 2 + ((buf[0] << 8) | buf[1])) {
        const len = (buf[0] << 8) | buf[1];
        answers.push(decode(buf.subarray(2, 2 + len)));
        buf = buf.slice(2 + len);
      }
    }
    assert.deepEqual(
      answers.map((a) => [a.id, a.rcode, a.answers.map((x: { data: string }) => x.data)]),
      [
        [1, "NOERROR", ["198.51.100.7"]],
        [2, "NXDOMAIN", []],
        [3, "NOERROR", ["2001:db8::7"]],
      ],
    );
    // A frame longer than the cap: closed.
    await writeAll(c, new Uint8Array([0xff, 0xff, 1, 2, 3]));
    assert.equal(await closedByPeer(c), true);
    c.close();
    // The query in the same packet as the header is answered too.
    const d = await openGuest(eg.guestSocket, "sb1", "dns", "");
    const head = new TextEncoder().encode("OPENSHELL-EGRESS/1 sb1 dns\n");
    const q = frame(query("ok.test", "A", 9));
    const both = new Uint8Array(head.length + q.length);
    both.set(head);
    both.set(q, head.length);
    await writeAll(d, both);
    await d.closeWrite();
    const out = await readToEnd(d);
    assert.equal(decode(out.subarray(2)).id, 9);
    d.close();
  } finally {
    await eg.stop();
  }
});
