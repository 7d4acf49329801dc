import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fingerprintOfPublicKey } from "../core/ssh_keys.ts";
import { parseEndpoint } from "./config.ts";
import { CliError } from "./errors.ts";
import { HostKeyMismatchError, HostKeyVerifier } from "./ssh_hostkey.ts";
import {
  type ByteReader,
  connectFailureMessage,
  connectRequest,
  openTunnel,
  parseResponseHead,
  pumpTunnel,
  type TunnelTarget,
  tunnelTargetOf,
  validateTarget,
} from "./ssh_proxy.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A fake gateway: for each connection, reads the request head and lets `handle` answer. */
function fakeGateway(
  handle: (conn: Deno.Conn, head: string, n: number) => Promise<void>,
): { port: number; heads: string[]; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heads: string[] = [];
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    let n = 0;
    for await (const conn of listener) {
      const index = n++;
      tasks.push((async () => {
        try {
          let buf = "";
          const chunk = new Uint8Array(1);
          // Byte by byte, so nothing after the head is consumed here.
          while (!buf.endsWith("\r\n\r\n")) {
            const r = await conn.read(chunk);
            if (r === null) return;
            buf += dec.decode(chunk.subarray(0, r));
          }
          heads.push(buf);
          await handle(conn, buf, index);
        } catch {
          // client went away
        } finally {
          try {
            conn.close();
          } catch {
            // closed by the handler
          }
        }
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    heads,
    close: async () => {
      listener.close();
      await accepting.catch(() => {});
      await Promise.all(tasks);
    },
  };
}

function target(port: number, over: Partial<TunnelTarget> = {}): TunnelTarget {
  return {
    scheme: "http",
    host: "127.0.0.1",
    port,
    path: "/connect/ssh",
    sandboxId: "sb-1",
    token: "tok-123",
    ...over,
  };
}

/** A reader fed by the test; `end()` makes it return EOF. */
function feed(): ByteReader & { push(b: Uint8Array): void; end(): void } {
  const queue: (Uint8Array | null)[] = [];
  let wake: (() => void) | undefined;
  return {
    push(b) {
      queue.push(b);
      wake?.();
    },
    end() {
      queue.push(null);
      wake?.();
    },
    async read(p) {
      while (queue.length === 0) await new Promise<void>((r) => wake = r);
      const next = queue.shift()!;
      if (next === null) {
        queue.unshift(null);
        return null;
      }
      p.set(next);
      return next.length;
    },
  };
}

function sink(): { write(p: Uint8Array): Promise<number>; bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    write(p) {
      parts.push(p.slice());
      return Promise.resolve(p.length);
    },
    bytes: () => new Uint8Array(Buffer.concat(parts)),
  };
}

async function readAll(conn: Deno.Conn): Promise<string> {
  let out = "";
  const buf = new Uint8Array(4096);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
    out += dec.decode(buf.subarray(0, n));
  }
  return out;
}

Deno.test("CONNECT request carries Host, X-Sandbox-Id and X-Sandbox-Token", () => {
  assert.equal(
    connectRequest(target(8080)),
    "CONNECT /connect/ssh HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Sandbox-Id: sb-1\r\n" +
      "X-Sandbox-Token: tok-123\r\n\r\n",
  );
  assert.match(connectRequest(target(1, { host: "::1" })), /Host: \[::1\]:1\r\n/);
  assert.throws(() => validateTarget(target(1, { token: "a b" })), /invalid SSH session token/);
  assert.throws(() => validateTarget(target(1, { sandboxId: "x\r\ny" })), /invalid sandbox id/);
  assert.throws(() => validateTarget(target(1, { path: "nope" })), /invalid connect path/);
});

Deno.test("reply heads: incomplete, complete with bytes after, not HTTP, oversized", () => {
  assert.equal(parseResponseHead(enc.encode("HTTP/1.1 200 OK\r\n")), null);
  const buf = enc.encode("HTTP/1.1 200 Connection Established\r\nX-A: b\r\n\r\nSSH-2.0-x");
  const head = parseResponseHead(buf)!;
  assert.deepEqual([head.status, head.reason, head.headers["x-a"]], [
    200,
    "Connection Established",
    "b",
  ]);
  assert.equal(dec.decode(buf.subarray(head.end)), "SSH-2.0-x");
  assert.throws(
    () => parseResponseHead(enc.encode("SSH-2.0-OpenSSH\r\n")),
    /did not answer with HTTP/,
  );
  assert.throws(
    () => parseResponseHead(enc.encode("HTTP/2 200\r\n\r\n")),
    /did not answer with HTTP/,
  );
  assert.throws(
    () => parseResponseHead(enc.encode("HTTP/1.1 200 " + "x".repeat(9000))),
    /oversized reply/,
  );
});

Deno.test("tunnel: early bytes kept, both directions pumped, half-close passed on", async () => {
  const gw = fakeGateway(async (conn) => {
    // The reply head and the first SSH bytes in one write.
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\nSSH-2.0-fake\r\n"));
    const got = await readAll(conn); // until the client half-closes
    await conn.write(enc.encode(`echo:${got}`));
  });
  try {
    const tunnel = await openTunnel(target(gw.port));
    assert.equal(dec.decode(tunnel.early), "SSH-2.0-fake\r\n");
    const input = feed();
    const output = sink();
    const pumping = pumpTunnel(tunnel, { input, output });
    input.push(enc.encode("hello "));
    input.push(enc.encode("world"));
    input.end();
    const { upstream } = await pumping;
    await upstream;
    tunnel.conn.close();
    assert.equal(dec.decode(output.bytes()), "SSH-2.0-fake\r\necho:hello world");
    assert.match(gw.heads[0], /^CONNECT \/connect\/ssh HTTP\/1\.1\r\n/);
    assert.match(gw.heads[0], /\r\nX-Sandbox-Token: tok-123\r\n/);
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: a client that stops reading ends the pump without an error", async () => {
  const gw = fakeGateway(async (conn) => {
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\nSSH-2.0-fake\r\n"));
    await readAll(conn);
  });
  try {
    const tunnel = await openTunnel(target(gw.port));
    const input = feed();
    const { upstream } = await pumpTunnel(tunnel, {
      input,
      output: { write: () => Promise.reject(new Deno.errors.BrokenPipe("gone")) },
    });
    input.end();
    await upstream;
    tunnel.conn.close();
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: 412 is retried with growing delays until 200", async () => {
  const gw = fakeGateway(async (conn, _head, n) => {
    if (n < 2) {
      await conn.write(enc.encode("HTTP/1.1 412 Precondition Failed\r\n\r\n"));
      return;
    }
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\n"));
  });
  try {
    const delays: number[] = [];
    const tunnel = await openTunnel(target(gw.port), {
      initialDelayMs: 5,
      onRetry: (d) => delays.push(d),
    });
    tunnel.conn.close();
    assert.deepEqual(delays, [5, 10]);
    assert.equal(gw.heads.length, 3);
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: 412 past the wait limit, and 401/404/429/502 fail with clear messages", async () => {
  const statuses: Record<string, string> = {
    "tok-412": "412 Precondition Failed",
    "tok-401": "401 Unauthorized",
    "tok-404": "404 Not Found",
    "tok-429": "429 Too Many Requests",
    "tok-502": "502 Bad Gateway",
  };
  const gw = fakeGateway(async (conn, head) => {
    const token = head.match(/X-Sandbox-Token: (\S+)/)![1];
    await conn.write(enc.encode(`HTTP/1.1 ${statuses[token]}\r\n\r\n`));
  });
  try {
    const expect: [string, RegExp][] = [
      ["tok-412", /did not become ready in time/],
      ["tok-401", /refused the SSH session token/],
      ["tok-404", /sandbox does not exist/],
      ["tok-429", /too many SSH connections/],
      ["tok-502", /could not reach the sandbox/],
    ];
    for (const [token, pattern] of expect) {
      await assert.rejects(
        openTunnel(target(gw.port, { token }), { initialDelayMs: 5, maxWaitMs: 30 }),
        (e) => e instanceof CliError && pattern.test(e.message),
      );
    }
    assert.equal(gw.heads.filter((h) => h.includes("tok-412")).length > 1, true, "412 retried");
  } finally {
    await gw.close();
  }
  assert.match(connectFailureMessage(418, "teapot"), /HTTP 418 \(teapot\)/);
});

Deno.test("tunnel: refused connection and a closed connection are clear errors", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await assert.rejects(
    openTunnel(target(port)),
    /cannot reach the gateway at 127\.0\.0\.1:\d+: connection refused/,
  );
  const gw = fakeGateway(() => Promise.resolve());
  try {
    await assert.rejects(openTunnel(target(gw.port)), /closed the connection before answering/);
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: the host key is checked on the way; a mismatch stops the stream", async () => {
  const t = JSON.parse(
    await Deno.readTextFile(new URL("./testdata/kex_transcripts.json", import.meta.url)),
  )[0];
  const server = new Uint8Array(Buffer.from(t.server_to_client, "base64"));
  const gw = fakeGateway(async (conn) => {
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\n"));
    for (let i = 0; i < server.length; i += 100) await conn.write(server.subarray(i, i + 100));
  });
  try {
    const good = await openTunnel(target(gw.port));
    const input = feed();
    const out = sink();
    const verifier = new HostKeyVerifier(fingerprintOfPublicKey(t.host_key));
    const { upstream } = await pumpTunnel(good, { input, output: out, verifier });
    input.end();
    await upstream;
    good.conn.close();
    assert.deepEqual(out.bytes(), server);

    const bad = await openTunnel(target(gw.port));
    const input2 = feed();
    const out2 = sink();
    await assert.rejects(
      pumpTunnel(bad, {
        input: input2,
        output: out2,
        verifier: new HostKeyVerifier("SHA256:9TuMax+jc70j8hFvcAg2gDcUJChX4iU37tYGbqOAyyQ"),
      }),
      HostKeyMismatchError,
    );
    input2.end();
    assert.ok(out2.bytes().length < 1500, "the reply and what follows never reached the client");
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel target: a loopback or unspecified gateway_host means the CLI's endpoint", () => {
  const session = {
    sandbox_id: "sb-1",
    token: "t",
    gateway_host: "0.0.0.0",
    gateway_port: 8080,
    gateway_scheme: "http",
    connect_path: "",
    host_key_fingerprint: "",
    expires_at_ms: 0,
  };
  const endpoint = parseEndpoint("http://10.1.2.3:9000");
  assert.deepEqual(tunnelTargetOf(session, endpoint), {
    scheme: "http",
    host: "10.1.2.3",
    port: 9000,
    path: "/connect/ssh",
    sandboxId: "sb-1",
    token: "t",
  });
  const remote = tunnelTargetOf(
    { ...session, gateway_host: "gw.example", gateway_scheme: "https", connect_path: "/c" },
    endpoint,
  );
  assert.deepEqual([remote.scheme, remote.host, remote.port, remote.path], [
    "https",
    "gw.example",
    8080,
    "/c",
  ]);
});
