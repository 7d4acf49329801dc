import assert from "node:assert/strict";
import {
  cliGrants,
  compileArgs,
  driverGrants,
  egressGrants,
  gatewayGrants,
  hostPortGrant,
  PRODUCTION_PARAMS,
  renderFlags,
  renderGrantsTable,
  runArgs,
  supervisorGrants,
} from "./grants.ts";

Deno.test("supervisor: exactly the gateway host:port, its socket, its dir, sshd", () => {
  const flags = renderFlags(supervisorGrants({
    gateway: { host: "127.0.0.1", port: 9000 },
    socketPath: "/tmp/x/ssh.sock",
    sshd: "/usr/sbin/sshd",
  }));
  assert.deepEqual(flags, [
    "--allow-net=127.0.0.1:9000,unix:/tmp/x/ssh.sock",
    "--allow-read=/tmp/x",
    "--allow-write=/tmp/x",
    "--allow-run=/usr/sbin/sshd",
    "--allow-env=OPENSHELL_SANDBOX_ID,OPENSHELL_ENDPOINT,OPENSHELL_SSH_SOCKET_PATH," +
    "OPENSHELL_SSH_HOST_KEY,OPENSHELL_SSHD,OPENSHELL_TLS_CA,OPENSHELL_TLS_CERT,OPENSHELL_TLS_KEY," +
    "OPENSHELL_SUPERVISOR_TOKEN,OPENSHELL_SUPERVISOR_TOKEN_FILE,OPENSHELL_ENV_FILE," +
    "OPENSHELL_SESSION_CGROUP,OPENSHELL_LOG_LEVEL,OPENSHELL_LOG_FORMAT",
    "--ignore-env",
    "--no-prompt",
  ]);
});

Deno.test("supervisor: a gateway host name is granted for lookup plus each address:port", () => {
  const g = supervisorGrants({
    gateway: { host: "gateway.openshell.internal", port: 8080 },
    gatewayAddresses: ["10.0.2.100", "fd00::2"],
    socketPath: "/run/openshell/ssh.sock",
    sshd: "/usr/sbin/sshd",
  });
  assert.deepEqual(g.net, [
    "gateway.openshell.internal",
    "10.0.2.100:8080",
    "[fd00::2]:8080",
    "unix:/run/openshell/ssh.sock",
  ]);
  const literal = supervisorGrants({
    gateway: { host: "127.0.0.1", port: 8080 },
    gatewayAddresses: ["10.0.0.1"],
    socketPath: "/run/openshell/ssh.sock",
    sshd: "/usr/sbin/sshd",
  });
  assert.deepEqual(literal.net, ["127.0.0.1:8080", "unix:/run/openshell/ssh.sock"]);
});

Deno.test("supervisor: TLS and key files are added to read only", () => {
  const g = supervisorGrants({
    gateway: { host: "gw", port: 443 },
    socketPath: "/run/openshell/ssh.sock",
    sshd: "/usr/sbin/sshd",
    readFiles: ["/etc/openshell/ca.crt"],
  });
  assert.deepEqual(g.read, ["/run/openshell", "/etc/openshell/ca.crt"]);
  assert.deepEqual(g.write, ["/run/openshell"]);
});

Deno.test("supervisor: a host key file it generates once is writable, nothing else outside its dir", () => {
  const g = supervisorGrants({
    gateway: { host: "gw", port: 443 },
    socketPath: "/run/openshell/ssh.sock",
    sshd: "/usr/sbin/sshd",
    readFiles: ["/var/lib/os/host_key"],
    writeFiles: ["/var/lib/os/host_key", "/run/openshell"],
  });
  assert.deepEqual(g.write, ["/run/openshell", "/var/lib/os/host_key"]);
  assert.deepEqual(g.read, ["/run/openshell", "/var/lib/os/host_key"]);
});

Deno.test("supervisor: its session cgroup dir is read and written, nothing above it", () => {
  const g = supervisorGrants({
    gateway: { host: "gw", port: 443 },
    socketPath: "/run/openshell/ssh.sock",
    sshd: "/usr/sbin/sshd",
    sessionCgroup: "/run/openshell-sessions",
  });
  assert.deepEqual(g.read, ["/run/openshell", "/run/openshell-sessions"]);
  assert.deepEqual(g.write, ["/run/openshell", "/run/openshell-sessions"]);
});

Deno.test("gateway: listen address, state dir, db file, driver binary and socket", () => {
  const g = gatewayGrants({
    listen: { host: "0.0.0.0", port: 8080 },
    supervisorListen: { host: "10.0.2.2", port: 8081 },
    stateDir: "/s",
    dbPath: "/db/gw.db",
    driverBinary: "/d/openshell-driver-vm",
    driverStateDir: "/v",
    tlsFiles: ["/tls/key.pem"],
  });
  assert.deepEqual(g.net, [
    "0.0.0.0:8080",
    "10.0.2.2:8081",
    "unix:/s/grpc.sock",
    "unix:/s/supervisor.sock",
    "unix:/v/compute-driver.sock",
  ]);
  assert.deepEqual(g.read, ["/s", "/db/gw.db", "/v/compute-driver.sock", "/tls/key.pem"]);
  assert.deepEqual(g.write, [
    "/s",
    "/db/gw.db",
    "/db/gw.db-wal",
    "/db/gw.db-shm",
    "/v/compute-driver.sock",
  ]);
  assert.deepEqual(g.run, ["/d/openshell-driver-vm"]);
});

Deno.test("gateway without a driver may run nothing; port 0 grants the host", () => {
  const flags = renderFlags(
    gatewayGrants({
      listen: { host: "127.0.0.1", port: 0 },
      supervisorListen: { host: "127.0.0.1", port: 0 },
      stateDir: "/s",
    }),
  );
  assert.ok(flags.includes("--allow-net=127.0.0.1,unix:/s/grpc.sock,unix:/s/supervisor.sock"));
  assert.ok(!flags.some((f) => f.startsWith("--allow-run")));
});

Deno.test("driver: its four unix sockets, the gateway's one address, /etc/passwd, qemu, setpriv, qemu-img, the host's memory size", () => {
  const g = driverGrants({
    stateDir: "/v",
    gateway: { host: "127.0.0.1", port: 8080 },
    runtimeDir: "/rt",
    qemu: "/usr/bin/qemu-system-x86_64",
    setpriv: "/usr/bin/setpriv",
  });
  assert.deepEqual(g.net, [
    "unix:/v/compute-driver.sock",
    "unix:/v/grpc.sock",
    "unix:/v/guest-fwd.sock",
    "unix:/v/qmp-bind.sock",
    "127.0.0.1:8080",
  ]);
  assert.deepEqual(g.run, ["/usr/bin/qemu-system-x86_64", "/usr/bin/setpriv", "/usr/bin/qemu-img"]);
  assert.deepEqual(g.read, ["/v", "/rt", "/etc/passwd"]);
  assert.deepEqual(g.write, ["/v"]);
  assert.deepEqual(g.sys, ["systemMemoryInfo"]);
  assert.ok(renderFlags(g).includes("--allow-sys=systemMemoryInfo"));
  const own = driverGrants({
    stateDir: "/v",
    gateway: { host: "127.0.0.1", port: 8080 },
    runtimeDir: "/rt",
    qemu: "/q",
    setpriv: "/s",
    qemuImg: "/opt/qemu-img",
  });
  assert.deepEqual(own.run, ["/q", "/s", "/opt/qemu-img"]);
  // With egress: exactly the egress proxy's guest socket, nothing around it.
  const egress = driverGrants({
    stateDir: "/v",
    gateway: { host: "127.0.0.1", port: 8080 },
    runtimeDir: "/rt",
    qemu: "/q",
    setpriv: "/s",
    egressSocket: "/e/guest.sock",
  });
  assert.deepEqual(egress.net, [
    "unix:/v/compute-driver.sock",
    "unix:/v/grpc.sock",
    "unix:/v/guest-fwd.sock",
    "unix:/v/qmp-bind.sock",
    "unix:/e/guest.sock",
    "127.0.0.1:8080",
  ]);
  assert.deepEqual(egress.read, ["/v", "/rt", "/etc/passwd", "/e/guest.sock"]);
  assert.deepEqual(egress.write, ["/v", "/e/guest.sock"]);
  // The other roles get no system information.
  for (const other of [cliGrants({}), supervisorGrants(PRODUCTION_PARAMS.supervisor)]) {
    assert.ok(!renderFlags(other).some((f) => f.startsWith("--allow-sys")));
  }
});

Deno.test("cli: narrowed when the gateway and config dir are known, open otherwise", () => {
  const narrow = renderFlags(cliGrants({
    configDir: "/home/u/.config/openshell",
    gateways: [{ host: "127.0.0.1", port: 8080 }],
  }));
  assert.ok(narrow.includes("--allow-net=127.0.0.1:8080"));
  assert.ok(narrow.includes("--allow-read=/home/u/.config/openshell"));
  assert.ok(narrow.includes("--allow-run=ssh"));
  const open = renderFlags(cliGrants({}));
  assert.ok(open.includes("--allow-net"));
  assert.ok(open.includes("--allow-read"));
});

Deno.test("hostPortGrant brackets IPv6 literals", () => {
  assert.equal(hostPortGrant({ host: "::1", port: 80 }), "[::1]:80");
  assert.equal(hostPortGrant({ host: "localhost", port: 0 }), "localhost");
});

Deno.test("run and compile render identical permission flags", () => {
  const g = supervisorGrants(PRODUCTION_PARAMS.supervisor);
  const run = runArgs("supervisor", g, { root: "/repo", args: ["--x"] });
  const compile = compileArgs("supervisor", g, { root: "/repo", output: "/out/openshell-sandbox" });
  const perms = (a: string[]) =>
    a.filter((x) => x.startsWith("--allow-") || x.startsWith("--ignore-") || x === "--no-prompt");
  assert.deepEqual(perms(run), perms(compile));
  assert.equal(run.at(-2), "/repo/supervisor/main.ts");
  assert.equal(run.at(-1), "--x");
  assert.equal(compile.at(-1), "/repo/supervisor/main.ts");
  assert.ok(compile.includes("--output=/out/openshell-sandbox"));
  assert.ok(
    perms(run).includes(
      "--allow-net=gateway.openshell.internal,10.0.2.100:8080,unix:/run/openshell/ssh.sock",
    ),
  );
});

Deno.test("the README's grants table is the one the table renders", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("<!-- grants-table");
  const end = readme.indexOf("<!-- /grants-table -->");
  assert.ok(start >= 0 && end > start, "README.md lacks the grants-table markers");
  const body = readme.slice(readme.indexOf("\n", start) + 1, end).trim();
  // deno fmt aligns the columns; compare cell by cell.
  const cells = (table: string) =>
    table.split("\n").map((line) =>
      line.split("|").map((c) => c.trim().replace(/^-+$/, "-")).join("|")
    );
  assert.deepEqual(
    cells(body),
    cells(renderGrantsTable()),
    "README grants table is stale: paste renderGrantsTable()",
  );
});

Deno.test("egress: any host (it dials what policies allow), its state dir, interface addresses, no program", () => {
  const g = egressGrants({ stateDir: "/s/egress" });
  assert.deepEqual(renderFlags(g), [
    "--allow-net",
    "--allow-read=/s/egress",
    "--allow-write=/s/egress",
    "--allow-env=OPENSHELL_*",
    "--allow-sys=networkInterfaces",
    "--ignore-env",
    "--no-prompt",
  ]);
});
