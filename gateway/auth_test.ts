/**
 * Secure by default, end to end against a real gateway process: the
 * automatic PKI, client certificates on the user API, the supervisor-only
 * plane, per-sandbox supervisor credentials and host-key pinning.
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import http2 from "node:http2";
import tls from "node:tls";
import { createCa, issueCertificate } from "../core/pki.ts";
import { OpenShellClient, type Sandbox } from "../core/protocol.ts";
import { SUPERVISOR_TOKEN_METADATA } from "../core/provisioning.ts";
import { generateHostKey } from "../core/ssh_keys.ts";
import { Code } from "../core/status.ts";
import { waitFor } from "../core/testing.ts";
import { grpcTlsCredentials, tlsConnectOptions } from "../core/tls.ts";
import { writeHostDriverDir } from "../testing/host_driver.ts";
import { ensureSandboxUser, gatewayApi } from "../testing/supervisor.ts";
import { connectFakeSupervisor, spawnGateway, type TestGateway } from "../testing/gateway.ts";

/** One unary call with the given credentials; resolves with its status code (0 = OK). */
function callCode(
  port: number,
  method: string,
  material: { ca: string; cert?: string; key?: string } | undefined,
  request: unknown = {},
): Promise<{ code: number; details: string }> {
  const secure = material ? grpcTlsCredentials("127.0.0.1", material) : undefined;
  const client = new OpenShellClient(
    `127.0.0.1:${port}`,
    secure?.credentials ?? grpc.credentials.createInsecure(),
    secure?.options ?? {},
  );
  // By name, through the service definition (tests loop over method names).
  const def = OpenShellClient.service[method];
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      request,
      (err: grpc.ServiceError | null) => {
        client.close();
        resolve({ code: err?.code ?? 0, details: err?.details ?? "" });
      },
    );
  });
}

/**
 * One gRPC request over a bare HTTP/2 connection (TLS with `material`, or
 * plaintext): `grpc-status N` when the gateway answered, `refused` when the
 * connection ended first. Not grpc-js: a refused grpc-js channel keeps
 * reconnect timers (and attempts) alive after it is closed.
 */
function grpcOverH2(
  port: number,
  method: string,
  material: { ca: string; cert?: string; key?: string } | undefined,
): Promise<string> {
  return new Promise((resolve) => {
    const session = material
      ? http2.connect(`https://127.0.0.1:${port}`, tlsConnectOptions("127.0.0.1", material))
      : http2.connect(`http://127.0.0.1:${port}`);
    let result = "refused";
    session.on("error", () => {});
    session.on("close", () => resolve(result));
    const req = session.request({
      ":method": "POST",
      ":path": `/openshell.v1.OpenShell/${method}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    req.on("response", (headers) => result = `grpc-status ${headers["grpc-status"] ?? "?"}`);
    req.on("trailers", (t) => result = `grpc-status ${t["grpc-status"]}`);
    req.on("error", () => {});
    req.on("close", () => session.close());
    req.resume();
    req.end(new Uint8Array(5)); // an empty message
  });
}

/** `GET path` over TLS; resolves with the status line (or "closed"). */
function httpsGet(port: number, ca: string, path: string, client?: { cert: string; key: string }) {
  return new Promise<string>((resolve) => {
    const s = tls.connect({ ...tlsConnectOptions("127.0.0.1", { ca, ...client }), port });
    let data = "";
    s.on("secureConnect", () => s.write(`GET ${path} HTTP/1.1\r\nHost: gw\r\n\r\n`));
    s.on("data", (d) => data += d);
    s.on("error", () => {});
    s.on("close", () => resolve(data.split("\r\n")[0] || "closed"));
  });
}

async function read(path: string): Promise<string> {
  return await Deno.readTextFile(path);
}

Deno.test("secure defaults: only the operator's client certificate reaches the user API", async () => {
  const gw: TestGateway = await spawnGateway({ tls: true });
  try {
    const pki = gw.pki!;
    assert.equal((await Deno.stat(pki.dir)).mode! & 0o777, 0o700);
    for (const key of [pki.clientKey, `${pki.dir}/ca.key`, `${pki.dir}/server.key`]) {
      assert.equal((await Deno.stat(key)).mode! & 0o777, 0o600, key);
    }
    const ca = await read(pki.ca);
    const operator = { ca, cert: await read(pki.clientCert), key: await read(pki.clientKey) };
    assert.equal((await callCode(gw.port, "ListSandboxes", operator)).code, 0);
    // The probe below sees what a served call looks like.
    assert.equal(await grpcOverH2(gw.port, "ListSandboxes", operator), "grpc-status 0");

    const caKey = await read(`${pki.dir}/ca.key`);
    const expired = await issueCertificate({ cert: ca, key: caKey }, {
      kind: "client",
      commonName: "old",
      now: new Date(Date.now() - 400 * 86_400_000),
    });
    const foreignCa = await createCa();
    const foreign = await issueCertificate(foreignCa, { kind: "client", commonName: "x" });
    const refusedClients: [string, { ca: string; cert?: string; key?: string } | undefined][] = [
      ["no client certificate", { ca }],
      ["expired", { ca, ...expired }],
      ["foreign CA", { ca, ...foreign }],
      ["plaintext", undefined],
    ];
    for (const [what, material] of refusedClients) {
      for (const method of ["ListSandboxes", "CreateSandbox", "IssueSupervisorCredentials"]) {
        const r = await grpcOverH2(gw.port, method, material);
        assert.equal(r, "refused", `${what} ${method}`);
      }
    }
    // /connect/ssh without a client certificate: the connection closes before any HTTP answer.
    assert.equal(await httpsGet(gw.port, ca, "/healthz"), "closed");
    assert.equal(await httpsGet(gw.port, ca, "/healthz", operator), "HTTP/1.1 200 OK");
    // Refusals are logged (at most 10 lines a minute: the first of each kind is in).
    for (
      const line of [
        /client refused: no client certificate/,
        /client refused: client certificate expired on \d{4}-/,
        /client refused: client certificate is not signed by this gateway's CA/,
      ]
    ) await waitFor(`log ${line}`, () => line.test(gw.stderr()), { timeoutMs: 5_000 });
  } finally {
    await gw.stop();
  }
});

Deno.test("the supervisor plane serves supervisors only: user RPCs and HTTP are refused there", async () => {
  const gw = await spawnGateway({ tls: true });
  try {
    const ca = await read(gw.pki!.ca);
    for (const method of ["ListSandboxes", "Health", "IssueSupervisorCredentials"]) {
      const r = await callCode(gw.supervisorPort, method, { ca }, { name: "x" });
      assert.equal(r.code, Code.PERMISSION_DENIED, method);
      assert.match(r.details, /not served on the supervisor plane/);
    }
    assert.equal(await httpsGet(gw.supervisorPort, ca, "/healthz"), "HTTP/1.1 403 Forbidden");
    assert.equal(
      await httpsGet(gw.supervisorPort, ca, "/connect/ssh"),
      "HTTP/1.1 403 Forbidden",
    );
  } finally {
    await gw.stop();
  }
});

Deno.test("supervisor credentials: A's cannot hello as B, B stays READY; host keys are pinned", async () => {
  const gw = await spawnGateway({ tls: true });
  const pki = gw.pki!;
  const api = gatewayApi(gw.port, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
  const sessions: { close(): void }[] = [];
  try {
    const a: Sandbox = await api.create("alpha");
    const b: Sandbox = await api.create("bravo");
    const credA = await api.credentials("alpha");
    const credB = await api.credentials("bravo");
    assert.equal(credB.endpoint, gw.supervisorEndpoint);
    assert.equal(credB.ca_cert_pem, await read(pki.ca));
    assert.notEqual(credA.token, credB.token);
    const ca = credB.ca_cert_pem;
    const fp = generateHostKey().fingerprint;

    // Before any hello, B has no pinned host key: SSH and exec are refused.
    const early = await api.sshSession(b.id).catch((e) => e);
    assert.equal(early.code, Code.FAILED_PRECONDITION);

    const real = connectFakeSupervisor({
      port: gw.supervisorPort,
      sandboxId: b.id,
      tlsCa: ca,
      hostKeyFingerprint: fp,
      metadata: { [SUPERVISOR_TOKEN_METADATA]: credB.token },
    });
    sessions.push(real);
    await real.accepted;
    await api.waitForPhase(b.id, "SANDBOX_PHASE_READY", 10_000);

    const hijack = connectFakeSupervisor({
      port: gw.supervisorPort,
      sandboxId: b.id,
      tlsCa: ca,
      hostKeyFingerprint: fp,
      metadata: { [SUPERVISOR_TOKEN_METADATA]: credA.token },
    });
    sessions.push(hijack);
    const refused = await hijack.ended;
    assert.equal(refused.code, Code.PERMISSION_DENIED);
    assert.match(refused.details, new RegExp(`not valid for sandbox ${b.id}`));

    const otherKey = connectFakeSupervisor({
      port: gw.supervisorPort,
      sandboxId: b.id,
      tlsCa: ca,
      hostKeyFingerprint: generateHostKey().fingerprint,
      metadata: { [SUPERVISOR_TOKEN_METADATA]: credB.token },
    });
    sessions.push(otherKey);
    const changed = await otherKey.ended;
    assert.equal(changed.code, Code.PERMISSION_DENIED);
    assert.match(changed.details, /SSH host key of sandbox .* changed/);

    const anonymous = connectFakeSupervisor({
      port: gw.supervisorPort,
      sandboxId: b.id,
      tlsCa: ca,
    });
    sessions.push(anonymous);
    assert.equal((await anonymous.ended).code, Code.UNAUTHENTICATED);

    // B kept its session: still READY, its pinned key is what SSH clients get.
    assert.equal((await api.get("bravo")).phase, "SANDBOX_PHASE_READY");
    assert.equal(real.received.filter((m) => m.payload === "session_accepted").length, 1);
    const ssh = await api.sshSession(b.id);
    assert.equal(ssh.host_key_fingerprint, fp);
    // Re-issuing invalidates the old token and ends the session that used it.
    await api.credentials("bravo");
    assert.notEqual((await real.ended).code, Code.OK, "the old session is ended");
    const stale = connectFakeSupervisor({
      port: gw.supervisorPort,
      sandboxId: b.id,
      tlsCa: ca,
      metadata: { [SUPERVISOR_TOKEN_METADATA]: credB.token },
    });
    sessions.push(stale);
    assert.equal((await stale.ended).code, Code.PERMISSION_DENIED);
    // Environment values never come back.
    await api.create("gamma", { OPENAI_API_KEY: "sk-do-not-leak" });
    const g = await api.get("gamma");
    assert.deepEqual(g.spec?.environment, { OPENAI_API_KEY: "" });
    assert.equal(a.name, "alpha");
  } finally {
    for (const s of sessions) s.close();
    api.close();
    await gw.stop();
  }
});

Deno.test("a provisioned supervisor dials the TLS supervisor plane with its token", async () => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osauth" });
  await writeHostDriverDir(dir);
  const gw = await spawnGateway({ driverDir: dir, tls: true });
  const pki = gw.pki!;
  const api = gatewayApi(gw.port, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
  try {
    await api.waitHealthy();
    const sb: Sandbox = await api.create("guarded");
    await api.waitForPhase(sb.id, "SANDBOX_PHASE_READY", 60_000);
    const ssh = await api.sshSession(sb.id);
    assert.match(ssh.host_key_fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(ssh.gateway_scheme, "https");
    // Driver-provisioned sandboxes get no second credential.
    const again = await api.credentials("guarded").catch((e) => e);
    assert.equal(again.code, Code.FAILED_PRECONDITION);
    assert.equal(await api.delete("guarded"), true);
  } finally {
    api.close();
    await gw.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
