import assert from "node:assert/strict";
import { systemHostAddresses, systemResolver } from "./resolve.ts";

Deno.test("systemResolver: IP literals are themselves; /etc/hosts names resolve", async () => {
  const resolve = systemResolver(5000);
  assert.deepEqual(await resolve("192.0.2.1", 0), ["192.0.2.1"]);
  assert.deepEqual(await resolve("2001:db8::1", 0), ["2001:db8::1"]);
  assert.ok((await resolve("localhost", 4)).includes("127.0.0.1"));
});

Deno.test("systemHostAddresses: this host's interface addresses, loopback included", () => {
  const addrs = systemHostAddresses();
  assert.ok(addrs.includes("127.0.0.1"));
});
