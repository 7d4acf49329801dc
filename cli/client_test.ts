import assert from "node:assert/strict";
import { Code } from "../core/status.ts";
import { channelCredentials, describeGrpcError, GatewayError, grpcTarget } from "./client.ts";
import { parseEndpoint } from "./config.ts";

const EP = parseEndpoint("http://127.0.0.1:8080");

function err(code: number, details: string) {
  return Object.assign(new Error(`${code} ${details}`), { code, details });
}

Deno.test("transport failures name the gateway and the cause in one line", () => {
  assert.equal(
    describeGrpcError(
      err(
        Code.UNAVAILABLE,
        "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:8080 (2026-01-01T00:00:00.000Z)",
      ),
      EP,
    ),
    "cannot reach the gateway at http://127.0.0.1:8080: connection refused",
  );
  assert.equal(
    describeGrpcError(
      err(Code.UNAVAILABLE, "Name resolution failed: getaddrinfo ENOTFOUND gw"),
      EP,
    ),
    "cannot reach the gateway at http://127.0.0.1:8080: host not found",
  );
  assert.equal(
    describeGrpcError(err(Code.DEADLINE_EXCEEDED, "Deadline exceeded after 10.001s"), EP),
    "cannot reach the gateway at http://127.0.0.1:8080: no answer in time",
  );
  assert.equal(
    describeGrpcError(
      err(
        Code.UNAVAILABLE,
        'No connection established. Last error: Requires net access to "10.0.0.1:1"',
      ),
      EP,
    ),
    "not permitted to connect to 10.0.0.1:1 (the CLI's network grant does not cover it)",
  );
});

Deno.test("errors from the gateway keep its message", () => {
  assert.equal(
    describeGrpcError(err(Code.NOT_FOUND, "sandbox not found"), EP),
    "sandbox not found",
  );
  assert.equal(
    describeGrpcError(err(Code.UNAVAILABLE, "supervisor relay failed: no session"), EP),
    "supervisor relay failed: no session",
  );
  assert.match(describeGrpcError(err(Code.UNIMPLEMENTED, ""), EP), /does not support this request/);
  assert.equal(
    describeGrpcError(err(Code.UNAUTHENTICATED, "bad cert\nmore"), EP),
    "the gateway refused the request: bad cert",
  );
  assert.equal(describeGrpcError(err(Code.INTERNAL, ""), EP), "request failed (INTERNAL)");
  const e = new GatewayError(err(Code.FAILED_PRECONDITION, "sandbox is not ready"), EP);
  assert.equal(e.code, Code.FAILED_PRECONDITION);
  assert.equal(e.message, "sandbox is not ready");
});

Deno.test("targets and credentials", () => {
  assert.equal(grpcTarget(parseEndpoint("http://[::1]:9")), "[::1]:9");
  assert.equal(grpcTarget(parseEndpoint("https://gw")), "gw:443");
  assert.equal(channelCredentials(EP)._isSecure(), false);
  assert.equal(channelCredentials(parseEndpoint("https://gw"))._isSecure(), true);
});
