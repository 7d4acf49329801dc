import assert from "node:assert/strict";
import { ComputeDriverClient, OpenShellClient } from "./protocol.ts";

function methods(
  ctor: {
    service: Record<string, { path: string; requestStream: boolean; responseStream: boolean }>;
  },
) {
  return Object.fromEntries(
    Object.values(ctor.service).map((
      m,
    ) => [m.path, `${m.requestStream ? "stream " : ""}->${m.responseStream ? " stream" : ""}`]),
  );
}

Deno.test("OpenShell service has the upstream method paths and streaming shapes", () => {
  assert.deepEqual(methods(OpenShellClient as never), {
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
  assert.deepEqual(Object.keys(methods(ComputeDriverClient as never)).sort(), [
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
  const svc = (OpenShellClient as unknown as {
    service: Record<
      string,
      {
        requestSerialize: (m: unknown) => Uint8Array;
        requestDeserialize: (b: Uint8Array) => unknown;
      }
    >;
  }).service;
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
