/**
 * The egress proxy end to end, in process: guest connections as the VM
 * driver opens them, policies through the control API, destinations in
 * network namespaces the tests create (or loopback, to prove it is refused).
 */
import assert from "node:assert/strict";
import { type NetnsServer, netnsUnavailable, startNetnsServer } from "../testing/netns.ts";
import { waitFor } from "../core/testing.ts";
import { deniedBody, refusedBody } from "./http_proxy.ts";
import {
  closedByPeer,
  openGuest,
  readHead,
  readResponse,
  readToEnd,
  startTestEgress,
  tableResolver,
  watchEvents,
  writeAll,
} from "./testing.ts";

const noNetns = netnsUnavailable();
const dec = new TextDecoder();

async function connectThrough(
  path: string,
  sandbox: string,
  target: string,
): Promise<{ conn: Deno.UnixConn; status: number; head: string; rest: Uint8Array }> {
  const conn = await openGuest(path, sandbox, "http");
  await writeAll(conn, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  const { status, head, rest } = await readHead(conn);
  return { conn, status, head, rest };
}

async function withServer(fn: (s: NetnsServer) => Promise<void>): Promise<void> {
  const s = await startNetnsServer();
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

Deno.test({
  name: "CONNECT to an allowed host works; private addresses need allowed_ips",
  ignore: !!noNetns,
  fn: () =>
    withServer(async (srv) => {
      const eg = await startTestEgress({ resolve: tableResolver({ "app.test": [srv.address] }) });
      try {
        await eg.apply("sb1", 1, {
          network_policies: {
            app: {
              endpoints: [{ host: "app.test", port: srv.port, allowed_ips: [`${srv.address}/32`] }],
            },
            bare: { endpoints: [{ host: "bare.test", port: srv.port }] },
          },
        });
        const t = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port}`);
        assert.equal(t.status, 200, t.head);
        await writeAll(t.conn, "GET /hello HTTP/1.0\r\nHost: app.test\r\n\r\n");
        const text = dec.decode(await readToEnd(t.conn));
        assert.match(
          text,
          new RegExp(`^HTTP/1\\.[01] 200[^]*hello from ${srv.address.replaceAll(".", "\\.")}`),
        );
        t.conn.close();
        // A port no rule names: refused.
        const r = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port + 1}`);
        assert.equal(r.status, 403);
        r.conn.close();
        // Bytes sent right behind the CONNECT line (past 64 KiB) reach the host in order.
        const body = "y".repeat(200_000);
        const e = await openGuest(eg.guestSocket, "sb1", "http");
        await writeAll(
          e,
          `CONNECT app.test:${srv.port} HTTP/1.1\r\n\r\n` +
            `POST /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n` +
            `Content-Length: ${body.length}\r\n\r\n${body}`,
        );
        const h = await readHead(e);
        assert.equal(h.status, 200);
        const rest = dec.decode(h.rest) + dec.decode(await readToEnd(e));
        assert.match(rest, /^HTTP\/1\.1 200/);
        assert.equal(rest.replaceAll(/[^y]/g, "").length, body.length, "every byte echoed");
        e.close();
      } finally {
        await eg.stop();
      }
    }),
});

Deno.test("a denied host gets 403 with a body naming it and how to allow it", async () => {
  const eg = await startTestEgress();
  try {
    await eg.apply("sb1", 1, {
      network_policies: { a: { endpoints: [{ host: "ok.test", port: 443 }] } },
    });
    const t = await connectThrough(eg.guestSocket, "sb1", "example.com:443");
    assert.equal(t.status, 403);
    const body = dec.decode(t.rest) + dec.decode(await readToEnd(t.conn));
    assert.equal(
      body,
      "openshell-egress: example.com:443 is not allowed by this sandbox's network policy. " +
        "Allow it with: openshell policy set <sandbox> --allow example.com:443\n",
    );
    assert.equal(body, deniedBody("example.com", 443));
    t.conn.close();
    // Forward proxying: the same answer (one request per connection).
    for (
      const [url, host, port] of [["http://Example.COM/x", "example.com", 80], [
        "http://other.test:8080/",
        "other.test",
        8080,
      ]] as const
    ) {
      const c = await openGuest(eg.guestSocket, "sb1", "http");
      await writeAll(c, `GET ${url} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      const r = await readResponse(c);
      assert.equal(r.status, 403);
      assert.equal(r.body, deniedBody(host, port));
      assert.match(r.head, /\r\nconnection: close/i);
      assert.equal(await closedByPeer(c), true);
      c.close();
    }
  } finally {
    await eg.stop();
  }
});

Deno.test("loopback is refused even with a rule naming it and allowed_ips 127.0.0.0/8", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let accepted = 0;
  const accepting = (async () => {
    for await (const c of listener) {
      accepted++;
      c.close();
    }
  })();
  const eg = await startTestEgress({
    resolve: tableResolver({ "sneaky.test": ["127.0.0.1", "::ffff:127.0.0.1", "::1"] }),
  });
  try {
    await eg.apply("sb1", 1, {
      network_policies: {
        lo: {
          endpoints: [
            { host: "127.0.0.1", port, allowed_ips: ["127.0.0.0/8"] },
            { host: "sneaky.test", port, allowed_ips: ["127.0.0.0/8", "::/0"] },
            { host: "::ffff:127.0.0.1", port, allowed_ips: ["0.0.0.0/0"] },
            { host: "localhost", port, allowed_ips: ["0.0.0.0/0"] },
          ],
        },
      },
    });
    for (
      const target of [`127.0.0.1:${port}`, `sneaky.test:${port}`, `[::ffff:127.0.0.1]:${port}`]
    ) {
      const t = await connectThrough(eg.guestSocket, "sb1", target);
      assert.equal(t.status, 403, target);
      const body = dec.decode(t.rest) + dec.decode(await readToEnd(t.conn));
      assert.match(body, /loopback\/link-local\/special address/, target);
      t.conn.close();
    }
    const c = await openGuest(eg.guestSocket, "sb1", "http");
    await writeAll(c, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    assert.equal((await readResponse(c)).status, 403);
    c.close();
    assert.equal(accepted, 0, "nothing reached the loopback server");
    assert.match(refusedBody("a", 1, "x"), /never reachable/);
  } finally {
    await eg.stop();
    listener.close();
    await accepting.catch(() => {});
  }
});

Deno.test("RemoveSandbox closes the sandbox's open connections and forgets its policy", async () => {
  const eg = await startTestEgress();
  try {
    await eg.apply("sb1", 1, {});
    await eg.apply("sb2", 1, {});
    const a = await openGuest(eg.guestSocket, "sb1", "http");
    const b = await openGuest(eg.guestSocket, "sb2", "http");
    await waitFor(
      "both connections open",
      () => eg.guest.openFor("sb1") === 1 && eg.guest.openFor("sb2") === 1,
    );
    await eg.call(eg.client.RemoveSandbox, { sandbox_id: "sb1" });
    assert.equal(await closedByPeer(a), true);
    assert.equal(eg.policies.get("sb1"), undefined);
    assert.equal(eg.guest.openFor("sb2"), 1);
    // A new connection for the removed sandbox: closed at once.
    const again = await openGuest(eg.guestSocket, "sb1", "http");
    assert.equal(await closedByPeer(again), true);
    a.close();
    b.close();
    again.close();
  } finally {
    await eg.stop();
  }
});

Deno.test("watch: denied events arrive with OCSF lines", async () => {
  const eg = await startTestEgress();
  const w = await watchEvents(eg.client);
  try {
    await eg.apply("sb1", 1, {});
    const t = await connectThrough(eg.guestSocket, "sb1", "nope.test:22");
    assert.equal(t.status, 403);
    t.conn.close();
    const e = await w.next((e) => e.host === "nope.test");
    assert.equal(e.decision, "denied");
    assert.equal(e.port, 22);
    const ocsf = JSON.parse(e.ocsf_json);
    assert.equal(ocsf.class_uid, 4001);
    assert.equal(ocsf.unmapped.sandbox_id, "sb1");
  } finally {
    w.close();
    await eg.stop();
  }
});

Deno.test({
  name:
    "plain HTTP forward: absolute-form GET reaches the host; hop-by-hop and Proxy-* headers stay behind",
  ignore: !!noNetns,
  fn: () =>
    withServer(async (srv) => {
      const eg = await startTestEgress({ resolve: tableResolver({ "app.test": [srv.address] }) });
      try {
        await eg.apply("sb1", 1, {
          network_policies: {
            app: {
              endpoints: [{ host: "app.test", port: srv.port, allowed_ips: ["10.213.0.0/16"] }],
            },
          },
        });
        const c = await openGuest(eg.guestSocket, "sb1", "http");
        await writeAll(
          c,
          `GET http://app.test:${srv.port}/headers?x=1 HTTP/1.1\r\nHost: app.test:${srv.port}\r\n` +
            "Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n" +
            "Connection: X-Private\r\nX-Private: drop-me\r\nX-Kept: yes\r\n\r\n",
        );
        const r = await readResponse(c);
        assert.equal(r.status, 200, r.body);
        const seen = JSON.parse(r.body);
        assert.equal(seen["host"], `app.test:${srv.port}`);
        assert.equal(seen["x-kept"], "yes");
        assert.equal(seen["proxy-authorization"], undefined);
        assert.equal(seen["proxy-connection"], undefined);
        assert.equal(seen["x-private"], undefined);
        c.close();
        // A body goes up and the answer comes back.
        const p = await openGuest(eg.guestSocket, "sb1", "http");
        const body = "x".repeat(300_000);
        await writeAll(
          p,
          `POST http://app.test:${srv.port}/echo HTTP/1.1\r\nHost: app.test\r\n` +
            `Content-Length: ${body.length}\r\n\r\n${body}`,
        );
        const echoed = await readResponse(p);
        assert.equal(echoed.status, 200, echoed.head + echoed.body.slice(0, 300));
        assert.equal(echoed.body, body);
        p.close();
      } finally {
        await eg.stop();
      }
    }),
});

Deno.test({
  name: "private addresses: refused without allowed_ips, and the host's own address always",
  ignore: !!noNetns,
  fn: () =>
    withServer(async (srv) => {
      const eg = await startTestEgress({
        resolve: tableResolver({ "app.test": [srv.address], "me.test": [srv.hostAddress] }),
      });
      try {
        await eg.apply("sb1", 1, {
          network_policies: {
            app: { endpoints: [{ host: "app.test", port: srv.port }] },
            me: {
              endpoints: [{ host: "me.test", port: srv.port, allowed_ips: ["10.213.0.0/16"] }],
            },
            ip: {
              endpoints: [{ host: srv.hostAddress, port: srv.port, allowed_ips: ["10.0.0.0/8"] }],
            },
          },
        });
        const a = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port}`);
        assert.equal(a.status, 403);
        const body = dec.decode(a.rest) + dec.decode(await readToEnd(a.conn));
        assert.match(body, /is a private address; list it in the rule's allowed_ips/);
        a.conn.close();
        for (const target of [`me.test:${srv.port}`, `${srv.hostAddress}:${srv.port}`]) {
          const t = await connectThrough(eg.guestSocket, "sb1", target);
          assert.equal(t.status, 403, target);
          assert.match(
            dec.decode(t.rest) + dec.decode(await readToEnd(t.conn)),
            /an address of the host/,
          );
          t.conn.close();
        }
      } finally {
        await eg.stop();
      }
    }),
});

Deno.test({
  name: "audit: allowed where enforcement would deny, and the event says audit",
  ignore: !!noNetns,
  fn: () =>
    withServer(async (srv) => {
      const eg = await startTestEgress({ resolve: tableResolver({ "app.test": [srv.address] }) });
      const w = await watchEvents(eg.client);
      try {
        // No allowed_ips: enforce would refuse the private address; audit lets it through.
        await eg.apply("sb1", 1, {
          network_policies: {
            trial: { endpoints: [{ host: "app.test", port: srv.port, enforcement: "audit" }] },
          },
        });
        const t = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port}`);
        assert.equal(t.status, 200);
        await writeAll(t.conn, "GET /hello HTTP/1.0\r\n\r\n");
        assert.match(dec.decode(await readToEnd(t.conn)), /hello from/);
        t.conn.close();
        const e = await w.next((e) => e.host === "app.test", "the audit event");
        assert.equal(e.decision, "audit");
        assert.equal(e.policy_name, "trial");
        const ocsf = JSON.parse(e.ocsf_json);
        assert.equal(ocsf.unmapped.decision, "audit");
        assert.equal(ocsf.dst_endpoint.ip, srv.address);
        assert.match(ocsf.message, /private address/);
      } finally {
        w.close();
        await eg.stop();
      }
    }),
});

Deno.test({
  name: "a live ApplyPolicy flips a denied host to allowed for new connections",
  ignore: !!noNetns,
  fn: () =>
    withServer(async (srv) => {
      const eg = await startTestEgress({ resolve: tableResolver({ "app.test": [srv.address] }) });
      try {
        await eg.apply("sb1", 1, {
          network_policies: { other: { endpoints: [{ host: "x.test", port: 1 }] } },
        });
        const before = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port}`);
        assert.equal(before.status, 403);
        before.conn.close();
        const res = await eg.apply("sb1", 2, {
          network_policies: {
            app: {
              endpoints: [{ host: "app.test", port: srv.port, allowed_ips: [`${srv.address}/32`] }],
            },
          },
        }) as { loaded_version: number; loaded_at_ms: number };
        assert.equal(res.loaded_version, 2);
        assert.ok(res.loaded_at_ms > 0);
        const after = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port}`);
        assert.equal(after.status, 200);
        after.conn.close();
        // And back: an older version is refused; the newest stays.
        await assert.rejects(
          eg.apply("sb1", 1, {}),
          /FAILED_PRECONDITION.*older than the loaded version 2/,
        );
        const list = await eg.call(eg.client.ListPolicies, {});
        assert.deepEqual(list.policies.map((p) => [p.sandbox_id, p.version]), [["sb1", 2]]);
      } finally {
        await eg.stop();
      }
    }),
});

Deno.test("ApplyPolicy refuses what cannot be enforced, naming the field; the old policy stays", async () => {
  const eg = await startTestEgress();
  try {
    await eg.apply("sb1", 1, {
      network_policies: { a: { endpoints: [{ host: "a.test", port: 1 }] } },
    });
    await assert.rejects(
      eg.apply("sb1", 2, {
        network_policies: { a: { endpoints: [{ host: "a.test", port: 443, protocol: "rest" }] } },
      }),
      /INVALID_ARGUMENT: policy\.network_policies\["a"\]\.endpoints\[0\]\.protocol: L7 inspection is not supported; remove it/,
    );
    await assert.rejects(eg.apply("bad id", 1, {}), /INVALID_ARGUMENT: sandbox_id/);
    assert.equal(eg.policies.get("sb1")?.version, 1);
  } finally {
    await eg.stop();
  }
});

Deno.test("the header: missing, garbage, overlong or late → closed; unknown sandbox → closed", async () => {
  const eg = await startTestEgress({ headerTimeoutMs: 200 });
  try {
    await eg.apply("sb1", 1, {});
    const cases: [string, string | undefined][] = [
      ["garbage", "GET / HTTP/1.1\r\n\r\n"],
      ["wrong tag", "OPENSHELL-EGRESS/2 sb1 http\n"],
      ["wrong kind", "OPENSHELL-EGRESS/1 sb1 smtp\n"],
      ["extra field", "OPENSHELL-EGRESS/1 sb1 http x\n"],
      ["bad id", "OPENSHELL-EGRESS/1 ../x http\n"],
      ["overlong", "OPENSHELL-EGRESS/1 " + "a".repeat(300)],
      ["unknown sandbox", "OPENSHELL-EGRESS/1 sb-unknown http\n"],
      ["no newline, then silence", "OPENSHELL-EGRESS/1 sb1 http"],
      ["nothing at all", ""],
    ];
    for (const [what, header] of cases) {
      const c = await openGuest(eg.guestSocket, "sb1", "http", header);
      assert.equal(await closedByPeer(c), true, what);
      c.close();
    }
    const s = eg.guest.stats;
    assert.equal(s.unknownSandbox, 1);
    assert.equal(s.badHeader, cases.length - 1);
    assert.equal(s.open, 0);
  } finally {
    await eg.stop();
  }
});

Deno.test("caps: the 65th connection of a sandbox is refused (503); other sandboxes still get in", async () => {
  const eg = await startTestEgress();
  const conns: Deno.UnixConn[] = [];
  try {
    await eg.apply("sb1", 1, {});
    await eg.apply("sb2", 1, {});
    for (let i = 0; i < 64; i++) conns.push(await openGuest(eg.guestSocket, "sb1", "http"));
    await waitFor("64 open connections", () => eg.guest.openFor("sb1") === 64);
    const extra = await openGuest(eg.guestSocket, "sb1", "http");
    const r = await readResponse(extra);
    assert.equal(r.status, 503);
    assert.match(r.body, /64 connections open/);
    extra.close();
    const dns = await openGuest(eg.guestSocket, "sb1", "dns");
    assert.equal(await closedByPeer(dns), true);
    dns.close();
    assert.equal(eg.guest.stats.refusedSandbox, 2);
    const other = await openGuest(eg.guestSocket, "sb2", "http");
    await waitFor("sb2's connection open", () => eg.guest.openFor("sb2") === 1);
    conns.push(other);
    // One closes: room again.
    conns.shift()!.close();
    await waitFor("63 open", () => eg.guest.openFor("sb1") === 63);
    conns.push(await openGuest(eg.guestSocket, "sb1", "http"));
    await waitFor("64 open again", () => eg.guest.openFor("sb1") === 64);
  } finally {
    for (const c of conns) c.close();
    await eg.stop();
  }
});

Deno.test("caps: past the total, new connections close before their header", async () => {
  const eg = await startTestEgress({ maxTotal: 8, maxPerSandbox: 8 });
  const conns: Deno.UnixConn[] = [];
  try {
    await eg.apply("sb1", 1, {});
    for (let i = 0; i < 8; i++) {
      conns.push(await openGuest(eg.guestSocket, "sb1", "http", i % 2 ? "" : undefined));
    }
    await waitFor("8 open", () => eg.guest.stats.open === 8);
    const extra = await openGuest(eg.guestSocket, "sb1", "http", "");
    assert.equal(await closedByPeer(extra), true);
    extra.close();
    assert.equal(eg.guest.stats.refusedTotal, 1);
  } finally {
    for (const c of conns) c.close();
    await eg.stop();
  }
});

Deno.test("idle: a connection quiet both ways for the idle timeout is closed", async () => {
  const eg = await startTestEgress({ idleMs: 300 });
  try {
    await eg.apply("sb1", 1, {});
    const c = await openGuest(eg.guestSocket, "sb1", "dns");
    assert.equal(await closedByPeer(c), true);
    c.close();
    assert.equal(eg.guest.stats.idle, 1);
  } finally {
    await eg.stop();
  }
});

Deno.test("events: past 100/s per sandbox they are dropped and counted in the next event", async () => {
  let now = 1_000_000;
  const eg = await startTestEgress({ now: () => now });
  const w = await watchEvents(eg.client);
  try {
    await eg.apply("sb1", 1, {});
    await eg.apply("sb2", 1, {});
    for (let i = 0; i < 150; i++) {
      const c = await openGuest(eg.guestSocket, "sb1", "http");
      await writeAll(c, `GET http://h${i}.test/ HTTP/1.1\r\nHost: h${i}.test\r\n\r\n`);
      assert.equal((await readResponse(c)).status, 403);
      c.close();
    }
    // Another sandbox has its own budget.
    const o = await openGuest(eg.guestSocket, "sb2", "http");
    await writeAll(o, "GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n");
    await readResponse(o);
    o.close();
    await w.next((e) => e.sandbox_id === "sb2", "sb2's event");
    assert.equal(w.events.filter((e) => e.sandbox_id === "sb1").length, 100);
    assert.equal(eg.events.stats.dropped, 50);
    now += 1000;
    const c = await openGuest(eg.guestSocket, "sb1", "http");
    await writeAll(c, "GET http://last.test/ HTTP/1.1\r\nHost: last.test\r\n\r\n");
    await readResponse(c);
    c.close();
    const last = await w.next((e) => e.host === "last.test", "the event after the flood");
    assert.equal(last.dropped, 50);
  } finally {
    w.close();
    await eg.stop();
  }
});
