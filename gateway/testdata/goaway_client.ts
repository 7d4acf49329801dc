/**
 * One client of the GOAWAY stress test, as its own process: a supervisor
 * session on the supervisor plane for a sandbox that echoes every relay, a
 * unary call before and after (refused there: PERMISSION_DENIED), then a
 * graceful channel close (GOAWAY) and exit.
 *
 * Usage: OPENSHELL_SUPERVISOR_TOKEN=T goaway_client.ts PORT SANDBOX_ID
 * HOST_KEY_FINGERPRINT [CHUNK] (prints "accepted" when its session is up;
 * exits after its relay ended).
 */
import * as grpc from "@grpc/grpc-js";
import { SUPERVISOR_TOKEN_METADATA } from "../../core/provisioning.ts";
import { relayFrameDuplex } from "../../core/bridge.ts";
import { type GatewayMessage, OpenShellClient } from "../../core/protocol.ts";

const [port, sandboxId, fingerprint, chunk = "16384"] = Deno.args;
const md = new grpc.Metadata();
md.set(SUPERVISOR_TOKEN_METADATA, Deno.env.get("OPENSHELL_SUPERVISOR_TOKEN") ?? "");
const client = new OpenShellClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
  "grpc-node.flow_control_window": 4 * 1024 * 1024,
});
/** A unary exchange on this connection; the supervisor plane answers it PERMISSION_DENIED. */
const health = () =>
  new Promise<void>((res, rej) =>
    client.Health({}, (e) => e?.code === grpc.status.PERMISSION_DENIED ? res() : rej(e ?? "served"))
  );

await health();
await health();
await health();
const session = client.ConnectSupervisor(md);
const relayDone = new Promise<void>((resolve) => {
  session.on("data", (m: GatewayMessage) => {
    if (m.payload === "session_accepted") console.log("accepted");
    if (m.payload !== "relay_open") return;
    const call = client.RelayStream(md);
    call.write({ init: { channel_id: m.relay_open.channel_id } });
    const relay = relayFrameDuplex(call, { abort: () => call.cancel(), chunkBytes: Number(chunk) });
    relay.on("data", (c: Uint8Array) => {
      if (!relay.write(c)) {
        relay.pause();
        relay.once("drain", () => relay.resume());
      }
    });
    relay.on("end", () => relay.end());
    relay.on("error", () => {});
    // The gateway completes the call once it has every byte we sent.
    call.on("status", () => resolve());
  });
});
session.on("error", () => {});
session.write({
  hello: {
    sandbox_id: sandboxId,
    instance_id: crypto.randomUUID(),
    ssh_host_key_fingerprint: fingerprint,
  },
});
await relayDone;
await health();
session.cancel();
client.close(); // graceful: the channel sends GOAWAY, then the process ends on its own
