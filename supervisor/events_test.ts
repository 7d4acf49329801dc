import assert from "node:assert/strict";
import type { NetworkActivityEvent } from "../core/ocsf.ts";
import { VERSION } from "../core/version.ts";
import { SupervisorEvents } from "./events.ts";

Deno.test("events: each of the six is stamped with sandbox, gateway and product", () => {
  const seen: NetworkActivityEvent[] = [];
  const events = new SupervisorEvents({
    sandboxId: "sb-9",
    endpoint: "https://gateway.openshell.internal:8080",
    sink: (e) => seen.push(e),
    now: () => 1234,
  });
  events.sessionOpened({ sessionId: "s", heartbeatSecs: 15 });
  events.sessionFailed({ attempt: 2, error: "boom", retryInMs: 2000, sessionId: "s" });
  events.sessionClosed({ sessionId: "s", reason: "stopping" });
  events.relayOpened({ channelId: "c" });
  events.relayClosed({ channelId: "c", bytesToGateway: 5, bytesFromGateway: 7 });
  events.relayFailed({ channelId: "c", error: "reset" });
  assert.deepEqual(
    seen.map((e) => [e.activity_name, e.severity, e.status]),
    [
      ["Open", "Informational", "Success"],
      ["Fail", "Low", "Failure"],
      ["Close", "Informational", "Success"],
      ["Open", "Informational", "Success"],
      ["Close", "Informational", "Success"],
      ["Fail", "Low", "Failure"],
    ],
  );
  for (const e of seen) {
    assert.equal(e.class_uid, 4001);
    assert.equal(e.time, 1234);
    assert.deepEqual(e.dst_endpoint, { hostname: "gateway.openshell.internal", port: 8080 });
    assert.equal(e.unmapped.sandbox_id, "sb-9");
    assert.equal(e.metadata.product.name, "openshell-sandbox");
    assert.equal(e.metadata.product.version, VERSION);
    assert.doesNotThrow(() => JSON.parse(JSON.stringify(e)));
  }
  assert.equal(seen[1].unmapped.retry_in_ms, 2000);
  assert.equal(seen[4].unmapped.bytes_from_gateway, 7);
  assert.equal(seen[5].status_detail, "reset");
});
