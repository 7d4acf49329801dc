import assert from "node:assert/strict";
import { fingerprintOfPublicKey, generateHostKey, publicKeyOfPrivate } from "./ssh_keys.ts";

Deno.test("generated host keys are distinct and self-consistent", () => {
  const a = generateHostKey("c");
  const b = generateHostKey("c");
  assert.notEqual(a.privateKey, b.privateKey);
  assert.match(a.publicKey, /^ssh-ed25519 [A-Za-z0-9+/]+=* c$/);
  assert.match(a.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(fingerprintOfPublicKey(a.publicKey), a.fingerprint);
  assert.equal(publicKeyOfPrivate(a.privateKey, "c"), a.publicKey);
  assert.throws(() => publicKeyOfPrivate("garbage"), /not an OpenSSH private key/);
});

Deno.test("OpenSSH's ssh-keygen reads the key and agrees on the fingerprint", async () => {
  const key = generateHostKey("t");
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/k`, key.privateKey, { mode: 0o600 });
    const pub = await new Deno.Command("ssh-keygen", { args: ["-y", "-f", `${dir}/k`] }).output();
    assert.ok(pub.success, new TextDecoder().decode(pub.stderr));
    assert.equal(new TextDecoder().decode(pub.stdout).trim(), key.publicKey);
    const fp = await new Deno.Command("ssh-keygen", { args: ["-l", "-f", `${dir}/k`] }).output();
    assert.match(
      new TextDecoder().decode(fp.stdout),
      new RegExp(key.fingerprint.replace(/[+/]/g, "\\$&")),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
