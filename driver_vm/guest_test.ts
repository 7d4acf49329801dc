import assert from "node:assert/strict";
import {
  DEFAULT_GUEST_HOSTNAME,
  guestEndpoint,
  guestHostname,
  renderGuestConfig,
  renderGuestEnvironment,
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

Deno.test("guest config: a name server only with --allow-egress", () => {
  const text = renderGuestConfig({
    sandboxId: "i",
    sandboxName: "n",
    logLevel: "info",
    tls: false,
  });
  assert.match(text, /^OPENSHELL_GUEST_DNS=''$/m);
  const open = renderGuestConfig({
    sandboxId: "i",
    sandboxName: "n",
    logLevel: "info",
    tls: false,
    dns: "10.0.2.3",
  });
  assert.match(open, /^OPENSHELL_GUEST_DNS=10\.0\.2\.3$/m);
});
