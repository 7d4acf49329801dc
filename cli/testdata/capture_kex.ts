/**
 * Regenerates `kex_transcripts.json`: the first bytes each side of a real
 * OpenSSH connection sends (version line, KEXINIT, key exchange, NEWKEYS and
 * a little encrypted traffic), for the host key parser's unit tests.
 *
 * Needs OpenSSH's `ssh`, `ssh-keygen` and `sshd` (run as root, with
 * `/run/sshd` present). Run from the repository root:
 *
 *     deno run -A cli/testdata/capture_kex.ts
 *
 * @module
 */
import { Buffer } from "node:buffer";

function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

interface Case {
  kex: string;
  hostKey: "ed25519" | "ecdsa";
}

const CASES: Case[] = [
  { kex: "curve25519-sha256", hostKey: "ed25519" },
  { kex: "ecdh-sha2-nistp256", hostKey: "ecdsa" },
  { kex: "diffie-hellman-group-exchange-sha256", hostKey: "ed25519" },
  { kex: "diffie-hellman-group14-sha256", hostKey: "ed25519" },
];

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success && cmd !== "ssh") {
    throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const dir = await Deno.makeTempDir({ prefix: "kexcap-" });
try {
  for (const t of ["ed25519", "ecdsa"]) {
    await run("ssh-keygen", ["-q", "-t", t, "-N", "", "-C", "", "-f", `${dir}/hk_${t}`]);
  }
  await Deno.writeTextFile(
    `${dir}/sshd_config`,
    `HostKey ${dir}/hk_ed25519\nHostKey ${dir}/hk_ecdsa\nUsePAM no\nPidFile none\n`,
  );
  const result = [];
  for (const c of CASES) {
    const c2s = `${dir}/c2s.bin`;
    const s2c = `${dir}/s2c.bin`;
    const proxy = `sh -c 'tee ${c2s} | /usr/sbin/sshd -i -f ${dir}/sshd_config | tee ${s2c}'`;
    const alg = c.hostKey === "ed25519" ? "ssh-ed25519" : "ecdsa-sha2-nistp256";
    await run("ssh", [
      "-o",
      `ProxyCommand=${proxy}`,
      "-o",
      `KexAlgorithms=${c.kex}`,
      "-o",
      `HostKeyAlgorithms=${alg}`,
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "nobody@capture",
      "true",
    ]);
    result.push({
      kex: c.kex,
      host_key: (await Deno.readTextFile(`${dir}/hk_${c.hostKey}.pub`)).trim(),
      client_to_server: encodeBase64(await Deno.readFile(c2s)),
      server_to_client: encodeBase64(await Deno.readFile(s2c)),
    });
  }
  const out = new URL("./kex_transcripts.json", import.meta.url);
  await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${out.pathname}`);
} finally {
  await Deno.remove(dir, { recursive: true });
}
