import assert from "node:assert/strict";
import { PRODUCTION_PARAMS, renderFlags, supervisorGrants } from "../../core/grants.ts";
import {
  GUEST_LAYOUT,
  renderInit,
  renderInittab,
  renderRunner,
  supervisorCommand,
} from "./init.ts";

async function shSyntaxOk(script: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-n", "-c", script], stderr: "piped" })
    .output();
  return out.code === 0 ? "" : new TextDecoder().decode(out.stderr);
}

Deno.test("init: valid shell; loads the given modules in order; hands over to busybox init", async () => {
  const text = renderInit({ modules: ["virtio_ring", "virtio", "virtio_net"] });
  assert.equal(await shSyntaxOk(text), "");
  assert.ok(text.startsWith("#!/bin/busybox sh\n"));
  assert.match(text, /for m in virtio_ring virtio virtio_net; do/);
  assert.match(text, /mount -t ext4 -o ro \/dev\/vda \/ro/);
  assert.match(text, /\$OPENSHELL_GATEWAY_IP \$OPENSHELL_GATEWAY_HOST/);
  assert.match(
    text,
    /^sandbox::1000:1000:sandbox:\/sandbox:\/bin\/sh$/m,
    "empty password for auth none",
  );
  assert.match(text, /^sshd:x:100:/m);
  assert.match(text, /\/run\/sshd/);
  assert.match(text, new RegExp(`echo "${GUEST_LAYOUT.probeMarker}"`));
  assert.ok(text.trimEnd().endsWith("exec /bin/init"));
  // Session cgroups: cgroup2 mounted, the supervisor's cgroup bind-mounted to its flag's default.
  assert.match(text, /mount -t cgroup2 cgroup2 \/sys\/fs\/cgroup/);
  assert.match(text, /mount -o bind \/sys\/fs\/cgroup\/openshell \/run\/openshell-sessions/);
  assert.equal(GUEST_LAYOUT.sessionCgroupMount, PRODUCTION_PARAMS.supervisor.sessionCgroup);
  assert.throws(() => renderInit({ modules: ["x; rm -rf /"] }), /invalid module name/);
});

Deno.test("init: the secrets arrive as root-only files from fw_cfg", () => {
  const text = renderInit({ modules: [] });
  for (const name of ["config", "environment", "ssh_host_key", "supervisor_token"]) {
    assert.ok(text.includes(`fwcopy ${name} /etc/openshell/${name}`), name);
  }
  assert.match(text, /chmod 0700 \/etc\/openshell/);
  assert.match(text, /chmod 0600 "\$2"/);
});

Deno.test("runner: the supervisor runs with exactly its production grants (alias address pinned)", async () => {
  const flags = renderFlags(
    supervisorGrants({ ...PRODUCTION_PARAMS.supervisor, gatewayAddresses: ["10.0.2.100"] }),
  );
  const cmd = supervisorCommand();
  for (const f of flags) assert.ok(cmd.includes(f.includes("*") ? `'${f}'` : f), `missing ${f}`);
  assert.match(
    cmd,
    /--allow-net=gateway\.openshell\.internal,10\.0\.2\.100:8080,unix:\/run\/openshell\/ssh\.sock/,
  );
  assert.ok(!cmd.includes("--allow-all") && !/ -A /.test(cmd));
  assert.match(cmd, /--ssh-host-key \/etc\/openshell\/ssh_host_key/);
  assert.match(cmd, /--env-file \/etc\/openshell\/environment/);
  const runner = renderRunner();
  assert.equal(await shSyntaxOk(runner), "");
  assert.match(runner, /--supervisor-token-file \/etc\/openshell\/supervisor_token/);
  assert.match(cmd, /--allow-write=\/run\/openshell,\/run\/openshell-sessions /);
  // After the supervisor exits, its connections' cgroups are killed before the restart.
  assert.match(runner, /echo 1 > "\$\{g\}cgroup\.kill"/);
  assert.match(renderInittab(), /^::respawn:\/etc\/openshell-run-supervisor$/m);
});

Deno.test("the guest init refuses to run unless it is PID 1, before touching anything", () => {
  const lines = renderInit({ modules: [] }).split("\n").filter((l) => l && !l.startsWith("#"));
  assert.match(lines[0], /^\[ "\$\$" = 1 \] \|\| \{ .* exit 1; \}$/);
});

Deno.test("init: the sandbox name is the host name, and the login prompt shows it", async () => {
  const text = renderInit({ modules: [] });
  assert.match(text, /^hostname "\$\{OPENSHELL_HOSTNAME:-openshell-sandbox\}"$/m);
  assert.match(text, /^127\.0\.1\.1 \$\(hostname\)$/m);
  const profile = text.match(/cat > \/etc\/profile <<'EOF'\n([^]*?)\nEOF\n/)?.[1];
  assert.ok(profile, "init writes /etc/profile");
  const out = await new Deno.Command("sh", {
    args: ["-c", `${profile}\nprintf %s "$PS1"`],
    stdout: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(out.stdout), "\\u@\\h:\\w\\$ ", "user@host:dir$");
});
