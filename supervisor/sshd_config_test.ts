import assert from "node:assert/strict";
import { generateHostKey } from "../core/ssh_keys.ts";
import { renderSshdConfig, SANDBOX_USER, setEnvArgument } from "./sshd_config.ts";
import { checkSshd, writeSshdFiles } from "./sshd.ts";
import { ensureSandboxUser, TEST_SSHD } from "../testing/supervisor.ts";

function settings(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const [key, ...value] = line.split(" ");
    assert.ok(!map.has(key), `${key} appears once`);
    map.set(key, value.join(" "));
  }
  return map;
}

Deno.test("sshd config: one passwordless user, sftp, PTYs, local forwarding only", () => {
  const s = settings(renderSshdConfig({ hostKeyPath: "/run/openshell/ssh_host_key" }));
  assert.equal(s.get("HostKey"), "/run/openshell/ssh_host_key");
  assert.equal(s.get("AllowUsers"), SANDBOX_USER);
  assert.equal(s.get("PermitRootLogin"), "no");
  assert.equal(s.get("UsePAM"), "no");
  assert.equal(s.get("PermitEmptyPasswords"), "yes");
  assert.equal(s.get("PasswordAuthentication"), "yes");
  assert.equal(s.get("KbdInteractiveAuthentication"), "no");
  assert.equal(s.get("PubkeyAuthentication"), "yes");
  assert.equal(s.get("Subsystem"), "sftp internal-sftp");
  assert.equal(s.get("PermitTTY"), "yes");
  assert.equal(s.get("AllowTcpForwarding"), "local");
  assert.equal(s.get("X11Forwarding"), "no");
  assert.equal(s.get("AllowAgentForwarding"), "no");
  assert.equal(s.get("PermitTunnel"), "no");
  assert.equal(s.get("StrictModes"), "no");
  assert.equal(s.get("PrintMotd"), "no");
  assert.equal(s.get("LogLevel"), "INFO");
});

Deno.test("sshd config: log level mapping, quoting and refusals", () => {
  assert.equal(
    settings(renderSshdConfig({ hostKeyPath: "/k", logLevel: "trace" })).get("LogLevel"),
    "DEBUG3",
  );
  assert.equal(
    settings(renderSshdConfig({ hostKeyPath: "/k", logLevel: "warn" })).get("LogLevel"),
    "ERROR",
  );
  assert.equal(settings(renderSshdConfig({ hostKeyPath: "/a b/k" })).get("HostKey"), '"/a b/k"');
  assert.throws(() => renderSshdConfig({ hostKeyPath: "k" }), /absolute/);
  assert.throws(() => renderSshdConfig({ hostKeyPath: "/k\nUsePAM yes" }), /control character/);
  assert.throws(() => renderSshdConfig({ hostKeyPath: "/k", user: "root; x" }), /invalid user/);
});

Deno.test("sshd config: Debian's OpenSSH accepts it (sshd -t)", async () => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osup-cfg-" });
  try {
    const files = await writeSshdFiles(dir, { hostKey: generateHostKey().privateKey });
    await checkSshd(TEST_SSHD, files.configPath);
    // and refuses a broken one with sshd's own words
    await Deno.writeTextFile(files.configPath, "HostKey /nonexistent/key\nNoSuchOption yes\n");
    await assert.rejects(
      checkSshd(TEST_SSHD, files.configPath),
      /rejects its configuration.*NoSuchOption|Bad configuration/,
    );
    await assert.rejects(checkSshd("/nonexistent/sshd", files.configPath), /sshd not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sshd config: the sandbox environment becomes SetEnv lines sshd reads back", async () => {
  const env = { B_VAR: 'say "hi"', A_VAR: "back\\slash and spaces", C: "it's" };
  const text = renderSshdConfig({ hostKeyPath: "/tmp/hk", environment: env });
  const setEnv = text.split("\n").filter((l) => l.startsWith("SetEnv "));
  assert.deepEqual(setEnv, [
    `SetEnv "A_VAR=back\\\\slash and spaces" "B_VAR=say \\"hi\\"" "C=it's"`,
  ]);
  // OpenSSH's own parser agrees.
  const dir = await Deno.makeTempDir();
  try {
    const key = `${dir}/hk`;
    await Deno.writeTextFile(key, generateHostKey().privateKey, { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/cfg`,
      renderSshdConfig({ hostKeyPath: key, environment: env }),
    );
    const out = await new Deno.Command("/usr/sbin/sshd", { args: ["-T", "-f", `${dir}/cfg`] })
      .output();
    const lines = new TextDecoder().decode(out.stdout).split("\n").filter((l) =>
      l.startsWith("setenv ")
    );
    assert.deepEqual(lines, [
      "setenv A_VAR=back\\slash and spaces",
      'setenv B_VAR=say "hi"',
      "setenv C=it's",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sshd config: bad environment names or control characters are refused", () => {
  assert.throws(() => setEnvArgument("BAD-NAME", "x"), /invalid environment variable name/);
  assert.throws(() => setEnvArgument("OK", "line\nbreak"), /control character/);
});
