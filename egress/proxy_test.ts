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
        // The same server under a name whose rule lists no allowed_ips: refused.
        eg.policies.get("sb1"); // (still loaded)
        const r = await connectThrough(eg.guestSocket, "sb1", `app.test:${srv.port + 1}`);
        assert.equal(r.status, 403);
        r.conn.close();
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
    await eg.call("RemoveSandbox", { sandbox_id: "sb1" });
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
