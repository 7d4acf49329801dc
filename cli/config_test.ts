import assert from "node:assert/strict";
import { createCa, issueCertificate } from "../core/pki.ts";
import {
  checkClientTls,
  configRoot,
  ConfigStore,
  endpointKey,
  isLoopbackOrUnspecified,
  parseGatewayUrl,
  resolveGateway,
  validateGatewayName,
  writeFileAtomic,
} from "./config.ts";
import { CliError } from "./errors.ts";

const CERT = new TextEncoder().encode(
  "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
);
const KEY = new TextEncoder().encode(
  "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
);
const enc = (s: string) => new TextEncoder().encode(s);
const DAY = 86_400_000;
const CA = await createCa();
const OTHER_CA = await createCa({ commonName: "another gateway CA" });
const CLIENT = await issueCertificate(CA, { kind: "client", commonName: "op" });
const FOREIGN = await issueCertificate(OTHER_CA, { kind: "client", commonName: "op" });
const EXPIRED = await issueCertificate(CA, {
  kind: "client",
  commonName: "op",
  now: new Date(Date.now() - 10 * DAY),
  validityDays: 1,
});
/** A real client bundle as the store takes it. */
const BUNDLE = { ca: enc(CA.cert), cert: enc(CLIENT.cert), key: enc(CLIENT.key) };

function env(vars: Record<string, string>): (n: string) => string | undefined {
  return (n) => vars[n];
}

async function withStore(fn: (store: ConfigStore, root: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cli-config-" });
  try {
    await fn(new ConfigStore(`${dir}/openshell`), `${dir}/openshell`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function rejectsWith(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof CliError, String(e));
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("config root follows XDG_CONFIG_HOME, then HOME", () => {
  assert.equal(configRoot(env({ XDG_CONFIG_HOME: "/x/", HOME: "/h" })), "/x/openshell");
  assert.equal(
    configRoot(env({ XDG_CONFIG_HOME: "relative", HOME: "/h" })),
    "/h/.config/openshell",
  );
  assert.equal(configRoot(env({ HOME: "/h" })), "/h/.config/openshell");
  assert.throws(() => configRoot(env({})), /set XDG_CONFIG_HOME or HOME/);
});

Deno.test("endpoints: http is plaintext, default ports, no paths, clear errors", () => {
  assert.deepEqual(parseGatewayUrl("http://127.0.0.1:8080/"), {
    url: "http://127.0.0.1:8080",
    scheme: "http",
    host: "127.0.0.1",
    port: 8080,
    path: "",
  });
  assert.equal(parseGatewayUrl("https://gw.example").port, 443);
  assert.equal(parseGatewayUrl("http://[::1]:9").host, "::1");
  assert.equal(parseGatewayUrl("http://[::1]:9").url, "http://[::1]:9");
  assert.equal(parseGatewayUrl("http://h:1/connect/ssh", { allowPath: true }).path, "/connect/ssh");
  assert.throws(() => parseGatewayUrl("ftp://h"), /must be an http:\/\/ or https:\/\/ URL/);
  assert.throws(() => parseGatewayUrl("h:80"), /must be an http:\/\/ or https:\/\/ URL/);
  assert.throws(() => parseGatewayUrl("not a url"), /invalid gateway URL/);
  assert.throws(() => parseGatewayUrl("http://h:1/x"), /must not have a path/);
  assert.throws(() => parseGatewayUrl("http://u:p@h:1"), /must not carry credentials/);
  assert.throws(() => parseGatewayUrl("http://h:1/?q"), /must not have a query/);
  assert.equal(isLoopbackOrUnspecified("127.0.0.5"), true);
  assert.equal(isLoopbackOrUnspecified("[::]"), true);
  assert.equal(isLoopbackOrUnspecified("0.0.0.0"), true);
  assert.equal(isLoopbackOrUnspecified("gw.example"), false);
  assert.equal(endpointKey(parseGatewayUrl("http://127.0.0.1:8080")), "_127.0.0.1_8080");
});

Deno.test("gateway names are validated", () => {
  assert.equal(validateGatewayName("prod-1.a_b"), "prod-1.a_b");
  for (const bad of ["", ".hidden", "a/b", "../x", "x".repeat(65), "sp ace"]) {
    assert.throws(() => validateGatewayName(bad), /invalid gateway name/);
  }
});

Deno.test("add/select/list/remove in the upstream layout; first one becomes active", async () => {
  await withStore(async (store, root) => {
    await store.addGateway({ name: "local", endpoint: "http://127.0.0.1:8080" });
    assert.equal(await Deno.readTextFile(`${root}/active_gateway`), "local\n");
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${root}/gateways/local/metadata.json`)), {
      name: "local",
      gateway_endpoint: "http://127.0.0.1:8080",
      is_remote: false,
      gateway_port: 8080,
      auth_mode: "plaintext",
    });
    await store.addGateway({ name: "prod", endpoint: "https://gw.example:9443", ...BUNDLE });
    assert.equal(await store.activeGateway(), "local", "adding more does not switch");
    assert.deepEqual(await Deno.readFile(`${root}/gateways/prod/mtls/tls.key`), BUNDLE.key);
    assert.equal((await Deno.stat(`${root}/gateways/prod/mtls/tls.key`)).mode! & 0o777, 0o600);
    const list = await store.listGateways();
    assert.deepEqual(list.map((g) => [g.name, g.metadata?.auth_mode, g.tlsFiles]), [
      ["local", "plaintext", []],
      ["prod", "mtls", ["ca.crt", "tls.crt", "tls.key"]],
    ]);
    await store.setActiveGateway("prod");
    assert.equal(await store.activeGateway(), "prod");
    await rejectsWith(store.setActiveGateway("nope"), /gateway "nope" is not registered/);
    await rejectsWith(
      store.addGateway({ name: "local", endpoint: "http://127.0.0.1:1" }),
      /already exists \(use --force/,
    );
    await store.setLastSandbox("local", "dev");
    await store.addGateway({ name: "local", endpoint: "http://127.0.0.1:1", force: true });
    assert.equal((await store.readGateway("local")).gateway_port, 1);
    assert.equal(await store.lastSandbox("local"), "dev", "replacing keeps the last sandbox");
    await store.removeGateway("prod");
    assert.equal(await store.activeGateway(), undefined);
    assert.deepEqual((await store.listGateways()).map((g) => g.name), ["local"]);
    const leftovers = [];
    for await (const e of Deno.readDir(`${root}/gateways`)) leftovers.push(e.name);
    assert.deepEqual(leftovers, ["local"], "no staging or old directories left behind");
  });
});

Deno.test("bad gateway registrations leave nothing behind", async () => {
  await withStore(async (store, root) => {
    await rejectsWith(
      store.addGateway({ name: "a", endpoint: "http://h:1", ca: CERT }),
      /only apply to https/,
    );
    await rejectsWith(
      store.addGateway({ name: "a", endpoint: "https://h:1", cert: CERT }),
      /--cert and --key go together/,
    );
    await rejectsWith(
      store.addGateway({ name: "a", endpoint: "https://h:1", ca: KEY }),
      /--ca is not a PEM certificate/,
    );
    await rejectsWith(
      store.addGateway({ name: "a", endpoint: "https://h:1", cert: CERT, key: CERT }),
      /--key is not a PEM private key/,
    );
    await rejectsWith(
      store.addGateway({ name: "../a", endpoint: "http://h:1" }),
      /invalid gateway name/,
    );
    await assert.rejects(Deno.stat(root), Deno.errors.NotFound);
  });
});

Deno.test("broken metadata gets a clear error; list marks it", async () => {
  await withStore(async (store, root) => {
    await Deno.mkdir(`${root}/gateways/bad`, { recursive: true });
    await Deno.writeTextFile(`${root}/gateways/bad/metadata.json`, "{nope");
    await Deno.mkdir(`${root}/gateways/empty`, { recursive: true });
    await Deno.writeTextFile(`${root}/gateways/empty/metadata.json`, "{}");
    await rejectsWith(store.readGateway("bad"), /metadata.json is not valid JSON/);
    await rejectsWith(store.readGateway("empty"), /has no gateway_endpoint/);
    const list = await store.listGateways();
    assert.deepEqual(list.map((g) => [g.name, !!g.error]), [["bad", true], ["empty", true]]);
  });
});

Deno.test("resolution: flag, env, named, active; TLS files; last sandbox key", async () => {
  await withStore(async (store) => {
    await rejectsWith(
      resolveGateway(store, { env: env({}) }),
      /no gateway configured: pass --gateway-endpoint URL/,
    );
    const flag = await resolveGateway(store, {
      endpointFlag: "http://127.0.0.1:9",
      env: env({ OPENSHELL_GATEWAY_ENDPOINT: "http://127.0.0.1:10" }),
    });
    assert.equal(flag.endpoint.port, 9);
    assert.equal(flag.source, "flag");
    assert.equal(flag.key, "_127.0.0.1_9");
    const fromEnv = await resolveGateway(store, {
      env: env({ OPENSHELL_GATEWAY_ENDPOINT: "http://127.0.0.1:10" }),
    });
    assert.equal(fromEnv.endpoint.port, 10);
    assert.equal(fromEnv.source, "env");

    await store.addGateway({ name: "one", endpoint: "http://127.0.0.1:10" });
    await store.addGateway({ name: "tls", endpoint: "https://gw:443", ca: BUNDLE.ca });
    const active = await resolveGateway(store, { env: env({}) });
    assert.deepEqual([active.name, active.endpoint.url, active.source], [
      "one",
      "http://127.0.0.1:10",
      "active",
    ]);
    const named = await resolveGateway(store, { env: env({ OPENSHELL_GATEWAY: "tls" }) });
    assert.deepEqual([named.name, named.source], ["tls", "named"]);
    assert.deepEqual(named.tls?.ca, BUNDLE.ca);
    const matched = await resolveGateway(store, {
      env: env({ OPENSHELL_GATEWAY_ENDPOINT: "http://127.0.0.1:10/" }),
    });
    assert.equal(matched.name, "one", "an endpoint matching a registration uses its name");
    assert.equal(matched.key, "one");
    const tlsByFlag = await resolveGateway(store, {
      endpointFlag: "https://other:443",
      gatewayFlag: "tls",
      env: env({}),
    });
    assert.deepEqual(
      tlsByFlag.tls?.ca,
      BUNDLE.ca,
      "--gateway names the TLS files for an endpoint",
    );
    await rejectsWith(
      resolveGateway(store, { gatewayFlag: "ghost", env: env({}) }),
      /not registered/,
    );
  });
});

Deno.test("last sandbox per gateway; atomic writes leave no temp files", async () => {
  await withStore(async (store, root) => {
    assert.equal(await store.lastSandbox("_h_1"), undefined);
    await store.setLastSandbox("_h_1", "dev");
    await store.setLastSandbox("_h_1", "dev2");
    assert.equal(await store.lastSandbox("_h_1"), "dev2");
    await store.clearLastSandbox("_h_1", "other");
    assert.equal(await store.lastSandbox("_h_1"), "dev2");
    await store.clearLastSandbox("_h_1", "dev2");
    assert.equal(await store.lastSandbox("_h_1"), undefined);
    await writeFileAtomic(`${root}/f`, "x", 0o600);
    const names = [];
    for await (const e of Deno.readDir(root)) names.push(e.name);
    assert.deepEqual(names.sort(), ["f", "gateways"]);
    await assert.rejects(writeFileAtomic(`${root}/missing/f`, "x"), Deno.errors.NotFound);
  });
});

Deno.test("client bundles: expired, foreign or mismatched files are refused at add", async () => {
  await withStore(async (store, root) => {
    const files = { ca: "/pki/ca.crt", cert: "/pki/client.crt", key: "/pki/client.key" };
    const add = (over: Partial<typeof BUNDLE>) =>
      store.addGateway({ name: "gw", endpoint: "https://127.0.0.1:1", ...BUNDLE, ...over, files });
    await rejectsWith(
      add({ cert: enc(EXPIRED.cert), key: enc(EXPIRED.key) }),
      /^client certificate \/pki\/client\.crt expired on \S+Z: use the ca\.crt, client\.crt and client\.key of one gateway's current <state-dir>\/pki \(a gateway renews its client bundle at start\)$/,
    );
    await rejectsWith(
      add({ cert: enc(FOREIGN.cert), key: enc(FOREIGN.key) }),
      /^client certificate \/pki\/client\.crt is not signed by this gateway's CA: /,
    );
    await rejectsWith(
      add({ key: enc(FOREIGN.key) }),
      /^\/pki\/client\.key is not the private key of \/pki\/client\.crt \(import the key and certificate of one client bundle\)$/,
    );
    await rejectsWith(add({ ca: enc("x") }), /^\/pki\/ca\.crt is not a PEM certificate$/);
    await assert.rejects(Deno.stat(root), Deno.errors.NotFound, "nothing was written");
    const meta = await add({});
    assert.equal(meta.auth_mode, "mtls");
    const tls = await store.readTls("gw");
    assert.equal(tls?.files?.cert, `${root}/gateways/gw/mtls/tls.crt`);
  });
});

Deno.test("client bundles: the pre-flight before a connection names the file and the fix", async () => {
  await withStore(async (store, root) => {
    await store.addGateway({ name: "gw", endpoint: "https://127.0.0.1:1", ...BUNDLE });
    const resolved = await resolveGateway(store, { env: env({}) });
    assert.equal(resolved.tls?.files?.key, `${root}/gateways/gw/mtls/tls.key`);
    // The stored certificate expires (simulated by writing an expired one in its place).
    await Deno.writeTextFile(`${root}/gateways/gw/mtls/tls.crt`, EXPIRED.cert);
    await rejectsWith(
      resolveGateway(store, { env: env({}) }),
      new RegExp(
        `^client certificate ${root}/gateways/gw/mtls/tls\\.crt expired on \\S+Z: import the ` +
          "gateway's current client bundle: openshell gateway add gw https://127\\.0\\.0\\.1:1 " +
          "--mtls-dir DIR --force, DIR being the gateway's <state-dir>/pki$",
      ),
    );
    await Deno.writeTextFile(`${root}/gateways/gw/mtls/tls.crt`, FOREIGN.cert);
    await rejectsWith(
      resolveGateway(store, { env: env({}) }),
      /tls\.crt is not signed by this gateway's CA: import the gateway's current client bundle/,
    );
    // A CA file may hold several CAs: the one that signed the certificate counts.
    const both = { ca: enc(CA.cert + OTHER_CA.cert), cert: enc(FOREIGN.cert) };
    checkClientTls(both, { fix: "x" });
    const early = new Date(Date.now() - 2 * DAY);
    assert.throws(
      () => checkClientTls(BUNDLE, { fix: "x", now: early }),
      /^CliError: the CA certificate is not valid before \S+ \(check the clock\)$/,
    );
    assert.throws(() => checkClientTls({ ca: enc("nothing") }, { fix: "x" }), /holds no PEM/);
  });
});

Deno.test("forgetKnownHost: a deleted sandbox's host key leaves known_hosts", async () => {
  const root = await Deno.makeTempDir({ prefix: "oscli-cfg-" });
  try {
    const store = new ConfigStore(root);
    assert.equal(await store.forgetKnownHost("openshell-x"), 0, "no file: nothing to do");
    await assert.rejects(Deno.stat(store.knownHostsPath), Deno.errors.NotFound);
    await Deno.writeTextFile(
      store.knownHostsPath,
      "openshell-x ssh-ed25519 AAAA1\nopenshell-y ssh-ed25519 AAAA2\n",
      {
        mode: 0o600,
      },
    );
    assert.equal(await store.forgetKnownHost("openshell-x"), 1);
    assert.equal(await Deno.readTextFile(store.knownHostsPath), "openshell-y ssh-ed25519 AAAA2\n");
    assert.equal((await Deno.stat(store.knownHostsPath)).mode! & 0o777, 0o600);
    assert.equal(await store.forgetKnownHost("openshell-x"), 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
