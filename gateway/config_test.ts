import assert from "node:assert/strict";
import { FlagError } from "../core/flags.ts";
import { gatewayGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import {
  DEFAULT_STATE_DIR,
  driverSocketPath,
  GATEWAY_FLAGS,
  type GatewayConfig,
  gatewayGrantParams,
  gatewayHelp,
  internalSocketPath,
  MAX_UNIX_SOCKET_PATH,
  parseDbUrl,
  parseGatewayConfig,
} from "./config.ts";

/** Parses `args` with only `env` as the environment; returns the config. */
function parse(args: string[], env: Record<string, string> = {}): GatewayConfig {
  const r = parseGatewayConfig(args, (k) => env[k]);
  assert.ok(!r.help, "unexpected --help");
  return r.config;
}

/** Asserts parsing fails with a FlagError whose message matches `message`. */
function fails(args: string[], message: RegExp, env: Record<string, string> = {}): void {
  assert.throws(() => parseGatewayConfig(args, (k) => env[k]), (e: unknown) => {
    assert.ok(e instanceof FlagError, `not a FlagError: ${e}`);
    assert.match(e.message, message);
    assert.doesNotMatch(e.message, /\n/, "one line");
    return true;
  });
}

const PLAIN = ["--disable-tls"];

Deno.test("defaults", () => {
  const c = parse(PLAIN);
  assert.deepEqual(c, {
    port: 8080,
    bind: "0.0.0.0",
    stateDir: DEFAULT_STATE_DIR,
    db: { kind: "sqlite-file", path: `${DEFAULT_STATE_DIR}/gateway.db` },
    drivers: "vm",
    driverDir: "/usr/local/libexec/openshell",
    vmDriverStateDir: "/var/lib/openshell/vm",
    vmRuntimeDir: undefined,
    vmAccel: undefined,
    vmVcpus: undefined,
    vmMemMib: undefined,
    grpcEndpoint: undefined,
    sshConnectPath: "/connect/ssh",
    sshGatewayHost: undefined,
    sshGatewayPort: undefined,
    sshSessionTtlSecs: 86400,
    supervisorHeartbeatSecs: 15,
    maxConnections: 1024,
    maxConnectionsPerPeer: 64,
    connectionIdleSecs: 300,
    disableTls: true,
    disableGatewayAuth: false,
    tlsCert: undefined,
    tlsKey: undefined,
    tlsClientCa: undefined,
    logLevel: "info",
    logFormat: "text",
  });
});

Deno.test("env twins set every value; a flag beats its env twin; empty env is unset", () => {
  const env = {
    OPENSHELL_SERVER_PORT: "9000",
    OPENSHELL_BIND_ADDRESS: "127.0.0.1",
    OPENSHELL_STATE_DIR: "/srv/gw/",
    OPENSHELL_DB_URL: "sqlite::memory:",
    OPENSHELL_DRIVERS: "none",
    OPENSHELL_GRPC_ENDPOINT: "http://10.0.2.2:9000",
    OPENSHELL_SSH_CONNECT_PATH: "/tunnel",
    OPENSHELL_SSH_SESSION_TTL_SECS: "0",
    OPENSHELL_SUPERVISOR_HEARTBEAT_SECS: "5",
    OPENSHELL_MAX_CONNECTIONS: "10",
    OPENSHELL_MAX_CONNECTIONS_PER_PEER: "0",
    OPENSHELL_CONNECTION_IDLE_SECS: "7",
    OPENSHELL_DISABLE_TLS: "true",
    OPENSHELL_DISABLE_GATEWAY_AUTH: "1",
    OPENSHELL_LOG_LEVEL: "debug",
    OPENSHELL_LOG_FORMAT: "json",
    OPENSHELL_VM_VCPUS: "",
  };
  const c = parse([], env);
  assert.equal(c.port, 9000);
  assert.equal(c.bind, "127.0.0.1");
  assert.equal(c.stateDir, "/srv/gw", "trailing slash dropped");
  assert.deepEqual(c.db, { kind: "sqlite-memory" });
  assert.equal(c.drivers, "none");
  assert.equal(c.grpcEndpoint, "http://10.0.2.2:9000");
  assert.equal(c.sshConnectPath, "/tunnel");
  assert.equal(c.sshSessionTtlSecs, 0);
  assert.equal(c.supervisorHeartbeatSecs, 5);
  assert.equal(c.maxConnections, 10);
  assert.equal(c.maxConnectionsPerPeer, 0);
  assert.equal(c.connectionIdleSecs, 7);
  assert.equal(c.disableTls, true);
  assert.equal(c.disableGatewayAuth, true);
  assert.equal(c.logLevel, "debug");
  assert.equal(c.logFormat, "json");
  assert.equal(c.vmVcpus, undefined);

  const flagged = parse(["--port", "1234", "--log-format", "text"], env);
  assert.equal(flagged.port, 1234);
  assert.equal(flagged.logFormat, "text");
  // bad env values name the variable
  fails([], /^OPENSHELL_SERVER_PORT: expected a whole number, got "abc"/, {
    ...env,
    OPENSHELL_SERVER_PORT: "abc",
  });
  fails([], /^OPENSHELL_DISABLE_TLS: expected true or false/, {
    ...env,
    OPENSHELL_DISABLE_TLS: "maybe",
  });
});

Deno.test("the default database lives in the state dir", () => {
  assert.deepEqual(parse([...PLAIN, "--state-dir", "/x/y"]).db, {
    kind: "sqlite-file",
    path: "/x/y/gateway.db",
  });
});

Deno.test("--db-url forms", () => {
  assert.deepEqual(parseDbUrl("sqlite::memory:"), { kind: "sqlite-memory" });
  assert.deepEqual(parseDbUrl("sqlite://:memory:"), { kind: "sqlite-memory" });
  assert.deepEqual(parseDbUrl("sqlite:"), { kind: "sqlite-memory" });
  assert.deepEqual(parseDbUrl("sqlite:/var/db/gw.db"), {
    kind: "sqlite-file",
    path: "/var/db/gw.db",
  });
  assert.deepEqual(parseDbUrl("sqlite:///var/db/gw.db"), {
    kind: "sqlite-file",
    path: "/var/db/gw.db",
  });
  assert.deepEqual(parseDbUrl("postgres://u@h/db"), { kind: "postgres", url: "postgres://u@h/db" });
  assert.deepEqual(parseDbUrl("postgresql://h/db"), { kind: "postgres", url: "postgresql://h/db" });
  assert.deepEqual(parse([...PLAIN, "--db-url", "sqlite:/d/gw.db"]).db, {
    kind: "sqlite-file",
    path: "/d/gw.db",
  });
});

Deno.test("--db-url errors: relative paths, unknown schemes, postgres not yet", () => {
  fails(
    [...PLAIN, "--db-url", "sqlite:gw.db"],
    /^--db-url: sqlite path must be absolute, got "gw\.db"/,
  );
  // the URL form `sqlite://rel.db` is a relative path too, not a file at the root
  fails(
    [...PLAIN, "--db-url", "sqlite://gw.db"],
    /^--db-url: sqlite path must be absolute, got "gw\.db"/,
  );
  fails(
    [...PLAIN, "--db-url", "mysql://h/db"],
    /^--db-url: unsupported database URL "mysql:\/\/h\/db"/,
  );
  fails([...PLAIN, "--db-url", "/abs/gw.db"], /^--db-url: unsupported database URL/);
  fails([...PLAIN, "--db-url", "postgres://h/db"], /^--db-url: postgres is not supported yet/);
});

Deno.test("TLS is required unless disabled, and gateway auth needs a client CA", () => {
  fails([], /^TLS is on by default: pass --tls-cert and --tls-key .*or --disable-tls$/);
  fails(["--tls-cert", "/c.pem"], /^TLS is on by default: pass --tls-key /);
  fails(["--tls-key", "/k.pem"], /^TLS is on by default: pass --tls-cert /);
  fails(
    ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"],
    /^gateway auth needs --tls-client-ca .*or pass --disable-gateway-auth$/,
  );
  const noAuth = parse(["--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--disable-gateway-auth"]);
  assert.equal(noAuth.disableTls, false);
  const mtls = parse(["--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--tls-client-ca", "/ca.pem"]);
  assert.equal(mtls.tlsClientCa, "/ca.pem");
  assert.deepEqual(gatewayGrantParams(mtls).tlsFiles, ["/c.pem", "/k.pem", "/ca.pem"]);
  assert.deepEqual(gatewayGrantParams(noAuth).tlsFiles, ["/c.pem", "/k.pem"]);
  // with TLS disabled the files are neither required nor granted
  assert.deepEqual(gatewayGrantParams(parse([...PLAIN, "--tls-cert", "/c.pem"])).tlsFiles, []);
});

Deno.test("socket paths longer than a Unix socket allows are refused at start", () => {
  const longState = "/" + "s".repeat(MAX_UNIX_SOCKET_PATH - "/grpc.sock".length);
  assert.equal(internalSocketPath({ stateDir: longState }).length, MAX_UNIX_SOCKET_PATH + 1);
  fails([...PLAIN, "--state-dir", longState], /^--state-dir: too long for a Unix socket path/);
  const okState = longState.slice(0, -1);
  assert.equal(parse([...PLAIN, "--drivers", "none", "--state-dir", okState]).stateDir, okState);

  const longVm = "/" + "v".repeat(MAX_UNIX_SOCKET_PATH - "/compute-driver.sock".length);
  assert.equal(driverSocketPath({ vmDriverStateDir: longVm }).length, MAX_UNIX_SOCKET_PATH + 1);
  fails([...PLAIN, "--vm-driver-state-dir", longVm], /^--vm-driver-state-dir: too long/);
  // without the VM driver its socket is never made
  parse([...PLAIN, "--drivers", "none", "--vm-driver-state-dir", longVm]);
});

Deno.test("bad values and unknown flags fail with one line naming the flag", () => {
  fails(["--bogus"], /^unknown flag --bogus \(see --help\)$/);
  fails([...PLAIN, "extra"], /^unexpected argument "extra"/);
  fails([...PLAIN, "--port", "70000"], /^--port: must be at most 65535, got 70000/);
  fails([...PLAIN, "--port=-1"], /^--port: must be at least 0, got -1/);
  fails([...PLAIN, "--port", "-1"], /--port/);
  fails([...PLAIN, "--port"], /--port needs a value/);
  fails([...PLAIN, "--drivers", "k8s"], /^--drivers: expected one of vm, none, got "k8s"/);
  fails([...PLAIN, "--log-level", "loud"], /^--log-level: expected one of error, warn/);
  fails([...PLAIN, "--state-dir", "rel/dir"], /^--state-dir: must be an absolute path/);
  fails([...PLAIN, "--driver-dir", "bin"], /^--driver-dir: must be an absolute path/);
  fails([...PLAIN, "--bind", "a b"], /^--bind: not an address/);
  fails([...PLAIN, "--ssh-connect-path", "connect"], /^--ssh-connect-path: must start with "\/"/);
  fails(
    [...PLAIN, "--grpc-endpoint", "grpc://h:1"],
    /^--grpc-endpoint must be an http:\/\/ or https:\/\/ URL/,
  );
  fails([...PLAIN, "--grpc-endpoint", "http://h:1/path"], /^--grpc-endpoint must not have a path/);
  assert.equal(parse([...PLAIN, "--grpc-endpoint", "https://h:1/"]).grpcEndpoint, "https://h:1/");
  assert.equal(parse([...PLAIN, "--bind", "::1"]).bind, "::1");
});

Deno.test("gatewayGrantParams: db path only outside the state dir; driver only with --drivers vm", () => {
  const inside = gatewayGrantParams(parse([...PLAIN, "--state-dir", "/s", "--port", "0"]));
  assert.deepEqual(inside, {
    listen: { host: "0.0.0.0", port: 0 },
    stateDir: "/s",
    dbPath: undefined,
    driverBinary: "/usr/local/libexec/openshell/openshell-driver-vm",
    driverStateDir: "/var/lib/openshell/vm",
    tlsFiles: [],
  });
  const outside = gatewayGrantParams(
    parse([...PLAIN, "--state-dir", "/s", "--db-url", "sqlite:/s2/gw.db", "--driver-dir", "/d"]),
  );
  assert.equal(outside.dbPath, "/s2/gw.db", "a sibling dir sharing the prefix is outside");
  assert.equal(outside.driverBinary, "/d/openshell-driver-vm");
  assert.equal(
    gatewayGrantParams(parse([...PLAIN, "--state-dir", "/s", "--db-url", "sqlite:/s/sub/g.db"]))
      .dbPath,
    undefined,
  );
  assert.equal(
    gatewayGrantParams(parse([...PLAIN, "--db-url", "sqlite::memory:"])).dbPath,
    undefined,
  );
  const none = gatewayGrantParams(parse([...PLAIN, "--drivers", "none"]));
  assert.equal(none.driverBinary, undefined);
  assert.equal(none.driverStateDir, undefined);
  // the grants follow: no run permission at all without a driver
  assert.deepEqual(gatewayGrants(none).run, []);
  assert.deepEqual(gatewayGrants(outside).run, ["/d/openshell-driver-vm"]);
});

Deno.test("--help: asked for, and lists every flag with its env twin", () => {
  assert.deepEqual(parseGatewayConfig(["--help"], () => undefined), { help: true });
  assert.deepEqual(parseGatewayConfig(["-h", "--port", "1"], () => undefined), { help: true });
  const help = gatewayHelp();
  assert.match(help, /^usage: openshell-gateway \[flags\]/);
  for (const f of GATEWAY_FLAGS) {
    assert.ok(help.includes(`--${f.name}`), f.name);
    if (f.env) assert.ok(help.includes(f.env), f.env);
  }
});

async function runMain(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const [exe, ...rest] = roleCommand(
    "gateway",
    gatewayGrants({ listen: { host: "127.0.0.1", port: 0 }, stateDir: "/nonexistent" }),
    args,
  );
  const out = await new Deno.Command(exe, { args: rest, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("main.ts with its grants: bad flags exit 2 with one line, --help exits 0", async () => {
  const [bad, badValue, help] = await Promise.all([
    runMain(["--bogus"]),
    runMain(["--disable-tls", "--db-url", "postgres://h/db"]),
    runMain(["--help"]),
  ]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr, "openshell-gateway: unknown flag --bogus (see --help)\n");
  assert.equal(bad.stdout, "");
  assert.equal(badValue.code, 2, badValue.stderr);
  assert.match(badValue.stderr, /^openshell-gateway: --db-url: postgres is not supported yet.*\n$/);
  assert.equal(badValue.stderr.split("\n").length, 2, "exactly one line");
  assert.equal(help.code, 0, help.stderr);
  assert.equal(help.stdout, gatewayHelp() + "\n");
  assert.equal(help.stderr, "");
});
