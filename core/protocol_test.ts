import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import {
  ComputeDriverClient,
  type ExecSandboxEvent,
  OpenShellClient,
  type OpenShellHandlers,
  type Sandbox,
  type SandboxResponse,
  unaryCall,
} from "./protocol.ts";

function methods(ctor: { service: grpc.ServiceDefinition }) {
  return Object.fromEntries(
    Object.values(ctor.service).map((
      m,
    ) => [m.path, `${m.requestStream ? "stream " : ""}->${m.responseStream ? " stream" : ""}`]),
  );
}

Deno.test("OpenShell service has the upstream method paths and streaming shapes", () => {
  assert.deepEqual(methods(OpenShellClient), {
    "/openshell.v1.OpenShell/Health": "->",
    "/openshell.v1.OpenShell/CreateSandbox": "->",
    "/openshell.v1.OpenShell/GetSandbox": "->",
    "/openshell.v1.OpenShell/ListSandboxes": "->",
    "/openshell.v1.OpenShell/DeleteSandbox": "->",
    "/openshell.v1.OpenShell/CreateSshSession": "->",
    "/openshell.v1.OpenShell/RevokeSshSession": "->",
    "/openshell.v1.OpenShell/ExecSandbox": "-> stream",
    "/openshell.v1.OpenShell/GetSandboxLogs": "->",
    "/openshell.v1.OpenShell/GetSandboxPolicyStatus": "->",
    "/openshell.v1.OpenShell/ListSandboxPolicies": "->",
    "/openshell.v1.OpenShell/UpdateConfig": "->",
    "/openshell.v1.OpenShell/IssueSupervisorCredentials": "->",
    "/openshell.v1.OpenShell/ConnectSupervisor": "stream -> stream",
    "/openshell.v1.OpenShell/RelayStream": "stream -> stream",
    "/openshell.v1.OpenShell/WatchSandbox": "-> stream",
    // upstream's stop/start
    "/openshell.v1.OpenShell/StopSandbox": "->",
    "/openshell.v1.OpenShell/StartSandbox": "->",
    // openshell-deno only: images
    "/openshell.v1.OpenShell/ListImages": "->",
    "/openshell.v1.OpenShell/BuildImage": "-> stream",
    "/openshell.v1.OpenShell/ImportImage": "stream ->",
    "/openshell.v1.OpenShell/DeleteImage": "->",
  });
});

Deno.test("ComputeDriver service is complete", () => {
  assert.deepEqual(Object.keys(methods(ComputeDriverClient)).sort(), [
    "/openshell.compute.v1.ComputeDriver/BuildImage",
    "/openshell.compute.v1.ComputeDriver/CreateSandbox",
    "/openshell.compute.v1.ComputeDriver/DeleteImage",
    "/openshell.compute.v1.ComputeDriver/DeleteSandbox",
    "/openshell.compute.v1.ComputeDriver/GetCapabilities",
    "/openshell.compute.v1.ComputeDriver/GetSandbox",
    "/openshell.compute.v1.ComputeDriver/ImportImage",
    "/openshell.compute.v1.ComputeDriver/ListImages",
    "/openshell.compute.v1.ComputeDriver/ListSandboxes",
    "/openshell.compute.v1.ComputeDriver/StartSandbox",
    "/openshell.compute.v1.ComputeDriver/StopSandbox",
    "/openshell.compute.v1.ComputeDriver/ValidateSandboxCreate",
    "/openshell.compute.v1.ComputeDriver/WatchSandboxes",
  ]);
});

Deno.test("messages round-trip with upstream field numbers (RelayFrame data = field 2)", () => {
  const svc = OpenShellClient.service;
  const bytes = svc.RelayStream.requestSerialize({ data: new Uint8Array([1, 2, 3]) });
  // field 2, wire type 2 (length-delimited) = 0x12, length 3
  assert.deepEqual([...bytes], [0x12, 3, 1, 2, 3]);
  const init = svc.RelayStream.requestSerialize({ init: { channel_id: "c" } });
  assert.deepEqual([...init], [0x0a, 3, 0x0a, 1, 0x63]);
  const decoded = svc.RelayStream.requestDeserialize(init) as {
    payload: string;
    init: { channel_id: string };
  };
  assert.equal(decoded.payload, "init");
  assert.equal(decoded.init.channel_id, "c");
  const hello = svc.ConnectSupervisor.requestSerialize({
    hello: { sandbox_id: "s", instance_id: "i" },
  });
  assert.deepEqual([...hello], [0x0a, 6, 0x0a, 1, 0x73, 0x12, 1, 0x69]);
  // The host key fingerprint is field 100 of SupervisorHello: tag (100 << 3 | 2) = 0xa2 0x06.
  const pinned = svc.ConnectSupervisor.requestSerialize({
    hello: { sandbox_id: "s", instance_id: "i", ssh_host_key_fingerprint: "f" },
  });
  assert.deepEqual([...pinned], [0x0a, 10, 0x0a, 1, 0x73, 0x12, 1, 0x69, 0xa2, 0x06, 1, 0x66]);
  const back = svc.ConnectSupervisor.requestDeserialize(pinned) as {
    hello: { ssh_host_key_fingerprint: string };
  };
  assert.equal(back.hello.ssh_host_key_fingerprint, "f");
});

Deno.test("decoded messages have the shapes proto/types.ts declares (defaults, null, oneofs)", () => {
  const svc = OpenShellClient.service;
  const bytes = svc.GetSandbox.responseSerialize({ sandbox: { id: "x" } });
  const res: SandboxResponse = svc.GetSandbox.responseDeserialize(bytes);
  const sb: Sandbox = res.sandbox!;
  assert.equal(sb.id, "x");
  assert.equal(sb.spec, null, "an unset message field is null");
  assert.equal(sb.created_at_ms, 0, "int64 is a number");
  assert.equal(sb.phase, "SANDBOX_PHASE_UNSPECIFIED", "an enum is its value name");
  const spec = svc.CreateSandbox.requestDeserialize(
    svc.CreateSandbox.requestSerialize({ spec: {} }),
  ).spec;
  assert.deepEqual([spec.environment, spec.providers, spec.policy], [{}, [], null]);

  const none: ExecSandboxEvent = svc.ExecSandbox.responseDeserialize(
    svc.ExecSandbox.responseSerialize({}),
  );
  assert.deepEqual(none, {}, "no oneof member set: neither `payload` nor a member");
  const out: ExecSandboxEvent = svc.ExecSandbox.responseDeserialize(
    svc.ExecSandbox.responseSerialize({ stdout: { data: new Uint8Array([7]) } }),
  );
  assert.equal(out.payload, "stdout");
  assert.ok(out.payload === "stdout" && out.stdout.data instanceof Uint8Array);
  assert.ok(!("stderr" in out) && !("exit" in out), "the other members are absent");
});

Deno.test("typed clients: unaryCall and server streams reach typed handlers", async () => {
  const server = new grpc.Server();
  const handlers: Pick<OpenShellHandlers, "GetSandbox" | "ExecSandbox"> = {
    GetSandbox: (call, callback) => callback(null, { sandbox: { id: `id-${call.request.name}` } }),
    ExecSandbox: (call) => {
      call.write({ stdout: { data: new TextEncoder().encode(call.request.command.join(" ")) } });
      call.write({ exit: { exit_code: 0 } });
      call.end();
    },
  };
  server.addService(OpenShellClient.service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  const client = new OpenShellClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const res = await unaryCall(client, client.GetSandbox, { name: "a" });
    assert.equal(res.sandbox?.id, "id-a");
    const events: ExecSandboxEvent[] = [];
    for await (const e of client.ExecSandbox({ command: ["echo", "hi"] })) events.push(e);
    assert.deepEqual(events.map((e) => e.payload), ["stdout", "exit"]);
    assert.ok(events[0].payload === "stdout");
    assert.equal(new TextDecoder().decode(events[0].stdout.data), "echo hi");
    await assert.rejects(
      unaryCall(client, client.Health, {}),
      (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED,
    );
  } finally {
    client.close();
    await new Promise<void>((r) => server.tryShutdown(() => r()));
  }
});
