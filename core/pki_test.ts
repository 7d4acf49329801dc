import assert from "node:assert/strict";
import tls from "node:tls";
import {
  certificateInfo,
  checkCertificate,
  createCa,
  ensureGatewayPki,
  GUEST_GATEWAY_SAN,
  isSignedBy,
  issueCertificate,
  PkiError,
  serverNames,
} from "./pki.ts";
import { tlsConnectOptions } from "./tls.ts";
import { x509 } from "./x509.ts";

const DAY = 86_400_000;

Deno.test("pki: leaf certificates are X.509 v3, carry their names, and chain to their CA", async () => {
  const ca = await createCa();
  const other = await createCa();
  const server = await issueCertificate(ca, {
    kind: "server",
    commonName: "gw",
    names: ["localhost", "127.0.0.1", "::1", GUEST_GATEWAY_SAN],
  });
  const info = certificateInfo(server.cert);
  assert.deepEqual(info.dnsNames.sort(), ["gateway.openshell.internal", "localhost"]);
  assert.deepEqual(info.ipAddresses.sort(), ["127.0.0.1", "::1"]);
  assert.ok(isSignedBy(server.cert, ca.cert));
  assert.ok(!isSignedBy(server.cert, other.cert));
  assert.match(server.key, /-----BEGIN PRIVATE KEY-----/);
  // X.509 v3 (v1 client certificates fail Deno's mTLS handshake): version byte 2, extensions.
  const parsed = new x509.X509Certificate(server.cert);
  assert.ok(parsed.getExtension(x509.ExtendedKeyUsageExtension));
  assert.ok(parsed.getExtension(x509.SubjectAlternativeNameExtension));
});

Deno.test("pki: checkCertificate names expired, not-yet-valid and foreign certificates", async () => {
  const ca = await createCa();
  const other = await createCa();
  const old = await issueCertificate(ca, {
    kind: "client",
    commonName: "op",
    now: new Date(Date.now() - 400 * DAY),
  });
  assert.throws(
    () => checkCertificate(old.cert, { what: "client certificate" }),
    (e) => e instanceof PkiError && /^client certificate expired on \d{4}-/.test(e.message),
  );
  const future = await issueCertificate(ca, {
    kind: "client",
    commonName: "op",
    now: new Date(Date.now() + 10 * DAY),
  });
  assert.throws(() => checkCertificate(future.cert, { what: "c" }), /not valid before/);
  const fine = await issueCertificate(ca, { kind: "client", commonName: "op" });
  assert.throws(
    () => checkCertificate(fine.cert, { what: "c", caPem: other.cert }),
    /not signed by this gateway's CA/,
  );
  assert.equal(checkCertificate(fine.cert, { what: "c", caPem: ca.cert }).subject, "CN=op");
  assert.throws(() => checkCertificate("garbage", { what: "c" }), /not a PEM certificate/);
});

Deno.test("pki: ensureGatewayPki creates 0700/0600 files once, reuses them, re-issues on new names", async () => {
  const root = await Deno.makeTempDir();
  try {
    const dir = `${root}/pki`;
    const first = await ensureGatewayPki(dir, { serverNames: serverNames("0.0.0.0") });
    assert.equal(first.written.length, 6);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    for (const f of [first.paths.caKey, first.paths.serverKey, first.paths.clientKey]) {
      assert.equal((await Deno.stat(f)).mode! & 0o777, 0o600, f);
    }
    const again = await ensureGatewayPki(dir, { serverNames: serverNames("0.0.0.0") });
    assert.deepEqual(again.written, []);
    assert.equal(again.ca.cert, first.ca.cert);
    const wider = await ensureGatewayPki(dir, {
      serverNames: serverNames("0.0.0.0", ["gw.example.test"]),
    });
    assert.deepEqual(wider.written, [first.paths.serverCert, first.paths.serverKey]);
    assert.ok(certificateInfo(wider.server.cert).dnsNames.includes("gw.example.test"));
    assert.equal(wider.client.cert, first.client.cert);
    // Near expiry: a start 360 days later re-issues the leaves, keeps the CA.
    const later = await ensureGatewayPki(dir, {
      serverNames: serverNames("0.0.0.0", ["gw.example.test"]),
      now: new Date(Date.now() + 360 * DAY),
    });
    assert.equal(later.ca.cert, first.ca.cert);
    assert.notEqual(later.client.cert, first.client.cert);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pki: serverNames covers loopback, the guest alias, a specific bind and --tls-san", () => {
  assert.deepEqual(serverNames("0.0.0.0"), ["localhost", "127.0.0.1", "::1", GUEST_GATEWAY_SAN]);
  assert.ok(serverNames("10.1.2.3", ["gw.test"]).includes("10.1.2.3"));
  assert.ok(serverNames("[fd00::1]").includes("fd00::1"));
  assert.ok(serverNames("0.0.0.0", ["gw.test"]).includes("gw.test"));
});

Deno.test("pki + tls: mTLS handshake to an IP literal works with the server name handled once", async () => {
  const ca = await createCa();
  const server = await issueCertificate(ca, {
    kind: "server",
    commonName: "gw",
    names: serverNames("0.0.0.0"),
  });
  const client = await issueCertificate(ca, { kind: "client", commonName: "op" });
  const srv = tls.createServer({
    cert: server.cert,
    key: server.key,
    ca: ca.cert,
    requestCert: true,
    rejectUnauthorized: true,
  }, (s) => s.end("hello"));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  try {
    const port = (srv.address() as { port: number }).port;
    const got = await new Promise<string>((resolve, reject) => {
      const c = tls.connect({
        ...tlsConnectOptions("127.0.0.1", { ca: ca.cert, ...client }),
        port,
      });
      let data = "";
      c.on("data", (d) => data += d);
      c.on("end", () => resolve(data));
      c.on("error", reject);
    });
    assert.equal(got, "hello");
  } finally {
    await new Promise((r) => srv.close(r));
  }
});
