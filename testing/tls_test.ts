import assert from "node:assert/strict";
import { certificateInfo, checkCertificate, isSignedBy } from "../core/pki.ts";
import { writeGatewayPki } from "./tls.ts";

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
