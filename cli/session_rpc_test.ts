import assert from "node:assert/strict";
import protobuf from "protobufjs";
import { OPENSHELL_DESCRIPTOR } from "../proto/descriptors.ts";
import { Code } from "../core/status.ts";
import { parseGatewayUrl } from "./config.ts";
import { GatewayError } from "./gateway_error.ts";
import {
  decodeCreateSshSessionResponse,
  decodeFields,
  encodeStrings,
  grpcFrame,
  MAX_REPLY_BYTES,
  ReplyReader,
  SessionRpc,
} from "./session_rpc.ts";

const root = protobuf.Root.fromJSON(OPENSHELL_DESCRIPTOR);
const type = (name: string) => root.lookupType(`openshell.v1.${name}`);

Deno.test("the hand-written request encoding is what protobufjs decodes", () => {
  const req = type("CreateSshSessionRequest").decode(encodeStrings({ 1: "sb-1_x.y" }));
  assert.deepEqual(req.toJSON(), { sandbox_id: "sb-1_x.y" });
  const revoke = type("RevokeSshSessionRequest").decode(encodeStrings({ 1: "t".repeat(300) }));
  assert.deepEqual(revoke.toJSON(), { token: "t".repeat(300) });
  assert.equal(encodeStrings({ 1: "" }).length, 0, "an empty string is omitted, as proto3 does");
});

Deno.test("CreateSshSessionResponse decodes every field protobufjs encodes", () => {
  const t = type("CreateSshSessionResponse");
  const value = {
    sandbox_id: "id-1",
    token: "tok+/=",
    gateway_host: "::1",
    gateway_port: 65535,
    gateway_scheme: "https",
    connect_path: "/connect/ssh",
    host_key_fingerprint: "SHA256:abc",
    expires_at_ms: 1_900_000_000_123,
  };
  const bytes = t.encode(t.fromObject(value)).finish();
  assert.deepEqual(decodeCreateSshSessionResponse(bytes), value);
  assert.deepEqual(decodeCreateSshSessionResponse(new Uint8Array(0)), {
    sandbox_id: "",
    token: "",
    gateway_host: "",
    gateway_port: 0,
    gateway_scheme: "",
    connect_path: "",
    host_key_fingerprint: "",
    expires_at_ms: 0,
  });
  const revoked = type("RevokeSshSessionResponse");
  assert.equal(decodeFields(revoked.encode({ revoked: true }).finish()).get(1), 1);
});

Deno.test("malformed protobuf is refused, not misread", () => {
  assert.throws(() => decodeFields(Uint8Array.of(0x0a, 0x05, 0x61)), /truncated/);
  assert.throws(() => decodeFields(Uint8Array.of(0x08, 0xff)), /truncated varint/);
  assert.throws(() => decodeFields(new Uint8Array(11).fill(0xff)), /varint too long/);
  assert.throws(() => decodeFields(Uint8Array.of(0x0b)), /unsupported wire type 3/);
});

Deno.test("a gateway that is not there is one UNAVAILABLE line naming it", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const rpc = new SessionRpc({
    endpoint: parseGatewayUrl(`http://127.0.0.1:${port}`),
  });
  try {
    await assert.rejects(rpc.createSshSession("x", 5_000), (e: unknown) => {
      assert.ok(e instanceof GatewayError);
      assert.equal(e.code, Code.UNAVAILABLE);
      assert.equal(
        e.message,
        `cannot reach the gateway at http://127.0.0.1:${port}: connection refused`,
      );
      return true;
    });
  } finally {
    rpc.close();
  }
});

Deno.test("a reply is its one framed message, or one status saying what went wrong", () => {
  const ok = new ReplyReader();
  ok.response({ ":status": "200" });
  const frame = grpcFrame(new Uint8Array([1, 2, 3]));
  assert.deepEqual([...frame], [0, 0, 0, 0, 3, 1, 2, 3]);
  assert.ok(ok.data(frame.subarray(0, 2)) && ok.data(frame.subarray(2)));
  ok.headers({ "grpc-status": "0" });
  assert.deepEqual(ok.outcome(), { message: new Uint8Array([1, 2, 3]) });

  const refused = new ReplyReader();
  refused.response({ ":status": "200", "grpc-status": "5", "grpc-message": "sandbox%20gone" });
  assert.deepEqual(refused.outcome(), {
    failure: { code: Code.NOT_FOUND, details: "sandbox gone", message: "sandbox gone" },
  });

  const noGrpc = new ReplyReader();
  noGrpc.response({ ":status": "502" });
  assert.deepEqual(noGrpc.outcome(), {
    failure: {
      code: Code.UNAVAILABLE,
      details: "HTTP status 502 without a gRPC status",
      message: "HTTP status 502 without a gRPC status",
    },
  });
  assert.match(
    (new ReplyReader().outcome() as { failure: { details: string } }).failure.details,
    /the connection closed before a reply/,
  );

  const malformed = new ReplyReader();
  malformed.data(new Uint8Array([0, 0, 0, 0, 9, 1]));
  malformed.headers({ "grpc-status": "0" });
  assert.equal(
    (malformed.outcome() as { failure: { code: number } }).failure.code,
    Code.INTERNAL,
    "a length prefix that does not match the body",
  );

  const big = new ReplyReader();
  assert.ok(big.data(new Uint8Array(MAX_REPLY_BYTES + 5)), "the largest reply is kept");
  assert.equal(big.data(new Uint8Array(1)), false, "one byte more is refused");
});
