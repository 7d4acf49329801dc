import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import net from "node:net";
import tls from "node:tls";
import { certificateInfo, checkCertificate, isSignedBy } from "../core/pki.ts";
import { startTlsForwarder, writeGatewayPki } from "./tls.ts";

Deno.test("test PKI: the bundles are laid out as a gateway writes them, one expired, one foreign", async () => {
  const dir = await Deno.makeTempDir({ prefix: "testing-pki-" });
  try {
    const pki = await writeGatewayPki(dir);
    const read = (p: string) => Deno.readTextFileSync(p);
    assert.deepEqual(
      [pki.bundle.ca, pki.bundle.cert, pki.bundle.key],
      [`${dir}/pki/ca.crt`, `${dir}/pki/client.crt`, `${dir}/pki/client.key`],
    );
    checkCertificate(read(pki.bundle.cert), { what: "bundle", caPem: read(pki.bundle.ca) });
    assert.ok(isSignedBy(read(pki.foreign.cert), read(pki.foreign.ca)));
    assert.ok(!isSignedBy(read(pki.foreign.cert), pki.ca.cert));
    assert.throws(() => checkCertificate(read(pki.expired.cert), { what: "old" }), /old expired/);
    assert.deepEqual(certificateInfo(read(pki.serverCert)).ipAddresses, ["127.0.0.1"]);
    assert.equal((await Deno.stat(pki.bundle.key)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TLS forwarder: plaintext in, mTLS out, both directions and the end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "testing-fwd-" });
  const pki = await writeGatewayPki(dir);
  const peers: string[] = [];
  const server = tls.createServer({
    cert: Deno.readTextFileSync(pki.serverCert),
    key: Deno.readTextFileSync(pki.serverKey),
    ca: pki.ca.cert,
    requestCert: true,
    rejectUnauthorized: true,
  }, (s) => {
    peers.push(String(s.getPeerCertificate().subject?.CN ?? ""));
    s.on("data", (d: Buffer) => s.write(d.toString().toUpperCase()));
    s.on("end", () => s.end());
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const tlsPort = (server.address() as net.AddressInfo).port;
  const fwd = await startTlsForwarder({ targetPort: () => tlsPort, tls: pki.supervisor });
  try {
    const got = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ port: fwd.port, host: "127.0.0.1" }, () => c.end("hello"));
      let data = "";
      c.on("data", (d: Buffer) => data += d);
      c.on("close", () => resolve(data));
      c.on("error", reject);
    });
    assert.equal(got, "HELLO");
    assert.deepEqual(peers, ["supervisor-plane"]);
    assert.equal(fwd.forwarded, 1);
  } finally {
    await fwd.close();
    await new Promise((r) => server.close(r));
    await Deno.remove(dir, { recursive: true });
  }
});
