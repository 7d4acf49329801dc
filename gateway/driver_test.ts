import assert from "node:assert/strict";
import { Logger } from "../core/log.ts";
import { passDriverLine } from "./driver.ts";

Deno.test("passDriverLine: the driver's log lines once, under the gateway's timestamp", () => {
  const lines: string[] = [];
  const log = new Logger({ target: "gateway", sink: (l) => lines.push(l), now: () => 0 });
  passDriverLine(log, "2020-05-05T05:05:05.000Z WARN  openshell-driver-vm: VM exited status=1");
  passDriverLine(log, "qemu-system-x86_64: warning: something");
  passDriverLine(log, "");
  passDriverLine(log, "2020-05-05T05:05:05.000Z DEBUG openshell-driver-vm: below the level");
  assert.deepEqual(lines, [
    "1970-01-01T00:00:00.000Z WARN  openshell-driver-vm: VM exited status=1",
    "1970-01-01T00:00:00.000Z INFO  gateway: qemu-system-x86_64: warning: something component=driver",
  ]);
});
