import assert from "node:assert/strict";
import {
  bootEnvironment,
  DEFAULT_GUEST_HOSTNAME,
  egressEnvironment,
  GUEST_EGRESS,
  GUEST_NET,
  GUEST_PROXY_URL,
  guestEndpoint,
  guestHostname,
  renderGuestConfig,
  renderGuestEnvironment,
  renderGuestNetwork,
} from "./guest.ts";

Deno.test("guest config: the fixed endpoint (https with TLS), quoted values", () => {
  const text = renderGuestConfig({
    sandboxId: "sb-1",
    sandboxName: "it's $(rm -rf /)",
    logLevel: "debug",
    tls: false,
  });
  assert.equal(guestEndpoint(false), "http://gateway.openshell.internal:8080");
  assert.match(text, /^OPENSHELL_ENDPOINT=http:\/\/gateway\.openshell\.internal:8080$/m);
  const secure = renderGuestConfig({
    sandboxId: "s",
    sandboxName: "n",
    logLevel: "info",
    tls: true,
  });
  assert.match(secure, /^OPENSHELL_ENDPOINT=https:\/\/gateway\.openshell\.internal:8080$/m);
  assert.match(text, /^OPENSHELL_SANDBOX_ID=sb-1$/m);
  assert.match(text, /^OPENSHELL_SANDBOX='it'"'"'s \$\(rm -rf \/\)'$/m);
  assert.match(text, /^OPENSHELL_GATEWAY_IP=10\.0\.2\.100$/m);
  assert.match(text, /^OPENSHELL_HOSTNAME=it-s---rm--rf$/m, "the host name is a DNS label");
});

Deno.test("guest host name: the sandbox name as a DNS label", () => {
  assert.equal(guestHostname("dev"), "dev");
  assert.equal(guestHostname("My.Box_1"), "my-box-1");
  assert.equal(guestHostname("-x-"), "x");
  assert.equal(guestHostname("a".repeat(100)), "a".repeat(63));
  assert.equal(guestHostname("$(){}"), DEFAULT_GUEST_HOSTNAME);
  assert.equal(guestHostname(""), DEFAULT_GUEST_HOSTNAME);
});

Deno.test("guest config: sourcing it in sh gives back the exact values", async () => {
  const name = `we'ird "name" $HOME \`x\``;
  const text = renderGuestConfig({
    sandboxId: "sb-2",
    sandboxName: name,
    logLevel: "info",
    tls: false,
  });
  const out = await new Deno.Command("sh", {
    args: ["-c", `${text}\nprintf %s "$OPENSHELL_SANDBOX"`],
    stdout: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(out.stdout), name);
});

Deno.test("guest environment: a sorted JSON object, names checked", () => {
  assert.equal(renderGuestEnvironment({ B: "2 '3\"", A: "1" }), '{"A":"1","B":"2 \'3\\""}\n');
  assert.deepEqual(JSON.parse(renderGuestEnvironment({ K: "v" })), { K: "v" });
  assert.throws(() => renderGuestEnvironment({ "BAD-NAME": "x" }), /invalid variable name/);
});

Deno.test("guest config: no network settings in it (they are per boot, see renderGuestNetwork)", () => {
  const text = renderGuestConfig({
    sandboxId: "i",
    sandboxName: "n",
    logLevel: "info",
    tls: false,
  });
  assert.doesNotMatch(text, /DNS|PROXY|EGRESS/);
});

Deno.test("guest network: the proxy URL and name server with egress on; both empty when off", async () => {
  const on = renderGuestNetwork({ egress: true });
  assert.match(on, /^OPENSHELL_EGRESS_PROXY=http:\/\/10\.0\.2\.101:3128$/m);
  assert.match(on, /^OPENSHELL_EGRESS_DNS=10\.0\.2\.101$/m);
  const off = renderGuestNetwork({ egress: false });
  assert.match(off, /^OPENSHELL_EGRESS_PROXY=''$/m);
  assert.match(off, /^OPENSHELL_EGRESS_DNS=''$/m);
  // The init sources it with sh.
  const out = await new Deno.Command("sh", {
    args: ["-c", `${on}\nprintf '%s %s' "$OPENSHELL_EGRESS_PROXY" "$OPENSHELL_EGRESS_DNS"`],
    stdout: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(out.stdout), "http://10.0.2.101:3128 10.0.2.101");
});

Deno.test("guest environment: with egress on, every proxy variable in both cases, and NO_PROXY", () => {
  const url = "http://10.0.2.101:3128";
  assert.equal(GUEST_PROXY_URL, url);
  assert.equal(GUEST_PROXY_URL, `http://${GUEST_NET.egressAlias}:${GUEST_EGRESS.proxyPort}`);
  assert.deepEqual(egressEnvironment(), {
    HTTP_PROXY: url,
    HTTPS_PROXY: url,
    ALL_PROXY: url,
    http_proxy: url,
    https_proxy: url,
    all_proxy: url,
    NO_PROXY: "localhost,127.0.0.1,::1",
    no_proxy: "localhost,127.0.0.1,::1",
  });
  // The sandbox's own variables stay; the proxy's win (it is the only way out).
  const on = bootEnvironment({ FOO: "bar", https_proxy: "http://elsewhere:1" }, true);
  assert.equal(on.FOO, "bar");
  assert.equal(on.https_proxy, url);
  assert.equal(Object.keys(on).length, 9);
  // Off: exactly the sandbox's own, proxy variables it set included.
  assert.deepEqual(bootEnvironment({ FOO: "bar", https_proxy: "http://elsewhere:1" }, false), {
    FOO: "bar",
    https_proxy: "http://elsewhere:1",
  });
  assert.deepEqual(bootEnvironment({}, false), {});
  // Rendered like any environment (sorted JSON the supervisor reads).
  const json = JSON.parse(renderGuestEnvironment(bootEnvironment({}, true)));
  assert.equal(json.ALL_PROXY, url);
  assert.equal(json.no_proxy, "localhost,127.0.0.1,::1");
});
