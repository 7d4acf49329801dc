import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { Code, StatusError } from "../core/status.ts";
import type { SandboxRecord } from "./store.ts";
import { hashToken } from "./tokens.ts";
import {
  checkSupervisorToken,
  MIN_SUPERVISOR_HEARTBEAT_SECS,
  MISSED_HEARTBEATS_LIMIT,
  silenceLimitMs,
} from "./supervisor_plane.ts";

Deno.test("silenceLimitMs: three heartbeat periods, judged on at least the minimum period", () => {
  assert.equal(MISSED_HEARTBEATS_LIMIT, 3);
  assert.equal(silenceLimitMs(15), 45_000);
  assert.equal(silenceLimitMs(60), 180_000);
  assert.equal(silenceLimitMs(MIN_SUPERVISOR_HEARTBEAT_SECS), 15_000);
  // supervisors never beat faster than the minimum, so a shorter setting must not drop them
  assert.equal(silenceLimitMs(1), 15_000);
  assert.equal(silenceLimitMs(0), 15_000);
});

function record(token?: string): SandboxRecord {
  return {
    sandbox: {
      id: "sb-1",
      name: "alpha",
      namespace: "default",
      spec: null,
      status: null,
      phase: "SANDBOX_PHASE_PROVISIONING",
      created_at_ms: 1,
      current_policy_version: 0,
    },
    secrets: token === undefined ? {} : { supervisorTokenHash: hashToken(token) },
  };
}

function metadata(token?: string): grpc.Metadata {
  const m = new grpc.Metadata();
  if (token !== undefined) m.set(SUPERVISOR_TOKEN_METADATA, token);
  return m;
}

function refused(fn: () => void, code: number, message: RegExp, secret: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof StatusError, `not a StatusError: ${e}`);
    assert.equal(e.code, code);
    assert.match(e.message, message);
    assert.ok(!e.message.includes(secret), "the expected token is never echoed");
    return true;
  });
}

Deno.test("checkSupervisorToken: the provisioned token passes", () => {
  checkSupervisorToken(record("s3cret-token"), metadata("s3cret-token"));
});

Deno.test("checkSupervisorToken: missing → UNAUTHENTICATED; wrong, prefix or longer → PERMISSION_DENIED", () => {
  const r = record("s3cret-token");
  const missing = /a supervisor token is required for sandbox sb-1/;
  const wrong = /this supervisor credential is not valid for sandbox sb-1/;
  const D = Code.PERMISSION_DENIED;
  refused(() => checkSupervisorToken(r, metadata()), Code.UNAUTHENTICATED, missing, "s3cret");
  refused(() => checkSupervisorToken(r, metadata("")), Code.UNAUTHENTICATED, missing, "s3cret");
  refused(() => checkSupervisorToken(r, metadata("s3cret-tokeN")), D, wrong, "s3cret-token");
  refused(() => checkSupervisorToken(r, metadata("s3cret")), D, wrong, "s3cret-token");
  refused(() => checkSupervisorToken(r, metadata("s3cret-token2")), D, wrong, "s3cret-token");
  // the token travels under its own key only
  const other = new grpc.Metadata();
  other.set("authorization", "s3cret-token");
  refused(() => checkSupervisorToken(r, other), Code.UNAUTHENTICATED, missing, "s3cret");
});

Deno.test("checkSupervisorToken: always enforced; a sandbox without a credential accepts none", () => {
  refused(
    () => checkSupervisorToken(record(), metadata("anything")),
    Code.PERMISSION_DENIED,
    /has no supervisor credential yet: issue one with `openshell sandbox credentials alpha --out DIR`/,
    "anything",
  );
  refused(
    () => checkSupervisorToken(record(), metadata()),
    Code.UNAUTHENTICATED,
    /required/,
    "anything", // (nothing was sent; the message names the metadata key, which contains "x")
  );
});
