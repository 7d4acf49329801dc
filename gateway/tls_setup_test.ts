import assert from "node:assert/strict";
import { Logger } from "../core/log.ts";
import { certificateInfo } from "../core/pki.ts";
import { type GatewayConfig, parseGatewayConfig } from "./config.ts";
import { setupTls } from "./tls_setup.ts";

function config(stateDir: string, args: string[] = []): GatewayConfig {
  const r = parseGatewayConfig(["--state-dir", stateDir, ...args], () => undefined);
  assert.ok(!r.help);
  return r.config;
}

function logger(lines: string[]): Logger {
  return new Logger({ level: "info", sink: (l) => lines.push(l) });
}

Deno.test("setupTls: the automatic PKI serves both planes, its CA checks clients; kept on restart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    const c = config(dir, ["--supervisor-bind", "10.1.2.3"]);
    const tls = await setupTls(c, logger(lines));
    assert.equal(tls.user.cert, tls.supervisor.cert);
    assert.equal(tls.user.key, tls.supervisor.key);
    assert.equal(tls.user.clientCa, tls.caPem, "mTLS with the gateway's own CA");
    assert.ok(
      certificateInfo(tls.supervisor.cert).ipAddresses.includes("10.1.2.3"),
      "the supervisor plane's address is among the server certificate's names",
    );
    assert.match(lines.join(""), /created the gateway's PKI in .*--mtls-dir/);

    lines.length = 0;
    const again = await setupTls(c, logger(lines));
    assert.equal(again.caPem, tls.caPem, "the CA is reused");
    assert.equal(again.user.cert, tls.user.cert, "a valid certificate is not re-issued");
    assert.equal(lines.length, 0, "nothing to report");

    const open = await setupTls(config(dir, ["--disable-gateway-auth"]), logger([]));
    assert.equal(open.user.clientCa, undefined, "no client CA without gateway auth");
    assert.equal(open.caPem, tls.caPem);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("setupTls: --tls-cert/--tls-key/--tls-client-ca are used for the user API; bad files are one line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const auto = await setupTls(config(`${dir}/a`), logger([]));
    const files = { cert: `${dir}/c.pem`, key: `${dir}/k.pem`, ca: `${dir}/ca.pem` };
    await Deno.writeTextFile(files.cert, auto.user.cert);
    await Deno.writeTextFile(files.key, auto.user.key);
    await Deno.writeTextFile(files.ca, auto.caPem);
    const own = ["--tls-cert", files.cert, "--tls-key", files.key, "--tls-client-ca", files.ca];
    const tls = await setupTls(config(`${dir}/b`, own), logger([]));
    assert.equal(tls.user.cert, auto.user.cert);
    assert.equal(tls.user.clientCa, auto.caPem);
    assert.notEqual(tls.supervisor.cert, auto.user.cert, "the supervisor plane keeps its own PKI");
    assert.notEqual(tls.caPem, auto.caPem);

    await Deno.writeTextFile(files.key, "not a key");
    await assert.rejects(
      setupTls(config(`${dir}/b`, own), logger([])),
      new RegExp(`^Error: --tls-key: ${files.key} is not a PEM file$`),
    );
    await Deno.remove(files.ca);
    await assert.rejects(
      setupTls(config(`${dir}/b`, own), logger([])),
      new RegExp(`^Error: --tls-client-ca: cannot read ${files.ca}: `),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
