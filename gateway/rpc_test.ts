import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { OpenShellClient } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { decodeGuard, guardDecoding, MAX_STATUS_DETAILS_BYTES, toWireStatus } from "./rpc.ts";

Deno.test("toWireStatus: codes pass through, messages are bounded, unknown errors are INTERNAL", () => {
  assert.deepEqual(toWireStatus(new StatusError(Code.NOT_FOUND, "sandbox x not found")), {
    code: Code.NOT_FOUND,
    details: "sandbox x not found",
  });
  assert.deepEqual(toWireStatus({ code: Code.UNAVAILABLE, details: "gone", message: "m" }), {
    code: Code.UNAVAILABLE,
    details: "gone",
  });
  assert.deepEqual(toWireStatus(new Error("boom")), {
    code: Code.INTERNAL,
    details: "internal error: boom",
  });
  const huge = toWireStatus(new StatusError(Code.NOT_FOUND, `sandbox ${"x".repeat(1 << 20)}`));
  assert.equal(huge.code, Code.NOT_FOUND);
  assert.ok(huge.details.length < MAX_STATUS_DETAILS_BYTES + 40, `${huge.details.length}`);
  assert.match(huge.details, /…\[truncated \d+ bytes\]$/);
  const wide = toWireStatus(new StatusError(Code.NOT_FOUND, "é".repeat(1 << 16)));
  assert.ok(new TextEncoder().encode(wide.details).length < MAX_STATUS_DETAILS_BYTES + 40);
});

// ---- garbage request bodies ----------------------------------------------------------

/**
 * Field 1 as a varint whose continuation bit promises a byte that never comes:
 * no message decodes it (protobufjs clamps truncated strings instead of failing).
 */
const GARBAGE = Buffer.from([0x08, 0xff]);

interface Served {
  client: grpc.Client;
  handled: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

async function serve(): Promise<Served> {
  const handled: string[] = [];
  const server = new grpc.Server({ interceptors: [decodeGuard] });
  server.addService(guardDecoding(OpenShellClient.service), {
    Health: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
      handled.push("Health");
      cb(null, { status: "SERVICE_STATUS_HEALTHY", version: "t" });
    },
    WatchSandbox: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      handled.push("WatchSandbox");
      call.end();
    },
    ConnectSupervisor: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
      call.on("data", () => handled.push("ConnectSupervisor data"));
      call.on("end", () => call.end());
      call.on("error", () => {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (err, p) => err ? reject(err) : resolve(p),
    )
  );
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    client,
    handled,
    async [Symbol.asyncDispose]() {
      client.close();
      await new Promise<void>((r) => server.tryShutdown(() => r()));
    },
  };
}

const raw = (b: Buffer) => b;

function unary(client: grpc.Client, method: string, body: Buffer): Promise<grpc.StatusObject> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(`/openshell.v1.OpenShell/${method}`, raw, raw, body, (err) => {
      resolve(
        err ? { code: err.code, details: err.details, metadata: err.metadata } : {
          code: 0,
          details: "",
          metadata: new grpc.Metadata(),
        },
      );
    });
  });
}

function ended(call: grpc.ClientReadableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>) {
  return new Promise<grpc.StatusObject>((resolve) => {
    call.on("data", () => {});
    call.on("error", () => {});
    call.on("status", resolve);
  });
}

Deno.test("a request body that is not protobuf gets INVALID_ARGUMENT, not INTERNAL", async () => {
  await using s = await serve();
  const bad = await unary(s.client, "Health", GARBAGE);
  assert.equal(bad.code, Code.INVALID_ARGUMENT, bad.details);
  assert.match(bad.details, /^cannot decode the \/openshell\.v1\.OpenShell\/Health request: /);
  const ok = await unary(s.client, "Health", Buffer.alloc(0));
  assert.equal(ok.code, Code.OK, "a valid request still reaches its handler");

  const watch = s.client.makeServerStreamRequest(
    "/openshell.v1.OpenShell/WatchSandbox",
    raw,
    raw,
    GARBAGE,
  );
  const watched = await ended(watch);
  assert.equal(watched.code, Code.INVALID_ARGUMENT, watched.details);

  const session = s.client.makeBidiStreamRequest(
    "/openshell.v1.OpenShell/ConnectSupervisor",
    raw,
    raw,
  );
  const sessionEnd = ended(session);
  session.write(GARBAGE);
  const status = await sessionEnd;
  assert.equal(status.code, Code.INVALID_ARGUMENT, status.details);
  session.end();
  assert.deepEqual(s.handled, ["Health"], "no handler saw an undecodable message");
});
