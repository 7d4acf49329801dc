/**
 * One client of the GOAWAY stress test, as its own process: a supervisor
 * session for a sandbox that echoes every relay, a unary call before and
 * after, then a graceful channel close (GOAWAY) and exit.
 *
 * Usage: goaway_client.ts PORT SANDBOX_ID  (prints "accepted" when its
 * session is up; exits after its relay ended).
 */
import * as grpc from "@grpc/grpc-js";
import { relayFrameDuplex } from "../../core/bridge.ts";
import {
  type GatewayMessage,
  OpenShellClient,
  type RelayFrame,
  type SupervisorMessage,
  type Wire,
} from "../../core/protocol.ts";

const [port, sandboxId, chunk = "16384"] = Deno.args;
const client = new OpenShellClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
  "grpc-node.flow_control_window": 4 * 1024 * 1024,
}) as unknown as grpc.Client & {
  Health(r: unknown, cb: (e: unknown) => void): void;
  ConnectSupervisor(): grpc.ClientDuplexStream<Wire<SupervisorMessage>, GatewayMessage>;
  RelayStream(): grpc.ClientDuplexStream<Wire<RelayFrame>, RelayFrame>;
};
const health = () => new Promise<void>((res, rej) => client.Health({}, (e) => e ? rej(e) : res()));

await health();
await health();
await health();
const session = client.ConnectSupervisor();
const relayDone = new Promise<void>((resolve) => {
  session.on("data", (m: GatewayMessage) => {
    if (m.payload === "session_accepted") console.log("accepted");
    if (m.payload !== "relay_open") return;
    const call = client.RelayStream();
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
session.write({ hello: { sandbox_id: sandboxId, instance_id: crypto.randomUUID() } });
await relayDone;
await health();
session.cancel();
client.close(); // graceful: the channel sends GOAWAY, then the process ends on its own
