import assert from "node:assert/strict";
import { REPO_ROOT } from "../core/launcher.ts";
import { netGrantsFor, selfCommand } from "./self.ts";
import {
  deadSandboxNoticeSecs,
  hostKeyAlias,
  proxyCommandLine,
  renderSshConfig,
  type SshAccess,
  sshArgs,
  sshConfigPath,
  sshOptions,
  withoutKnownHost,
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
  // The bare name (its lookup needs it), then its addresses at the port.
  assert.deepEqual(netGrantsFor("localhost", 1), [
    { host: "localhost", port: 0 },
    { host: "127.0.0.1", port: 1 },
    { host: "::1", port: 1 },
  ]);
  assert.deepEqual(netGrantsFor("[::1]", 1), [{ host: "::1", port: 1 }]);
});

const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOuG3Ezd6rOSM1u4dP7JOYJOTy7DpdL05fyLs5Z7vNhN";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHvVyoKD2WxW3k8qk6pT+Pb3wLQ2i/VUqBUvfZ6ogdAb";

Deno.test("withoutKnownHost: a sandbox's entries go, plain or in a list; the rest stays", () => {
  const a = hostKeyAlias("sb-a");
  assert.equal(a, "openshell-sb-a");
  const text = `# mine\n${a} ${KEY_A}\nopenshell-sb-b ${KEY_B}\nother,${a} ${KEY_A}\n` +
    `@cert-authority ${a} ${KEY_A}\nopenshell-sb-ab ${KEY_B}\n`;
  const r = withoutKnownHost(text, a);
  assert.equal(r.removed, 3);
  assert.equal(r.text, `# mine\nopenshell-sb-b ${KEY_B}\nopenshell-sb-ab ${KEY_B}\n`);
  assert.deepEqual(withoutKnownHost(r.text, a), { text: r.text, removed: 0 });
});

Deno.test("withoutKnownHost: entries ssh-keygen -H hashed are found too", async () => {
  const dir = await Deno.makeTempDir({ prefix: "oscli-kh-" });
  try {
    const file = `${dir}/known_hosts`;
    await Deno.writeTextFile(file, `openshell-sb-a ${KEY_A}\nopenshell-sb-b ${KEY_B}\n`);
    const hash = await new Deno.Command("ssh-keygen", { args: ["-H", "-f", file], stderr: "null" })
      .output();
    assert.equal(hash.code, 0);
    const hashed = await Deno.readTextFile(file);
    assert.ok(!hashed.includes("openshell-sb-a") && hashed.startsWith("|1|"), hashed);
    const r = withoutKnownHost(hashed, "openshell-sb-a");
    assert.equal(r.removed, 1);
    await Deno.writeTextFile(file, r.text);
    const find = async (host: string) =>
      (await new Deno.Command("ssh-keygen", {
        args: ["-F", host, "-f", file],
        stdout: "piped",
        stderr: "null",
      }).output()).code;
    assert.equal(await find("openshell-sb-a"), 1, "gone");
    assert.equal(await find("openshell-sb-b"), 0, "kept");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
