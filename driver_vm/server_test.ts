import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import net from "node:net";
import { MAX_CONCURRENT_STREAMS } from "../core/h2_forward.ts";
import {
  ComputeDriverClient,
  type DriverWatchSandboxesEvent,
  unaryCall,
} from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { VmDriver } from "./driver.ts";
import { serveDriver } from "./server.ts";
import { waitFor } from "../core/testing.ts";
import { FakeLauncher, fakeRuntime, memoryLogger } from "./testing.ts";

Deno.test("server: the whole ComputeDriver service over a Unix socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmsrv" });
  const socket = `${dir}/compute-driver.sock`;
  await Deno.writeTextFile(socket, "stale"); // a stale file is replaced
  const launcher = new FakeLauncher();
  const { log } = memoryLogger();
  const driver = new VmDriver({
    stateDir: dir,
    runtime: await fakeRuntime(`${dir}/rt`),
    image: () => Promise.resolve({ path: `${dir}/rt/rootfs.img`, key: "fakeimage", format: "raw" }),
    launcher,
    accel: () => Promise.resolve("tcg"),
    vcpus: 1,
    memMib: 256,
    logLevel: "info",
    gateway: { host: "127.0.0.1", port: 1 },
    forwarder: "socat",
    log,
    stopGraceMs: 50,
  });
  const server = await serveDriver(driver, { socket, log });
  // grpc-js listens on its own socket; the public one is the GOAWAY-filtering front.
  assert.ok((await Deno.stat(`${dir}/grpc.sock`)).isSocket);
  const h2 = http2.connect("http://driver", { createConnection: () => net.connect(socket) });
  h2.on("error", () => {});
  const settings = await new Promise<http2.Settings>((r) => h2.once("remoteSettings", r));
  assert.equal(settings.maxConcurrentStreams, MAX_CONCURRENT_STREAMS);
  await new Promise<void>((r) => h2.close(() => r())); // a GOAWAY, removed on the way
  await waitFor("the GOAWAY was removed", () => server.front.stats.goawaysDropped === 1);
  const client = new ComputeDriverClient(
    `unix:${socket}`,
    grpc.credentials.createInsecure(),
  );
  const events: DriverWatchSandboxesEvent[] = [];
  const watch = client.WatchSandboxes({});
  watch.on("data", (e: DriverWatchSandboxesEvent) => events.push(e));
  watch.on("error", () => {});
  try {
    const caps = await unaryCall(client, client.GetCapabilities, {});
    assert.equal(caps.driver_name, "openshell-driver-vm");
    assert.equal(caps.supports_gpu, false);
    assert.equal(caps.gateway_manages_lifecycle, true, "the gateway restarts its sandboxes");

    const sb = { id: "sb-1", name: "one", namespace: "ns", spec: { environment: { A: "1" } } };
    await unaryCall(client, client.ValidateSandboxCreate, { sandbox: sb });
    await unaryCall(client, client.CreateSandbox, { sandbox: sb });
    await assert.rejects(
      unaryCall(client, client.CreateSandbox, { sandbox: sb }),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, Code.ALREADY_EXISTS);
        return true;
      },
    );
    await assert.rejects(
      unaryCall(client, client.CreateSandbox, { sandbox: { ...sb, id: "g", spec: { gpu: true } } }),
      (e: grpc.ServiceError) => e.code === Code.FAILED_PRECONDITION && /GPU/.test(e.details),
    );
    const got = await unaryCall(client, client.GetSandbox, { sandbox_name: "one" });
    assert.equal(got.sandbox!.name, "one");
    assert.equal(got.sandbox!.status!.conditions[0].reason, "Starting");
    await assert.rejects(
      unaryCall(client, client.GetSandbox, { sandbox_id: "nope" }),
      (e: grpc.ServiceError) => e.code === Code.NOT_FOUND,
    );
    const list = await unaryCall(client, client.ListSandboxes, {});
    assert.deepEqual(list.sandboxes.map((s) => s.id), ["sb-1"]);
    await unaryCall(client, client.StopSandbox, { sandbox_id: "sb-1" });
    const stopped = await unaryCall(client, client.GetSandbox, { sandbox_id: "sb-1" });
    assert.equal(stopped.sandbox!.status!.conditions[0].reason, "Stopped");
    await unaryCall(client, client.StartSandbox, { sandbox_name: "one" });
    assert.equal(launcher.vms.length, 2, "started again");
    await assert.rejects(
      unaryCall(client, client.StartSandbox, { sandbox_id: "nope" }),
      (e: grpc.ServiceError) => e.code === Code.NOT_FOUND,
    );

    launcher.vms[1].exit(3);
    await waitFor(
      "a ProcessExited event on the watch stream",
      () =>
        events.some((e) =>
          e.payload === "platform_event" && e.platform_event.event!.reason === "ProcessExited"
        ),
      { timeoutMs: 3_000, intervalMs: 10 },
    );
    const exited = events.findLast((e) => e.payload === "sandbox");
    assert.ok(exited?.payload === "sandbox");
    assert.match(
      exited.sandbox.sandbox!.status!.conditions[0].message,
      /^VM process exited with status 3; /,
    );

    const del = await unaryCall(client, client.DeleteSandbox, { sandbox_id: "sb-1" });
    assert.equal(del.deleted, true);
    const again = await unaryCall(client, client.DeleteSandbox, { sandbox_id: "sb-1" });
    assert.equal(again.deleted, false);
    await waitFor(
      "a Deleted event on the watch stream",
      () => events.at(-1)?.payload === "deleted",
      {
        timeoutMs: 3_000,
        intervalMs: 10,
      },
    );
  } finally {
    watch.cancel();
    client.close();
    await driver.shutdown(10);
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
