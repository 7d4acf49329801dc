import assert from "node:assert/strict";
import {
  connectEstablished,
  findHeadEnd,
  HttpError,
  httpResponse,
  isAsciiValue,
  MAX_BODY_BYTES,
  parseRequestHead,
} from "./http1.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function httpError(fn: () => unknown, status: number, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HttpError, `not an HttpError: ${e}`);
    assert.equal(e.status, status, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

Deno.test("findHeadEnd: index just past the blank line, -1 until it is there", () => {
  assert.equal(findHeadEnd(enc("")), -1);
  assert.equal(findHeadEnd(enc("GET / HTTP/1.1\r\n")), -1);
  assert.equal(findHeadEnd(enc("GET / HTTP/1.1\r\nHost: x\r\n\r")), -1);
  assert.equal(findHeadEnd(enc("GET / HTTP/1.1\n\n")), -1, "bare LFs do not end a head");
  const head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  assert.equal(findHeadEnd(enc(head)), head.length);
  assert.equal(findHeadEnd(enc(head + "SSH-2.0-client\r\n")), head.length, "body bytes stay");
  assert.equal(findHeadEnd(enc("\r\n\r\n")), 4);
});

Deno.test("parseRequestHead: request line, lower-cased headers, trimmed values, repeats joined", () => {
  const head = parseRequestHead(enc(
    "CONNECT /connect/ssh HTTP/1.1\r\n" +
      "Host: gw:8080\r\n" +
      "X-Sandbox-Id:   sb-1  \r\n" +
      "X-SANDBOX-TOKEN: tok\r\n" +
      "Accept: a\r\n" +
      "accept: b\r\n" +
      "Empty:\r\n" +
      "\r\n",
  ));
  assert.equal(head.method, "CONNECT");
  assert.equal(head.target, "/connect/ssh");
  assert.equal(head.version, "HTTP/1.1");
  assert.deepEqual(Object.fromEntries(head.headers), {
    "host": "gw:8080",
    "x-sandbox-id": "sb-1",
    "x-sandbox-token": "tok",
    "accept": "a, b",
    "empty": "",
  });
  assert.equal(parseRequestHead(enc("GET /healthz HTTP/1.0\r\n\r\n")).version, "HTTP/1.0");
});

Deno.test("parseRequestHead: a malformed request line is 400", () => {
  for (
    const line of [
      "GET /",
      "GET  / HTTP/1.1",
      "GET / HTTP/1.1 extra",
      "",
      "G(T / HTTP/1.1",
      "GET / HTTP/1.1 ",
    ]
  ) {
    httpError(() => parseRequestHead(enc(`${line}\r\n\r\n`)), 400, /malformed request line/);
  }
});

Deno.test("parseRequestHead: HTTP/2.0 and other versions are 505", () => {
  for (const v of ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "FOO"]) {
    httpError(() => parseRequestHead(enc(`GET / ${v}\r\n\r\n`)), 505, /version not supported/);
  }
});

Deno.test("parseRequestHead: bad header lines are 400", () => {
  httpError(() => parseRequestHead(enc("GET / HTTP/1.1\r\nNoColon\r\n\r\n")), 400, /header line/);
  httpError(() => parseRequestHead(enc("GET / HTTP/1.1\r\n: v\r\n\r\n")), 400, /header line/);
  httpError(() => parseRequestHead(enc("GET / HTTP/1.1\r\nBad Name: v\r\n\r\n")), 400, /name/);
  httpError(() => parseRequestHead(enc("GET / HTTP/1.1\r\nBad\tName: v\r\n\r\n")), 400, /name/);
  // obsolete line folding (a continuation starting with whitespace) is refused, not merged
  httpError(
    () => parseRequestHead(enc("GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n")),
    400,
    /malformed header/,
  );
  httpError(
    () => parseRequestHead(enc("GET / HTTP/1.1\r\nX-A: one\r\n\tx-b: two\r\n\r\n")),
    400,
    /malformed header name/,
  );
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
  assert.match(dec(httpResponse(418)), /^HTTP\/1\.1 418 Status\r\n/);
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
