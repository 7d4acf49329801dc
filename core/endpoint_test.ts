import assert from "node:assert/strict";
import {
  EndpointError,
  hostForUrl,
  hostPort,
  isLoopbackOrUnspecified,
  parseGatewayUrl,
} from "./endpoint.ts";

Deno.test("parseGatewayUrl normalises scheme, host and default ports", () => {
  assert.deepEqual(parseGatewayUrl(" http://127.0.0.1:8080/ "), {
    url: "http://127.0.0.1:8080",
    scheme: "http",
    host: "127.0.0.1",
    port: 8080,
    path: "",
  });
  assert.equal(parseGatewayUrl("https://gw.example").url, "https://gw.example:443");
  assert.equal(parseGatewayUrl("http://gw").port, 80);
  assert.deepEqual(
    [parseGatewayUrl("http://[::1]:9").host, parseGatewayUrl("http://[::1]:9").url],
    ["::1", "http://[::1]:9"],
  );
  assert.equal(parseGatewayUrl("http://h:1/connect/ssh", { allowPath: true }).path, "/connect/ssh");
});

Deno.test("parseGatewayUrl refuses what is not an http(s) gateway URL, in one line", () => {
  const refused: [string, RegExp][] = [
    ["not a url", /^is not a URL: "not a url"/],
    ["ftp://h", /^must be an http:\/\/ or https:\/\/ URL/],
    ["h:80", /^must be an http:\/\/ or https:\/\/ URL/],
    ["http://u:p@h:1", /^must not carry credentials$/],
    ["http://h:1/?q", /^must not have a query or fragment/],
    ["http://h:1/#f", /^must not have a query or fragment/],
    ["http://h:1/x", /^must not have a path/],
  ];
  for (const [text, message] of refused) {
    assert.throws(() => parseGatewayUrl(text), (e: unknown) => {
      assert.ok(e instanceof EndpointError, text);
      assert.match(e.message, message, text);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("loopback and unspecified hosts are recognised; IPv6 is bracketed in URLs", () => {
  for (const h of ["localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]", "0.0.0.0", "::"]) {
    assert.equal(isLoopbackOrUnspecified(h), true, h);
  }
  for (const h of ["10.0.2.100", "gw.example", "::2"]) {
    assert.equal(isLoopbackOrUnspecified(h), false, h);
  }
  assert.equal(hostForUrl("::1"), "[::1]");
  assert.equal(hostForUrl("[::1]"), "[::1]");
  assert.equal(hostForUrl("gw"), "gw");
  assert.equal(hostPort("::1", 22), "[::1]:22");
  assert.equal(hostPort("[fe80::1]", 8080), "[fe80::1]:8080");
  assert.equal(hostPort("127.0.0.1", 0), "127.0.0.1:0");
});
