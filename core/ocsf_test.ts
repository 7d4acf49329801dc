import assert from "node:assert/strict";
import {
  egressDecision,
  endpointOf,
  type OcsfContext,
  readOcsfLine,
  relayClosed,
  relayFailed,
  relayOpened,
  sessionClosed,
  sessionFailed,
  sessionOpened,
} from "./ocsf.ts";

const ctx: OcsfContext = {
  sandboxId: "sb-1",
  gateway: { hostname: "gateway.openshell.internal", port: 8080 },
  productVersion: "9.9.9",
  now: () => 1_700_000_000_000,
};

Deno.test("endpointOf strips scheme and path and fills the default port", () => {
  assert.deepEqual(endpointOf("http://127.0.0.1:9000/"), { hostname: "127.0.0.1", port: 9000 });
  assert.deepEqual(endpointOf("https://gw.example/x/y"), { hostname: "gw.example", port: 443 });
  assert.deepEqual(endpointOf("http://gw.example"), { hostname: "gw.example", port: 80 });
  assert.deepEqual(endpointOf("https://[::1]:8443"), { hostname: "::1", port: 8443 });
  assert.deepEqual(endpointOf("gw:7"), { hostname: "gw", port: 7 });
  assert.deepEqual(endpointOf("gw"), { hostname: "gw", port: 0 });
});

Deno.test("session open: Open / Informational / Success with session id and heartbeat", () => {
  const e = sessionOpened(ctx, { sessionId: "s-42", heartbeatSecs: 15 });
  assert.equal(e.class_uid, 4001);
  assert.equal(e.category_uid, 4);
  assert.equal(e.activity_id, 1);
  assert.equal(e.activity_name, "Open");
  assert.equal(e.type_uid, 400101);
  assert.equal(e.severity_id, 1);
  assert.equal(e.status_id, 1);
  assert.equal(e.status, "Success");
  assert.match(e.message, /session_id=s-42/);
  assert.match(e.message, /heartbeat_secs=15/);
  assert.deepEqual(e.dst_endpoint, { hostname: "gateway.openshell.internal", port: 8080 });
  assert.equal(e.time, 1_700_000_000_000);
  assert.equal(e.metadata.version, "1.3.0");
  assert.equal(e.metadata.product.name, "openshell-sandbox");
  assert.equal(e.unmapped.sandbox_id, "sb-1");
});

Deno.test("session close: Close / Informational / Success", () => {
  const e = sessionClosed(ctx, { sessionId: "s-1", reason: "shutting down" });
  assert.equal(e.activity_id, 2);
  assert.equal(e.type_uid, 400102);
  assert.equal(e.severity, "Informational");
  assert.equal(e.status, "Success");
  assert.match(e.message, /shutting down/);
});

Deno.test("session fail: Fail / Low / Failure with attempt and error", () => {
  const e = sessionFailed(ctx, { attempt: 3, error: "connection refused", retryInMs: 4000 });
  assert.equal(e.activity_id, 4);
  assert.equal(e.type_uid, 400104);
  assert.equal(e.severity_id, 2);
  assert.equal(e.severity, "Low");
  assert.equal(e.status_id, 2);
  assert.equal(e.status, "Failure");
  assert.equal(e.status_detail, "connection refused");
  assert.match(e.message, /reconnecting \(attempt 3\)/);
  assert.equal(e.unmapped.retry_in_ms, 4000);
});

Deno.test("relay open / close / fail carry the channel id and the right activity", () => {
  const open = relayOpened(ctx, { channelId: "ch-1" });
  assert.equal(open.activity_name, "Open");
  assert.equal(open.status, "Success");
  assert.equal(open.unmapped.channel_id, "ch-1");

  const close = relayClosed(ctx, { channelId: "ch-1", bytesToGateway: 10, bytesFromGateway: 20 });
  assert.equal(close.activity_name, "Close");
  assert.equal(close.severity, "Informational");
  assert.equal(close.unmapped.bytes_to_gateway, 10);
  assert.equal(close.unmapped.bytes_from_gateway, 20);

  const fail = relayFailed(ctx, { channelId: "ch-1", error: "socket refused" });
  assert.equal(fail.activity_name, "Fail");
  assert.equal(fail.severity, "Low");
  assert.equal(fail.status, "Failure");
  assert.match(fail.message, /ch-1: socket refused/);
});

Deno.test("readOcsfLine: an event line gives its message and a level; other text gives nothing", () => {
  const opened = readOcsfLine(JSON.stringify(relayOpened(ctx, { channelId: "c1" })));
  assert.equal(opened?.message, "relay opened channel_id=c1");
  assert.equal(opened?.level, "info");
  assert.equal(opened?.event.class_uid, 4001);
  const failed = readOcsfLine(JSON.stringify(relayFailed(ctx, { channelId: "c2", error: "x" })));
  assert.equal(failed?.level, "warn");
  const high = readOcsfLine('{"class_uid":4001,"message":"m","severity_id":4}');
  assert.equal(high?.level, "error");
  for (
    const other of [
      "plain",
      '{"class_uid":"4001","message":"m"}',
      '{"class_uid":4001}',
      '["class_uid"]',
      '{"class_uid":4001,"message":"m"',
      "2026-01-01T00:00:00.000Z INFO  x: class_uid",
    ]
  ) {
    assert.equal(readOcsfLine(other), undefined, other);
  }
});

Deno.test("egress decisions: allowed Open/Success, audit Open/Low, denied Refuse/Failure", () => {
  const ectx = { productVersion: "9.9.9", now: () => 1_700_000_000_000 };
  const ok = egressDecision(ectx, {
    sandboxId: "sb-1",
    decision: "allowed",
    host: "pypi.org",
    port: 443,
    rule: "pypi",
    ip: "151.101.0.223",
    via: "connect",
  });
  assert.equal(ok.class_uid, 4001);
  assert.equal(ok.activity_name, "Open");
  assert.equal(ok.status, "Success");
  assert.equal(ok.action_id, 1);
  assert.equal(ok.action, "Allowed");
  assert.equal(ok.message, "egress allowed pypi.org:443 rule=pypi");
  assert.deepEqual(ok.dst_endpoint, { hostname: "pypi.org", port: 443, ip: "151.101.0.223" });
  assert.deepEqual(ok.unmapped, {
    sandbox_id: "sb-1",
    decision: "allowed",
    policy_name: "pypi",
    via: "connect",
  });
  assert.equal(ok.metadata.product.name, "openshell-egress");
  assert.equal(ok.time, 1_700_000_000_000);
  assert.equal(readOcsfLine(JSON.stringify(ok))?.level, "info");

  const denied = egressDecision(ectx, {
    sandboxId: "sb-1",
    decision: "denied",
    host: "2001:db8::1",
    port: 22,
    reason: "no rule allows this host and port",
  });
  assert.equal(denied.activity_name, "Refuse");
  assert.equal(denied.activity_id, 5);
  assert.equal(denied.status, "Failure");
  assert.equal(denied.action_id, 2);
  assert.equal(denied.status_detail, "no rule allows this host and port");
  assert.equal(denied.message, "egress denied [2001:db8::1]:22: no rule allows this host and port");
  assert.equal(readOcsfLine(JSON.stringify(denied))?.level, "warn");

  const audit = egressDecision(ectx, {
    sandboxId: "sb-1",
    decision: "audit",
    host: "x.example.com",
    port: 80,
    rule: "watch",
  });
  assert.equal(audit.activity_name, "Open");
  assert.equal(audit.severity, "Low");
  assert.equal(audit.action, "Allowed");
  assert.equal(audit.unmapped.decision, "audit");
  assert.match(audit.message, /^egress audit x\.example\.com:80 rule=watch/);
});
