import assert from "node:assert/strict";
import type { DriverSandboxTemplate, Wire } from "../core/protocol.ts";
import { toStruct } from "../core/resources.ts";
import { Code, StatusError } from "../core/status.ts";
import { describeResources, resolveResources, type VmResources } from "./resources.ts";

const defaults: VmResources = { vcpus: 2, memMib: 1024, diskGiB: 8 };
const host = { cpus: 8, memMib: 16384 };

function template(
  r: { cpu?: string; cpuReq?: string; mem?: string; memReq?: string } = {},
  raw?: Record<string, never> | Record<string, unknown>,
): Wire<DriverSandboxTemplate> {
  return {
    resources: {
      cpu_limit: r.cpu ?? "",
      cpu_request: r.cpuReq ?? "",
      memory_limit: r.mem ?? "",
      memory_request: r.memReq ?? "",
    },
    platform_config: raw ? toStruct(raw as never) : null,
  };
}

function fails(t: Wire<DriverSandboxTemplate>, code: number, re: RegExp, h = host): void {
  assert.throws(() => resolveResources(t, { defaults, host: h }), (e: unknown) => {
    assert.ok(e instanceof StatusError);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("resources: nothing asked → the driver's defaults", () => {
  assert.deepEqual(resolveResources(null, { defaults, host }), defaults);
  assert.deepEqual(resolveResources(template(), { defaults, host }), defaults);
  // Defaults are the operator's: not checked against the host.
  assert.deepEqual(resolveResources(null, { defaults, host: { cpus: 1, memMib: 512 } }), defaults);
});

Deno.test("resources: limits win over requests; CPUs round up; memory in MiB; disk in GiB", () => {
  const got = resolveResources(
    template({ cpu: "2500m", cpuReq: "1", mem: "2Gi", memReq: "1Gi" }, {
      resources_raw: {
        limits: { "ephemeral-storage": "20Gi" },
        requests: { "ephemeral-storage": "10Gi" },
      },
    }),
    { defaults, host },
  );
  assert.deepEqual(got, { vcpus: 3, memMib: 2048, diskGiB: 20 });
  // A request alone is used as the size.
  assert.deepEqual(
    resolveResources(
      template({ cpuReq: "1", memReq: "1536Mi" }, {
        resources_raw: { requests: { "ephemeral-storage": "10G" } },
      }),
      { defaults, host },
    ),
    { vcpus: 1, memMib: 1536, diskGiB: 10 },
  );
  assert.equal(describeResources(got), "3 vCPUs, 2048 MiB memory, 20 GiB disk");
  assert.equal(
    describeResources({ vcpus: 1, memMib: 512, diskGiB: 1 }),
    "1 vCPU, 512 MiB memory, 1 GiB disk",
  );
});

Deno.test("resources: malformed or impossible is INVALID_ARGUMENT", () => {
  fails(template({ cpu: "lots" }), Code.INVALID_ARGUMENT, /^cpu limit must be a number of CPUs/);
  fails(template({ mem: "2 GB" }), Code.INVALID_ARGUMENT, /^memory limit must be a size/);
  fails(
    template({ cpu: "1", cpuReq: "2" }),
    Code.INVALID_ARGUMENT,
    /cpu request 2 is above its limit 1/,
  );
  fails(template({ mem: "128Mi" }), Code.INVALID_ARGUMENT, /at least 256Mi, asked 128Mi/);
  fails(template({ cpu: "100" }), Code.INVALID_ARGUMENT, /at most 64 CPUs/, {
    cpus: 1000,
    memMib: 1,
  });
  fails(
    template({}, { resources_raw: { limits: { "ephemeral-storage": "3Ti" } } }),
    Code.INVALID_ARGUMENT,
    /at most 2048Gi per sandbox, asked 3072Gi/,
  );
  fails(
    template({}, { resources_raw: { limits: { "ephemeral-storage": true } } }),
    Code.INVALID_ARGUMENT,
    /must be a quantity/,
  );
  fails(template({}, { resources_raw: "x" }), Code.INVALID_ARGUMENT, /must be an object/);
});

Deno.test("resources: more than the host has is RESOURCE_EXHAUSTED, naming both numbers", () => {
  fails(
    template({ cpu: "9" }),
    Code.RESOURCE_EXHAUSTED,
    /^cpu: the sandbox asks for 9 CPUs; this host has 8$/,
  );
  fails(
    template({ mem: "32Gi" }),
    Code.RESOURCE_EXHAUSTED,
    /^memory: the sandbox asks for 32768 MiB; this host has 16384 MiB$/,
  );
  // Unknown host limits are not checked.
  assert.equal(resolveResources(template({ mem: "32Gi" }), { defaults, host: {} }).memMib, 32768);
});

Deno.test("resources: what the VM driver cannot honour is FAILED_PRECONDITION", () => {
  fails(
    template({}, { resources_raw: { limits: { "nvidia.com/gpu": "1" } } }),
    Code.FAILED_PRECONDITION,
    /does not support resource limits\.nvidia\.com\/gpu/,
  );
  fails(
    template({}, { runtime_class_name: "kata" }),
    Code.FAILED_PRECONDITION,
    /platform_config\.runtime_class_name/,
  );
  fails(
    template({}, { resources_raw: { claims: [] } }),
    Code.FAILED_PRECONDITION,
    /resources\.claims/,
  );
});
