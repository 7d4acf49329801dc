import assert from "node:assert/strict";
import type { Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { OpenShellClient, type RelayFrame, type Wire } from "../core/protocol.ts";
import { RELAY_CHUNK_BYTES } from "../core/bridge.ts";
import { FlagError } from "../core/flags.ts";
import {
  apiClient,
  byoSupervisor,
  type FakeSupervisor,
  sendConnect,
  spawnGateway,
} from "../testing/gateway.ts";
import {
  ENV_H2_DEFAULT_WINDOWS,
  ENV_H2_UNIX_HOP,
  ENV_RELAY_CHUNK_BYTES,
  readRelayTuning,
} from "./tuning.ts";

function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

Deno.test("relay tuning: unset means raised windows, the default chunk, in-process hand-over", () => {
  assert.deepEqual(readRelayTuning(envOf({})), {
    defaultH2Windows: false,
    relayChunkBytes: RELAY_CHUNK_BYTES,
    unixHop: false,
  });
  assert.equal(readRelayTuning(envOf({ [ENV_H2_UNIX_HOP]: "1" })).unixHop, true);
  assert.equal(readRelayTuning(envOf({ [ENV_H2_UNIX_HOP]: "0" })).unixHop, false);
});

Deno.test("relay tuning: every knob is read", () => {
  assert.deepEqual(
    readRelayTuning(
      envOf({
        [ENV_H2_DEFAULT_WINDOWS]: "1",
        [ENV_RELAY_CHUNK_BYTES]: "262144",
        [ENV_H2_UNIX_HOP]: "true",
      }),
    ),
    { defaultH2Windows: true, relayChunkBytes: 262144, unixHop: true },
  );
  assert.equal(
    readRelayTuning(envOf({ [ENV_H2_DEFAULT_WINDOWS]: "false" })).defaultH2Windows,
    false,
  );
});

Deno.test("relay tuning: bad values are one-line FlagErrors naming the variable", () => {
  for (const v of ["0", "512", "abc", "1e5", "-65536", "2000000"]) {
    assert.throws(
      () => readRelayTuning(envOf({ [ENV_RELAY_CHUNK_BYTES]: v })),
      (e: Error) =>
        e instanceof FlagError && e.message.startsWith(`${ENV_RELAY_CHUNK_BYTES}: `) &&
        !e.message.includes("\n"),
    );
  }
  assert.throws(
    () => readRelayTuning(envOf({ [ENV_H2_DEFAULT_WINDOWS]: "maybe" })),
    new FlagError(`${ENV_H2_DEFAULT_WINDOWS}: expected true or false, got "maybe"`),
  );
  assert.throws(
    () => readRelayTuning(envOf({ [ENV_H2_UNIX_HOP]: "2" })),
    new FlagError(`${ENV_H2_UNIX_HOP}: expected true or false, got "2"`),
  );
});

Deno.test("relay tuning: the gateway process honours OPENSHELL_RELAY_CHUNK_BYTES", async () => {
  await assert.rejects(
    spawnGateway({ env: { [ENV_RELAY_CHUNK_BYTES]: "tiny" } }),
    /status 2[\s\S]*OPENSHELL_RELAY_CHUNK_BYTES: expected a whole number of bytes/,
  );

  const gw = await spawnGateway({ env: { [ENV_RELAY_CHUNK_BYTES]: "1024" } });
  const api = apiClient(gw.port);
  const client = new OpenShellClient(
    `127.0.0.1:${gw.supervisorPort}`,
    grpc.credentials.createInsecure(),
  );
  let relay: grpc.ClientDuplexStream<Wire<RelayFrame>, RelayFrame> | undefined;
  let sup: FakeSupervisor | undefined;
  let socket: Socket | undefined;
  try {
    const byo = await byoSupervisor(gw, "tuned");
    const sandbox = byo.sandbox;
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(byo.metadata)) md.set(k, v);
    const sizes: number[] = [];
    const total = 10_000;
    let resolveAll!: () => void;
    const all = new Promise<void>((r) => resolveAll = r);
    sup = byo.connect({
      client,
      ignoreRelays: true,
      onMessage: (m) => {
        if (m.payload !== "relay_open") return;
        relay = client.RelayStream(md);
        relay.on("error", () => {});
        relay.write({ init: { channel_id: m.relay_open.channel_id } });
        relay.on("data", (f: RelayFrame) => {
          if (f.payload !== "data") return;
          sizes.push(f.data.length);
          if (sizes.reduce((a, b) => a + b, 0) >= total) resolveAll();
        });
      },
    });
    await sup.accepted;
    const { token } = await api.call(api.raw.CreateSshSession, {
      sandbox_id: sandbox.id,
    });
    const t = await sendConnect(gw.port, { "x-sandbox-id": sandbox.id, "x-sandbox-token": token });
    socket = t.socket;
    assert.equal(t.status, 200, t.head);
    socket.write(new Uint8Array(total));
    await all;
    assert.ok(Math.max(...sizes) <= 1024, `frames of ${sizes.join(",")} bytes`);
    assert.ok(sizes.length >= total / 1024);
  } finally {
    socket?.destroy();
    relay?.cancel();
    sup?.close();
    client.close();
    api.close();
    await gw.stop();
  }
});
