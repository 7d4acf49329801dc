import assert from "node:assert/strict";
import { describeTlsFailure, IP_TLS_SERVER_NAME, tlsConnectOptions } from "./tls.ts";

Deno.test("tls: IP hosts get a name for SNI and an identity check against the IP", () => {
  const ip = tlsConnectOptions("127.0.0.1", { ca: "CA" });
  assert.equal(ip.servername, IP_TLS_SERVER_NAME);
  assert.equal(typeof ip.checkServerIdentity, "function");
  assert.equal(ip.cert, undefined);
  const name = tlsConnectOptions("gw.test", { ca: "CA", cert: "C", key: "K" });
  assert.equal(name.servername, "gw.test");
  assert.equal(name.checkServerIdentity, undefined);
  assert.equal(name.cert, "C");
});

Deno.test("tls: failures become one line saying what to do", () => {
  const w = "https://127.0.0.1:1";
  assert.match(
    describeTlsFailure("received corrupt message of type InvalidContentType", w)!,
    /does not speak TLS \(use an http:\/\/ URL/,
  );
  assert.match(
    describeTlsFailure(
      "UNABLE_TO_VERIFY_LEAF_SIGNATURE unable to verify the first certificate",
      w,
    )!,
    /did not sign.*openshell gateway add NAME URL --mtls-dir DIR/,
  );
  assert.match(
    describeTlsFailure("received fatal alert: CertificateRequired", w)!,
    /refused this client's certificate/,
  );
  assert.match(
    describeTlsFailure("Hostname/IP does not match certificate's altnames", w)!,
    /--tls-san/,
  );
  assert.equal(describeTlsFailure("connect ECONNREFUSED", w), undefined);
});
