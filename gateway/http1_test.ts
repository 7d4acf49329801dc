import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import {
  connectEstablished,
  httpResponse,
  isAsciiValue,
  MAX_BODY_BYTES,
  requestHeadOf,
} from "./http1.ts";

const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

Deno.test("requestHeadOf: request line, lower-cased headers from rawHeaders, every repeat joined", () => {
  const head = requestHeadOf({
    method: "CONNECT",
    url: "/connect/ssh",
    httpVersion: "1.1",
    rawHeaders: [
      "Host",
      "gw:8080",
      "X-SANDBOX-TOKEN",
      "tok",
      "Authorization",
      "a",
      "authorization",
      "b",
      "Empty",
      "",
    ],
  } as unknown as IncomingMessage);
  assert.equal(head.method, "CONNECT");
  assert.equal(head.target, "/connect/ssh");
  assert.equal(head.version, "HTTP/1.1");
  assert.deepEqual(Object.fromEntries(head.headers), {
    "host": "gw:8080",
    "x-sandbox-token": "tok",
    "authorization": "a, b", // node:http's req.headers would keep only "a"
    "empty": "",
  });
});

Deno.test("isAsciiValue: visible ASCII and spaces only", () => {
  assert.equal(isAsciiValue(""), true);
  assert.equal(isAsciiValue("abc-123 ~!"), true);
  assert.equal(isAsciiValue("é"), false);
  assert.equal(isAsciiValue("a\tb"), false);
  assert.equal(isAsciiValue("a\x7f"), false);
  assert.equal(isAsciiValue("\x00"), false);
});

Deno.test("httpResponse: an error closes with a text body and its length", () => {
  const text = dec(httpResponse(404, { body: "sandbox not found" }));
  assert.equal(
    text,
    "HTTP/1.1 404 Not Found\r\n" +
      "content-type: text/plain; charset=utf-8\r\n" +
      "content-length: 18\r\n" +
      "connection: close\r\n" +
      "\r\n" +
      "sandbox not found\n",
  );
});

Deno.test("httpResponse: content-length counts bytes; extra headers; unknown status", () => {
  const text = dec(httpResponse(401, { body: "é", headers: { "www-authenticate": "token" } }));
  assert.match(text, /^HTTP\/1\.1 401 Unauthorized\r\n/);
  assert.match(text, /\r\ncontent-length: 3\r\n/);
  assert.match(text, /\r\nwww-authenticate: token\r\n/);
  assert.match(dec(httpResponse(418)), /^HTTP\/1\.1 418 I'm a Teapot\r\n/);
  assert.match(dec(httpResponse(599)), /^HTTP\/1\.1 599 Status\r\n/);
  for (
    const [status, reason] of [
      [405, "Method Not Allowed"],
      [412, "Precondition Failed"],
      [429, "Too Many Requests"],
      [502, "Bad Gateway"],
      [505, "HTTP Version Not Supported"],
    ] as const
  ) {
    assert.match(dec(httpResponse(status)), new RegExp(`^HTTP/1\\.1 ${status} ${reason}\\r\\n`));
  }
});

Deno.test("httpResponse: a keep-alive 200 has a body length but no connection: close", () => {
  const text = dec(httpResponse(200, { body: "ok", close: false }));
  assert.equal(
    text,
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\n\r\nok\n",
  );
  const closing = dec(httpResponse(200, { body: "ok" }));
  assert.match(closing, /\r\nconnection: close\r\n\r\nok\n$/);
  // an empty non-200 still says its length so the client does not wait
  assert.match(dec(httpResponse(503)), /\r\ncontent-length: 0\r\n/);
});

Deno.test("connectEstablished: a bare 200 head, nothing after it", () => {
  assert.equal(dec(connectEstablished()), "HTTP/1.1 200 OK\r\n\r\n");
});

Deno.test("httpResponse: a body that quotes a huge request is cut to MAX_BODY_BYTES", () => {
  const text = dec(httpResponse(404, { body: `no sandbox ${"x".repeat(1024 * 1024)}` }));
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  assert.ok(body.length < MAX_BODY_BYTES + 40, `${body.length}`);
  assert.match(body, /…\[truncated \d+ bytes\]\n$/);
  assert.match(text, new RegExp(`content-length: ${new TextEncoder().encode(body).length}\r\n`));
});
