import assert from "node:assert/strict";
import { REPO_ROOT } from "../core/launcher.ts";
import { netGrantsFor, selfCommand } from "./self.ts";
import {
  deadSandboxNoticeSecs,
  proxyCommandLine,
  renderSshConfig,
  type SshAccess,
  sshArgs,
  sshConfigPath,
  sshOptions,
} from "./ssh.ts";

const ACCESS: SshAccess = {
  sandboxName: "dev",
  sandboxId: "sb-1",
  proxyCommand: ["/usr/bin/openshell", "ssh-proxy", "--name", "dev", "--gateway", "my gw"],
  knownHostsFile: "/home/u/.config/openshell/known_hosts",
};

Deno.test("ssh config block pins the host key without disabling checks", () => {
  assert.equal(
    renderSshConfig(ACCESS),
    "Host openshell-dev\n" +
      "    User sandbox\n" +
      "    HostKeyAlias openshell-sb-1\n" +
      "    UserKnownHostsFile /home/u/.config/openshell/known_hosts\n" +
      "    GlobalKnownHostsFile /dev/null\n" +
      "    StrictHostKeyChecking accept-new\n" +
      "    ServerAliveInterval 10\n" +
      "    ServerAliveCountMax 3\n" +
      "    LogLevel ERROR\n" +
      "    ProxyCommand /usr/bin/openshell ssh-proxy --name dev --gateway 'my gw'\n",
  );
  assert.doesNotMatch(renderSshConfig(ACCESS), /StrictHostKeyChecking no/);
});

Deno.test("keepalives: a sandbox that stops answering is noticed within 45 s", () => {
  // OpenSSH gives up on the (CountMax+1)-th unanswered probe, one Interval apart.
  const settings = new Map(
    sshOptions(ACCESS).filter((a) => a !== "-o").map((a) => a.split("=", 2) as [string, string]),
  );
  const interval = Number(settings.get("ServerAliveInterval"));
  const countMax = Number(settings.get("ServerAliveCountMax"));
  assert.equal(deadSandboxNoticeSecs(interval, countMax), (countMax + 1) * interval);
  assert.equal(deadSandboxNoticeSecs(), 40);
  assert.ok(deadSandboxNoticeSecs(interval, countMax) <= 45);
  // The old 15 × 3 took 60 s.
  assert.equal(deadSandboxNoticeSecs(15, 3), 60);
});

Deno.test("ssh argv: options, tty choice, remote command quoted as one word", () => {
  const args = sshArgs(ACCESS, { command: ["sh", "-c", "echo 'a b'"], tty: false });
  assert.deepEqual(args.slice(-4), ["-T", "openshell-dev", "--", `sh -c 'echo '"'"'a b'"'"''`]);
  assert.ok(args.includes("StrictHostKeyChecking=accept-new"));
  assert.deepEqual(sshArgs(ACCESS, { tty: true }).slice(-2), ["-t", "openshell-dev"]);
  assert.equal(sshOptions(ACCESS).filter((a) => a === "-o").length, 9);
});

Deno.test("quoting for ssh: % tokens escaped, blanks in paths quoted, bad names refused", () => {
  assert.equal(proxyCommandLine(["a%h", "b c"]), "a%%h 'b c'");
  assert.equal(sshConfigPath("/a b/k%h"), '"/a b/k%%h"');
  assert.equal(sshConfigPath("/plain/path"), "/plain/path");
  assert.throws(() => sshConfigPath('/a"b'), /cannot be used in an ssh config/);
  assert.throws(() => renderSshConfig({ ...ACCESS, sandboxName: "a b" }), /sandbox name "a b"/);
});

Deno.test("self command: the binary itself when compiled, else deno run with the CLI grants", () => {
  assert.deepEqual(
    selfCommand(["ssh-proxy"], { standalone: true, configDir: "/c", gateways: [] }),
    [Deno.execPath(), "ssh-proxy"],
  );
  const dev = selfCommand(["ssh-proxy", "--name", "x"], {
    standalone: false,
    configDir: "/cfg/openshell",
    gateways: netGrantsFor("127.0.0.1", 8080),
  });
  assert.equal(dev[0], Deno.execPath());
  assert.equal(dev[1], "run");
  assert.ok(dev.includes("--allow-net=127.0.0.1:8080"));
  assert.ok(dev.includes("--allow-read=/cfg/openshell"));
  assert.ok(dev.includes("--allow-write=/cfg/openshell"));
  assert.ok(dev.includes("--allow-run=ssh"));
  assert.deepEqual(dev.slice(-4), [`${REPO_ROOT}/cli/main.ts`, "ssh-proxy", "--name", "x"]);
  assert.deepEqual(netGrantsFor("localhost", 1).map((h) => h.host), [
    "localhost",
    "127.0.0.1",
    "::1",
  ]);
  assert.deepEqual(netGrantsFor("[::1]", 1), [{ host: "::1", port: 1 }]);
});
