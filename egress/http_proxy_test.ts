import assert from "node:assert/strict";
import { endToEndHeaders, formatTarget, parseConnectTarget } from "./http_proxy.ts";

Deno.test("parseConnectTarget: host:port, [v6]:port; junk refused", () => {
  assert.deepEqual(parseConnectTarget("Example.com:443"), { host: "example.com", port: 443 });
  assert.deepEqual(parseConnectTarget("example.com.:22"), { host: "example.com", port: 22 });
  assert.deepEqual(parseConnectTarget("10.0.0.1:80"), { host: "10.0.0.1", port: 80 });
  assert.deepEqual(parseConnectTarget("[2001:db8::1]:443"), { host: "2001:db8::1", port: 443 });
  for (
    const bad of [
      "example.com",
      "example.com:0",
      "example.com:65536",
      "2001:db8::1:443",
      "[example.com]:443",
      "a b:1",
      "*.example.com:443",
      "http://example.com:443",
      ":443",
      "[fe80::1%eth0]:443",
    ]
  ) {
    assert.equal(parseConnectTarget(bad), undefined, bad);
  }
  assert.equal(formatTarget("2001:db8::1", 443), "[2001:db8::1]:443");
});

Deno.test("endToEndHeaders: hop-by-hop, Proxy-* and Connection-named headers go", () => {
  assert.deepEqual(
    endToEndHeaders([
      "Host",
      "a.test",
      "Connection",
      "keep-alive, X-Secret",
      "X-Secret",
      "1",
      "Proxy-Authorization",
      "Basic x",
      "Proxy-Foo",
      "y",
      "Keep-Alive",
      "5",
      "TE",
      "trailers",
      "Transfer-Encoding",
      "chunked",
      "Upgrade",
      "h2c",
      "Accept",
      "*/*",
    ]),
    [["Host", "a.test"], ["Accept", "*/*"]],
  );
});
