import assert from "node:assert/strict";
import {
  describeTlsDrop,
  describeTlsFailure,
  grpcTlsCredentials,
  IP_TLS_SERVER_NAME,
  isClientCertificateRefusal,
  tlsConnectOptions,
} from "./tls.ts";

Deno.test("tls: IP hosts get a name for SNI and an identity check against the IP", () => {
  const ip = tlsConnectOptions("127.0.0.1", { ca: "CA" });
  assert.equal(ip.servername, IP_TLS_SERVER_NAME);
  assert.equal(typeof ip.checkServerIdentity, "function");
  assert.equal(ip.cert, undefined);
  const name = tlsConnectOptions("gw.test", { ca: "CA", cert: "C", key: "K" });
  assert.equal(name.servername, "gw.test");
  assert.equal(name.checkServerIdentity, undefined);
  assert.equal(name.cert, "C");
  const roots = tlsConnectOptions("gw.test", {});
  assert.ok(!("ca" in roots), "no CA: the system roots");
  const grpcIp = grpcTlsCredentials("127.0.0.1", { ca: "CA" });
  assert.equal(grpcIp.options["grpc.ssl_target_name_override"], IP_TLS_SERVER_NAME);
  assert.deepEqual(grpcTlsCredentials("gw.test", {}).options, {});
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
  assert.match(
    describeTlsFailure("invalid peer certificate: Expired", w)!,
    /certificate at https:\/\/127\.0\.0\.1:1 has expired/,
  );
  assert.equal(describeTlsFailure("connect ECONNREFUSED", w), undefined);
  assert.equal(
    describeTlsFailure("received fatal alert: BadCertificate", w, {
      importBundle: "openshell gateway add gw https://127.0.0.1:1 --mtls-dir DIR --force",
    }),
    "the gateway at https://127.0.0.1:1 refused this client's certificate (import the " +
      "gateway's current client bundle: openshell gateway add gw https://127.0.0.1:1 " +
      "--mtls-dir DIR --force, DIR being the gateway's <state-dir>/pki)",
  );
});

Deno.test("tls: a connection closed after the handshake says what the gateway may want", () => {
  const w = "https://127.0.0.1:1";
  assert.equal(
    describeTlsDrop(w, { clientCertificate: true }),
    "the gateway at https://127.0.0.1:1 closed the TLS connection: it may not accept this " +
      "client's certificate (import the gateway's current client bundle: openshell gateway add " +
      "NAME URL --mtls-dir DIR, DIR being the gateway's <state-dir>/pki)",
  );
  assert.match(
    describeTlsDrop(w, { clientCertificate: false }),
    /it may require a client certificate, and none is configured/,
  );
  assert.ok(isClientCertificateRefusal("received fatal alert: CertificateRequired"));
  assert.ok(!isClientCertificateRefusal("write EPIPE"));
});
