/**
 * One client of the driver's GOAWAY stress test, as its own process (what
 * the gateway is to the driver): a WatchSandboxes stream, MiB-sized unary
 * calls, then a graceful channel close (GOAWAY) and exit.
 *
 * Usage: goaway_client.ts SOCKET MIB  (prints "done" before closing).
 */
import * as grpc from "@grpc/grpc-js";
import { ComputeDriverClient, unaryCall } from "../../core/protocol.ts";

const [socket, mib = "32"] = Deno.args;
const client = new ComputeDriverClient(`unix:${socket}`, grpc.credentials.createInsecure(), {
  "grpc-node.flow_control_window": 4 * 1024 * 1024,
});

const watch = client.WatchSandboxes({});
watch.on("data", () => {});
watch.on("error", () => {});
await unaryCall(client, client.GetCapabilities, {});
// 4 MiB per call: a large environment value the driver validates and drops.
const value = "x".repeat(4 * 1024 * 1024);
for (let sent = 0; sent < Number(mib); sent += 4) {
  await unaryCall(client, client.ValidateSandboxCreate, {
    sandbox: { id: "stress", spec: { environment: { BIG: value } } },
  });
}
await unaryCall(client, client.GetCapabilities, {});
console.log("done");
watch.cancel();
client.close();
