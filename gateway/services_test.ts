import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { Logger } from "../core/log.ts";
import { OpenShellClient } from "../core/protocol.ts";
import { type GatewayConfig, parseGatewayConfig } from "./config.ts";
import {
  createServices,
  type GatewayServices,
  openStore,
  type ServiceEndpoints,
} from "./services.ts";

function config(args: string[]): GatewayConfig {
  const r = parseGatewayConfig(
    ["--state-dir", "/nonexistent", "--db-url", "sqlite::memory:", "--drivers", "none", ...args],
    () => undefined,
  );
  assert.ok(!r.help);
  return r.config;
}

/** Calls a unary handler as grpc-js would; resolves with its answer, rejects with its status. */
function callUnary<Req, Res>(handler: grpc.handleUnaryCall<Req, Res>, request: Req): Promise<Res> {
  return new Promise((resolve, reject) =>
    handler(
      { request } as grpc.ServerUnaryCall<Req, Res>,
      (err, value) => err ? reject(err) : resolve(value as Res),
    )
  );
}

async function withServices(
  args: string[],
  fn: (s: GatewayServices, endpoints: ServiceEndpoints) => Promise<void>,
): Promise<void> {
  const endpoints: ServiceEndpoints = {};
  const s = createServices(config(args), {
    log: new Logger({ level: "error", sink: () => {} }),
    supervisorCa: "CA PEM",
    endpoints,
  });
  try {
    await fn(s, endpoints);
  } finally {
    s.tunnel.closeAll();
    await s.compute.stop();
    s.registry.close();
    await s.egressPolicies?.close();
    s.store.close();
  }
}

Deno.test("createServices: a handler for every method of openshell.v1.OpenShell", async () => {
  await withServices([], (s) => {
    const methods = Object.keys(OpenShellClient.service).sort();
    assert.deepEqual(Object.keys(s.handlers).sort(), methods);
    for (const m of methods) {
      assert.equal(typeof s.handlers[m], "function", `${m} has a handler`);
    }
    assert.equal(s.egressPolicies, undefined, "no egress policies with --drivers none");
    return Promise.resolve();
  });
});

Deno.test("createServices: the endpoints are read when a request needs them, after listening", async () => {
  await withServices([], async (s, endpoints) => {
    const { sandbox } = await callUnary(s.handlers.CreateSandbox, { name: "byo" } as never);
    endpoints.supervisor = "https://127.0.0.1:9443";
    const creds = await callUnary(s.handlers.IssueSupervisorCredentials, { name: "byo" } as never);
    assert.equal(creds.sandbox_id, sandbox?.id);
    assert.equal(creds.endpoint, "https://127.0.0.1:9443");
    assert.equal(creds.ca_cert_pem, "CA PEM");
    const health = await callUnary(s.handlers.Health, {} as never);
    assert.equal(health.status, "SERVICE_STATUS_HEALTHY", "no driver expected, so healthy");
  });
});

Deno.test("openStore: in memory, in a file, postgres refused", async () => {
  openStore({ db: { kind: "sqlite-memory" } }).close();
  const dir = await Deno.makeTempDir();
  try {
    openStore({ db: { kind: "sqlite-file", path: `${dir}/g.db` } }).close();
    assert.ok((await Deno.stat(`${dir}/g.db`)).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(
    () => openStore({ db: { kind: "postgres", url: "postgres://x" } as never }),
    /^Error: postgres is not supported yet$/,
  );
});
