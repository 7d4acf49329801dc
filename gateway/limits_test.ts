import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
/**
 * Hostile clients against a real gateway process (its exact grants,
 * loopback): oversized ids, garbage bodies, oversized messages and
 * metadata get a short status and the gateway keeps serving; a full page of
 * the largest sandboxes still lists.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { OpenShellClient, unaryCall } from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { waitFor } from "../core/testing.ts";
import { MAX_GRPC_MESSAGE, MAX_GRPC_RECEIVE, MAX_HEADER_LIST_BYTES } from "./server.ts";
import {
  type ApiClient,
  apiClient,
  byoSupervisor,
  connectFakeSupervisor,
  largestSpec,
  spawnGateway,
  type TestGateway,
} from "../testing/gateway.ts";
import { MAX_LIST_LIMIT, specBytes } from "./validation.ts";

const TEST_DEADLINE_MS = 60_000;

async function withGateway(fn: (gw: TestGateway, api: ApiClient) => Promise<void>): Promise<void> {
  const gw = await spawnGateway();
  const api = apiClient(gw.port);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      fn(gw, api),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("test did not finish in time")),
          TEST_DEADLINE_MS,
        );
      }),
    ]);
  } catch (err) {
    console.error(gw.stderr());
    throw err;
  } finally {
    clearTimeout(timer);
    api.close();
    await gw.stop();
  }
}

/** The status a unary call ends with (code 0 when it succeeded). */
function statusOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: 0, details: "" }),
    (e: grpc.ServiceError) => ({ code: e.code, details: e.details }),
  );
}

function streamStatus(call: grpc.ClientReadableStream<unknown>): Promise<grpc.StatusObject> {
  return new Promise((resolve) => {
    call.on("data", () => {});
    call.on("error", () => {});
    call.on("status", resolve);
  });
}

const MIB = 1024 * 1024;

Deno.test("hostile requests get short statuses and the gateway keeps serving", async () => {
  await withGateway(async (gw, api) => {
    const huge = "x".repeat(MIB);
    const short = (s: { code: number; details: string }, code: number, label: string) => {
      assert.equal(s.code, code, `${label}: ${s.details.slice(0, 200)}`);
      assert.ok(s.details.length < 300, `${label}: a ${s.details.length}-character message`);
    };

    // a 1 MiB id comes back as a short NOT_FOUND, not a metadata error
    short(
      await statusOf(api.call(api.raw.GetSandbox, { name: huge })),
      Code.NOT_FOUND,
      "GetSandbox",
    );
    short(
      await statusOf(api.call(api.raw.GetSandboxLogs, { sandbox_id: huge })),
      Code.NOT_FOUND,
      "GetSandboxLogs",
    );
    short(
      await statusOf(api.call(api.raw.CreateSshSession, { sandbox_id: huge })),
      Code.NOT_FOUND,
      "CreateSshSession",
    );
    short(await streamStatus(api.raw.WatchSandbox({ id: huge })), Code.NOT_FOUND, "WatchSandbox");
    short(
      await streamStatus(api.raw.ExecSandbox({ sandbox_id: huge, command: ["true"] })),
      Code.NOT_FOUND,
      "ExecSandbox",
    );
    // A hello with a token but an unknown id: refused as a wrong credential (no id oracle).
    const ghost = connectFakeSupervisor({
      port: gw.port,
      sandboxId: huge,
      metadata: { [SUPERVISOR_TOKEN_METADATA]: "some-token" },
    });
    short(await ghost.ended, Code.PERMISSION_DENIED, "ConnectSupervisor");
    ghost.close();
    const anonymous = connectFakeSupervisor({ port: gw.port, sandboxId: huge });
    short(await anonymous.ended, Code.UNAUTHENTICATED, "ConnectSupervisor");
    anonymous.close();

    // bytes that are not protobuf: INVALID_ARGUMENT (grpc-js alone says INTERNAL)
    const bytes = (b: Buffer) => b;
    const garbage = Buffer.from([0x08, 0xff]);
    const bad = await new Promise<grpc.ServiceError | null>((resolve) =>
      api.raw.makeUnaryRequest(
        "/openshell.v1.OpenShell/CreateSandbox",
        bytes,
        bytes,
        garbage,
        (err) => resolve(err),
      )
    );
    assert.equal(bad?.code, Code.INVALID_ARGUMENT, String(bad?.details));
    assert.match(bad!.details, /^cannot decode the \/openshell\.v1\.OpenShell\/CreateSandbox/);
    const session = api.raw.makeBidiStreamRequest(
      "/openshell.v1.OpenShell/ConnectSupervisor",
      bytes,
      bytes,
    );
    const sessionEnd = streamStatus(session);
    session.write(garbage);
    assert.equal((await sessionEnd).code, Code.INVALID_ARGUMENT);
    session.end();

    // a message past the receive limit is refused from its length prefix
    const big = await statusOf(
      api.call(api.raw.CreateSandbox, {
        name: "big",
        spec: { environment: { A: "a".repeat(MAX_GRPC_RECEIVE + 1) } },
      }),
    );
    assert.equal(big.code, Code.RESOURCE_EXHAUSTED, big.details);

    // metadata past the advertised header list size: RESOURCE_EXHAUSTED on that call
    const md = new grpc.Metadata();
    md.set("x-padding", "p".repeat(2 * MAX_HEADER_LIST_BYTES));
    const padded = await new Promise<grpc.ServiceError | null>((resolve) =>
      api.raw.Health({}, md, resolve)
    );
    assert.equal(padded?.code, Code.RESOURCE_EXHAUSTED, String(padded?.details));
    // 1 MiB of metadata is beyond what HTTP/2 header decoding tolerates: that
    // client's connection ends (with a status on the call), nobody else's
    const other = apiClient(gw.port);
    await other.call(other.raw.Health, {});
    const mega = new grpc.Metadata();
    mega.set("x-padding", "p".repeat(MIB));
    const hit = await new Promise<grpc.ServiceError | null>((resolve) =>
      api.raw.Health({}, mega, resolve)
    );
    assert.ok(hit && hit.code !== Code.OK, "the oversized call fails with a status");
    await other.call(other.raw.Health, {});
    other.close();
    await api.call(api.raw.Health, {}); // the same client reconnects

    // a stream the gateway ends itself logs the status, not "[object Object]"
    const byo = await byoSupervisor(gw, "twice");
    const first = byo.connect();
    await first.accepted;
    const second = byo.connect();
    await second.accepted;
    assert.equal((await first.ended).code, Code.ABORTED);
    await waitFor(
      "the superseded session's stream error in the log",
      () => /supervisor stream error .*error="ABORTED: superseded/.test(gw.stderr()) || undefined,
    );
    first.close();
    second.close();
    assert.doesNotMatch(gw.stderr(), /\[object Object\]/);
    assert.doesNotMatch(gw.stderr(), /x{300}/, "no log line echoes the 1 MiB id");
  });
});

Deno.test("a full page of the largest sandboxes lists in one message", async () => {
  await withGateway(async (gw, api) => {
    const spec = largestSpec();
    for (let i = 0; i < MAX_LIST_LIMIT; i++) {
      await api.call(api.raw.CreateSandbox, { name: `big-${i}`, spec });
    }
    // a client that accepts what the gateway may send, as the CLI does
    const cli = new OpenShellClient(`127.0.0.1:${gw.port}`, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_GRPC_MESSAGE,
    });
    const page = await unaryCall(cli, cli.ListSandboxes, { limit: MAX_LIST_LIMIT, offset: 0 });
    cli.close();
    assert.equal(page.sandboxes.length, MAX_LIST_LIMIT);
    // Whole but for the environment's values, which the API never returns.
    const shown = {
      ...spec,
      environment: Object.fromEntries(Object.keys(spec.environment ?? {}).map((k) => [k, ""])),
    };
    assert.equal(specBytes(page.sandboxes[0].spec!), specBytes(shown), "specs come back whole");
    const over = await statusOf(
      api.call(api.raw.ListSandboxes, { limit: MAX_LIST_LIMIT + 1, offset: 0 }),
    );
    assert.equal(over.code, Code.INVALID_ARGUMENT);
    assert.match(over.details, /^limit: at most 100/);
  });
});
