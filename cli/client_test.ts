import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { OpenShellClient } from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { IP_TLS_SERVER_NAME } from "../core/tls.ts";
import {
  channelCredentials,
  describeGrpcError,
  GatewayClient,
  GatewayError,
  grpcTarget,
  LIST_PAGE,
} from "./client.ts";
import { parseGatewayUrl } from "./config.ts";

const EP = parseGatewayUrl("http://127.0.0.1:8080");

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
  const named = parseGatewayUrl("http://nope.invalid:8080");
  for (
    const details of [
      "Name resolution failed: getaddrinfo ENOTFOUND nope.invalid",
      // what grpc-js says for a name no DNS server knows
      "Name resolution failed for target dns:nope.invalid:8080",
    ]
  ) {
    assert.equal(
      describeGrpcError(err(Code.UNAVAILABLE, details), named),
      'cannot reach the gateway at http://nope.invalid:8080: host "nope.invalid" not found ' +
        "(check the host name in the URL)",
    );
  }
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

Deno.test("targets and credentials (an IP host gets core/tls.ts's server name)", () => {
  assert.equal(grpcTarget(parseGatewayUrl("http://[::1]:9")), "[::1]:9");
  assert.equal(grpcTarget(parseGatewayUrl("https://gw")), "gw:443");
  assert.equal(channelCredentials(EP).credentials._isSecure(), false);
  const named = channelCredentials(parseGatewayUrl("https://gw"));
  assert.equal(named.credentials._isSecure(), true);
  assert.deepEqual(named.options, {});
  const ip = channelCredentials(parseGatewayUrl("https://127.0.0.1:1"));
  assert.equal(ip.options["grpc.ssl_target_name_override"], IP_TLS_SERVER_NAME);
});

const TLS_EP = parseGatewayUrl("https://127.0.0.1:8443");
const dropped = (details: string) =>
  err(
    Code.UNAVAILABLE,
    `No connection established. Last error: ${details} (2026-01-01T00:00:00.000Z). Resolution note: `,
  );

Deno.test("https: a connection the gateway closed after the handshake says what to do", () => {
  for (const d of ["write EPIPE", "Failed to connect", "read ECONNRESET"]) {
    assert.equal(
      describeGrpcError(dropped(d), TLS_EP, { clientCertificate: true, name: "gw" }),
      "the gateway at https://127.0.0.1:8443 closed the TLS connection: it may not accept this " +
        "client's certificate (import the gateway's current client bundle: openshell gateway " +
        "add gw https://127.0.0.1:8443 --mtls-dir DIR --force, DIR being the gateway's " +
        "<state-dir>/pki)",
      d,
    );
  }
  assert.equal(
    describeGrpcError(dropped("write EPIPE"), TLS_EP),
    "the gateway at https://127.0.0.1:8443 closed the TLS connection: it may require a client " +
      "certificate, and none is configured (import the gateway's client bundle: openshell " +
      "gateway add NAME https://127.0.0.1:8443 --mtls-dir DIR, DIR being the gateway's " +
      "<state-dir>/pki)",
  );
  assert.equal(
    describeGrpcError(dropped("received fatal alert: CertificateRequired"), TLS_EP),
    describeGrpcError(dropped("write EPIPE"), TLS_EP),
    "an alert and a closed connection read the same",
  );
  assert.match(
    describeGrpcError(dropped("Error: self-signed certificate in certificate chain"), TLS_EP),
    /presented a certificate that the trusted CA did not sign/,
  );
  assert.equal(
    describeGrpcError(
      dropped(
        "Error: received corrupt message of type InvalidContentType (SSL routines:ssl3_get_record:wrong version number)",
      ),
      TLS_EP,
    ),
    "the gateway at https://127.0.0.1:8443 does not speak TLS (use an http:// URL for a " +
      "plaintext gateway)",
  );
  assert.match(
    describeGrpcError(
      err(Code.DEADLINE_EXCEEDED, "Deadline exceeded after 10.001s,Waiting for LB pick"),
      TLS_EP,
    ),
    /no answer in time \(a plaintext gateway never completes a TLS handshake: if it runs with --disable-tls, use an http:\/\/ URL\)$/,
  );
  assert.equal(
    describeGrpcError(dropped("connect ECONNREFUSED 127.0.0.1:8443"), TLS_EP),
    "cannot reach the gateway at https://127.0.0.1:8443: connection refused",
  );
  assert.doesNotMatch(
    describeGrpcError(dropped("Error: something else"), TLS_EP),
    /Resolution note|2026-/,
  );
  assert.equal(
    describeGrpcError(err(Code.UNAVAILABLE, "Connection dropped"), TLS_EP),
    "cannot reach the gateway at https://127.0.0.1:8443: Connection dropped",
    "a connection that was up and then dropped is not blamed on the certificate",
  );
});

Deno.test("http: a TLS gateway (it closes a plaintext HTTP/2 connection) gets an https hint", () => {
  assert.equal(
    describeGrpcError(dropped("read ECONNRESET"), EP, { name: "local" }),
    describeGrpcError(dropped("Failed to connect"), EP, { name: "local" }),
  );
  assert.equal(
    describeGrpcError(err(Code.UNAVAILABLE, "read ECONNRESET"), EP),
    "cannot reach the gateway at http://127.0.0.1:8080: connection reset",
    "a connection that was up and then reset is not a TLS hint",
  );
  assert.equal(
    describeGrpcError(dropped("Failed to connect"), EP, { name: "local" }),
    "the gateway at http://127.0.0.1:8080 closed the connection before HTTP/2 started: if it " +
      "serves TLS (its default), use an https:// URL and import its client bundle (openshell " +
      "gateway add local https://127.0.0.1:8080 --mtls-dir DIR --force, DIR being the " +
      "gateway's <state-dir>/pki)",
  );
});

Deno.test("listSandboxes asks for pages of at most LIST_PAGE and stops at a short one", async () => {
  const names = Array.from({ length: 250 }, (_, i) => `s${i}`);
  const asked: { limit: number; offset: number }[] = [];
  const server = new grpc.Server();
  server.addService(OpenShellClient.service, {
    ListSandboxes: (
      call: grpc.ServerUnaryCall<{ limit: number; offset: number }, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) => {
      const { limit, offset } = call.request;
      asked.push({ limit, offset });
      if (limit > LIST_PAGE) {
        cb({ code: Code.INVALID_ARGUMENT, details: "limit: at most 100" } as grpc.ServiceError);
        return;
      }
      cb(null, { sandboxes: names.slice(offset, offset + limit).map((name) => ({ name })) });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  const client = new GatewayClient({ endpoint: parseGatewayUrl(`http://127.0.0.1:${port}`) });
  try {
    const got = await client.listSandboxes(230, 10);
    assert.deepEqual(got.map((s) => s.name), names.slice(10, 240));
    assert.deepEqual(asked, [
      { limit: 100, offset: 10 },
      { limit: 100, offset: 110 },
      { limit: 30, offset: 210 },
    ]);
    asked.length = 0;
    assert.equal((await client.listSandboxes(500, 200)).length, 50);
    assert.deepEqual(asked, [{ limit: 100, offset: 200 }], "a short page is the last");
    assert.equal((await client.listAllSandboxes()).length, 250);
  } finally {
    client.close();
    await new Promise<void>((r) => server.tryShutdown(() => r()));
  }
});
