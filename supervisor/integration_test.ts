/**
 * The supervisor against a real gateway: both run as child processes with
 * exactly their grants; OpenSSH's `ssh`/`sftp` reach the sandbox through
 * the gateway's `CONNECT` endpoint and the supervisor's relay.
 */
import assert from "node:assert/strict";
import { supervisorGrants } from "../core/grants.ts";
import { REPO_ROOT, roleCommand } from "../core/launcher.ts";
import type { NetworkActivityEvent } from "../core/ocsf.ts";
import type { Socket } from "node:net";
import { byoSupervisor, sendConnect, spawnGateway, type TestGateway } from "../testing/gateway.ts";
import { fingerprintOfPublicKey, publicKeyOfPrivate } from "../core/ssh_keys.ts";
import {
  cleanEnv,
  connectRoute,
  ensureSandboxUser,
  gatewayApi,
  makeTestPki,
  moduleCommand,
  sftp,
  ssh,
  sshOptions,
  type SshRoute,
  startSupervisor,
  type SupervisorProcess,
  TEST_SSHD,
} from "../testing/supervisor.ts";
import { alive, waitFor } from "../core/testing.ts";

const READY = "SANDBOX_PHASE_READY";

async function routeFor(
  api: ReturnType<typeof gatewayApi>,
  gw: TestGateway,
  sandboxId: string,
): Promise<SshRoute> {
  const s = await api.sshSession(sandboxId);
  return connectRoute({
    host: "127.0.0.1",
    port: gw.port,
    connectPath: s.connect_path,
    sandboxId,
    token: s.token,
  });
}

function mode(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o777;
}

/** Most relays open at the same time, from the supervisor's own events. */
function peakRelays(events: NetworkActivityEvent[]): number {
  let open = 0;
  let peak = 0;
  for (const e of events) {
    if (typeof e.unmapped.channel_id !== "string") continue;
    open += e.activity_name === "Open" ? 1 : -1;
    peak = Math.max(peak, open);
  }
  return peak;
}

async function sshdProcessesUsing(configPath: string): Promise<number> {
  const out = await new Deno.Command("pgrep", { args: ["-f", "--", configPath], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).trim().split("\n").filter(Boolean).length;
}

/** Resolves with sshd's identification line, read from a fresh tunnel. */
function sshGreeting(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (d: Uint8Array) => {
      text += new TextDecoder().decode(d);
      if (!text.includes("\n")) return;
      socket.removeListener("data", onData);
      socket.pause();
      if (text.startsWith("SSH-2.0-")) resolve(text.split("\r\n")[0]);
      else reject(new Error(`not an SSH greeting: ${JSON.stringify(text.slice(0, 80))}`));
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.resume();
  });
}

/**
 * An `ssh` client whose remote command prints the pid of a process it leaves
 * running in the background (detached: own session, output to /dev/null),
 * then holds the connection open until `release()` closes the client's stdin.
 */
async function sessionLeavingProcess(
  route: SshRoute,
  options: { tty: boolean },
): Promise<{ pid: number; release(): Promise<Deno.CommandStatus> }> {
  const child = new Deno.Command("ssh", {
    args: [
      ...sshOptions(route),
      ...(options.tty ? ["-tt"] : []),
      "sandbox@sandbox",
      "setsid nohup sleep 307 </dev/null >/dev/null 2>&1 & echo $!; read hold",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/^\d+\s/.test(out)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ssh ended before printing a pid: ${JSON.stringify(out)}`);
    out += value;
  }
  const pid = Number(/^(\d+)/.exec(out)![1]);
  return {
    pid,
    release: async () => {
      const w = child.stdin.getWriter();
      // With a PTY the remote `read` needs a newline; without one EOF does it.
      await w.write(new TextEncoder().encode("\n")).catch(() => {});
      await w.close().catch(() => {});
      while (!(await reader.read()).done) { /* drain */ }
      return await child.status;
    },
  };
}

Deno.test("supervisor ⇄ gateway: READY, ssh, PTY, sftp, 20 relays, restart, kill -9", async (t) => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osup-it-" });
  const gwDir = `${dir}/gw`;
  await Deno.mkdir(gwDir);
  const dbUrl = `sqlite:${gwDir}/gateway.db`;
  let gw = await spawnGateway({ stateDir: gwDir, dbUrl });
  let api = gatewayApi(gw.port);
  const byo = await byoSupervisor(gw, "sup-it");
  const sandbox = byo.sandbox;
  // The supervisor generates its host key into this file once and keeps it across restarts.
  const hostKeyFile = `${dir}/host_key`;
  const supervise = () =>
    startSupervisor({
      endpoint: gw.supervisorEndpoint,
      sandboxId: sandbox.id,
      dir,
      token: byo.token,
      hostKeyFile,
    });
  let sup: SupervisorProcess | undefined;
  try {
    sup = await supervise();
    const first = sup;

    await t.step("session established; the gateway marks the sandbox READY", async () => {
      const ready = await api.waitForPhase(sandbox.id, READY);
      const cond = ready.status?.conditions.find((c) => c.type === "Ready");
      assert.equal(cond?.reason, "SupervisorConnected");
      const opened = await first.waitForEvent((e) =>
        e.activity_name === "Open" && e.unmapped.session_id !== undefined
      );
      assert.deepEqual(opened.dst_endpoint, { hostname: "127.0.0.1", port: gw.supervisorPort });
      assert.equal(opened.unmapped.sandbox_id, sandbox.id);
    });

    await t.step("its generated host key file is 0600 and is what the gateway pinned", async () => {
      assert.equal(mode(hostKeyFile), 0o600);
      const fp = fingerprintOfPublicKey(publicKeyOfPrivate(await Deno.readTextFile(hostKeyFile)));
      assert.equal((await api.sshSession(sandbox.id)).host_key_fingerprint, fp);
    });

    await t.step("socket 0600 in a 0700 directory", () => {
      assert.equal(mode(first.socketPath), 0o600);
      assert.equal(mode(`${dir}/run`), 0o700);
      assert.ok(Deno.lstatSync(first.socketPath).isSocket);
    });

    const route = await routeFor(api, gw, sandbox.id);

    await t.step("ssh runs a command as the sandbox user and returns its exit code", async () => {
      const r = await ssh(route, "id -un; echo out; echo err >&2; exit 42");
      assert.equal(r.code, 42, r.stderr);
      assert.equal(r.stdout, "sandbox\nout\n");
      assert.match(r.stderr, /err/);
      const piped = await ssh(route, "tr a-z A-Z", { stdin: "through the relay\n" });
      assert.equal(piped.stdout, "THROUGH THE RELAY\n");
    });

    await t.step("ssh allocates a PTY", async () => {
      const r = await ssh(route, "tty; test -t 0 && echo interactive", { tty: true });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^\/dev\/pts\/\d+\r?\n/);
      assert.match(r.stdout, /interactive/);
    });

    await t.step({
      name: "a connection's processes end with it, PTY or not (session cgroup)",
      ignore: first.sessionCgroup === undefined,
      fn: async () => {
        for (const tty of [false, true]) {
          const s = await sessionLeavingProcess(route, { tty });
          // Alive while its connection lasts …
          assert.ok(await alive(s.pid), `tty=${tty}: the background process should run`);
          const status = await s.release();
          assert.equal(status.code, 0, `tty=${tty}`);
          // … and gone once it closed, though it left the session and the process group.
          await waitFor(
            `tty=${tty}: process ${s.pid} to end with its connection`,
            async () => !(await alive(s.pid)),
            { timeoutMs: 10_000 },
          );
        }
      },
    });

    await t.step("sftp copies a file up and back unchanged", async () => {
      const local = `${dir}/payload.bin`;
      const back = `${dir}/payload.back`;
      const data = crypto.getRandomValues(new Uint8Array(60_000));
      const big = new Uint8Array(600_000);
      for (let i = 0; i < 10; i++) big.set(data, i * 60_000);
      await Deno.writeFile(local, big);
      const remote = `/tmp/osup-sftp-${crypto.randomUUID()}`;
      try {
        const r = await sftp(route, `put ${local} ${remote}\nget ${remote} ${back}\n`);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(await Deno.readFile(back), big);
        assert.equal((await Deno.stat(remote)).uid, (await Deno.stat("/home/sandbox")).uid);
      } finally {
        await Deno.remove(remote).catch(() => {});
      }
    });

    await t.step("20 relays at the same time", async () => {
      // A barrier: no session can finish before all 20 are open at once.
      const barrier = `${dir}/barrier`;
      await Deno.mkdir(barrier);
      await Deno.chmod(barrier, 0o777);
      await Deno.chmod(dir, 0o755);
      // 3 connections per token: 7 tokens.
      const routes = await Promise.all(
        Array.from({ length: 7 }, () => routeFor(api, gw, sandbox.id)),
      );
      const before = first.events().length;
      const command = (i: number) =>
        `touch ${barrier}/${i}; n=0; while [ "$(ls ${barrier} | wc -l)" -lt 20 ]; do ` +
        `n=$((n+1)); [ $n -gt 300 ] && exit 9; sleep 0.1; done; echo relay-${i}`;
      // The gateway frees a tunnel's slots when its client closes, so the 20
      // per sandbox are free again by now: no 429 to retry.
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => ssh(routes[i % 7], command(i))),
      );
      results.forEach((r, i) => {
        assert.equal(r.code, 0, `relay ${i}: ${r.stderr}`);
        assert.equal(r.stdout, `relay-${i}\n`);
      });
      assert.ok(peakRelays(first.events().slice(before)) >= 20);
      await Deno.chmod(dir, 0o700);
    });

    await t.step("back-to-back waves of 17 tunnels to the real sshd see no 429", async () => {
      const tokens = await Promise.all(
        Array.from({ length: 6 }, async () => (await api.sshSession(sandbox.id)).token),
      );
      for (let wave = 0; wave < 3; wave++) {
        const tunnels = await Promise.all(
          Array.from(
            { length: 17 },
            (_, i) =>
              sendConnect(gw.port, {
                "x-sandbox-id": sandbox.id,
                "x-sandbox-token": tokens[i % 6],
              }),
          ),
        );
        assert.deepEqual(tunnels.map((t) => t.status), Array(17).fill(200), `wave ${wave}`);
        // Like an ssh client that gives up after sshd's greeting: sshd is still running.
        await Promise.all(tunnels.map((t) => sshGreeting(t.socket)));
        for (const t of tunnels) t.socket.destroy();
      }
    });

    await t.step("the gateway restarts → the supervisor reconnects → READY again", async () => {
      const { port, supervisorPort } = gw;
      api.close();
      await gw.shutdown();
      const before = first.events().find((e) =>
        e.activity_name === "Open" && e.unmapped.session_id !== undefined
      )!.unmapped.session_id;
      const failed = await first.waitForEvent((e) =>
        e.activity_name === "Fail"
      );
      assert.match(String(failed.status_detail), /session stream|gateway closed/);
      gw = await spawnGateway({ stateDir: gwDir, dbUrl, port, supervisorPort });
      api = gatewayApi(gw.port);
      const again = await api.waitForPhase(sandbox.id, READY);
      assert.equal(again.id, sandbox.id);
      await first.waitForEvent((e) =>
        e.activity_name === "Open" && e.unmapped.session_id !== undefined &&
        e.unmapped.session_id !== before
      );
      const r = await ssh(await routeFor(api, gw, sandbox.id), "echo back");
      assert.equal(r.stdout, "back\n", r.stderr);
    });

    await t.step(
      "kill -9 mid-SSH: the client notices; a restart replaces the stale socket",
      async (t) => {
        const liveRoute = await routeFor(api, gw, sandbox.id);
        const client = new Deno.Command("ssh", {
          args: [
            ...sshOptions(liveRoute),
            "sandbox@sandbox",
            "echo started $$; exec sleep 120",
          ],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const reader = client.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const { value } = await reader.read();
        const started = /^started (\d+)\n$/.exec(value ?? "");
        assert.ok(started, String(value));
        const sleeper = Number(started[1]);
        await first.kill();
        // The client ends on its own, well before its 120 s command would.
        const status = await client.status;
        while (!(await reader.read()).done) { /* drain */ }
        await client.stderr.cancel();
        assert.notEqual(status.code, 0);
        await waitFor(
          "the killed supervisor's sshd to exit",
          async () => await sshdProcessesUsing(`${dir}/run/sshd_config`) === 0,
          { timeoutMs: 15_000, intervalMs: 100 },
        );
        assert.ok(
          Deno.lstatSync(first.socketPath).isSocket,
          "the killed supervisor left its socket",
        );
        await api.waitForPhase(sandbox.id, "SANDBOX_PHASE_PROVISIONING");

        // Same host key file: the pinned key still matches, so the hello is accepted.
        const keyBefore = await Deno.readTextFile(hostKeyFile);
        sup = await supervise();
        await t.step({
          name: "the killed supervisor's sessions are ended by its successor (session cgroup)",
          ignore: sup.sessionCgroup === undefined,
          fn: async () => {
            // The killed supervisor could not end its sessions; its successor did, at start.
            assert.equal(
              await alive(sleeper),
              false,
              "the killed session's sleep outlived a restart",
            );
          },
        });
        await api.waitForPhase(sandbox.id, READY);
        assert.equal(await Deno.readTextFile(hostKeyFile), keyBefore);
        const r = await ssh(await routeFor(api, gw, sandbox.id), "echo replaced");
        assert.equal(r.stdout, "replaced\n", r.stderr);
      },
    );

    await t.step("grants: the same flags refuse TCP listen, other hosts and /bin/sh", async () => {
      const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      try {
        const grants = sup!.grants;
        assert.deepEqual(
          grants,
          supervisorGrants({
            gateway: { host: "127.0.0.1", port: gw.supervisorPort },
            socketPath: `${dir}/run/ssh.sock`,
            sshd: TEST_SSHD,
            readFiles: [hostKeyFile, `${dir}/token`],
            writeFiles: [hostKeyFile],
            sessionCgroup: sup!.sessionCgroup,
          }),
        );
        const [exe, ...args] = moduleCommand(
          grants,
          `${REPO_ROOT}/supervisor/testdata/grants_probe.ts`,
          [
            "127.0.0.1",
            String(gw.supervisorPort),
            String(other.addr.port),
            `${dir}/run`,
            TEST_SSHD,
          ],
        );
        const out = await new Deno.Command(exe, { args, env: cleanEnv(), stderr: "piped" })
          .output();
        const text = new TextDecoder().decode(out.stdout);
        assert.ok(out.success, new TextDecoder().decode(out.stderr));
        const results = JSON.parse(text);
        assert.deepEqual(results, {
          "listen tcp": "NotCapable",
          "listen tcp 0.0.0.0": "NotCapable",
          "node listen tcp": "NotCapable",
          "connect other port": "NotCapable",
          "node connect other port": "NotCapable",
          "connect other host": "NotCapable",
          "spawn /bin/sh": "NotCapable",
          "spawn sh": "NotCapable",
          "read /etc/passwd": "NotCapable",
          "write outside the socket dir": "NotCapable",
          "sys uid": "NotCapable",
          "connect gateway": "ok",
          "write socket dir": "ok",
          "spawn sshd": "ok",
          "env HOME is hidden": "ok",
        });
        // And the probe ran with the supervisor's very flags.
        const supArgs = roleCommand("supervisor", grants, []);
        const flags = (argv: string[]) =>
          argv.filter((a) => /^--(allow|deny|ignore|no-prompt)/.test(a));
        assert.deepEqual(flags([exe, ...args]), flags(supArgs));
      } finally {
        other.close();
      }
    });

    await t.step("a host-name endpoint works with the name plus its address granted", async () => {
      const named = await byoSupervisor(gw, "sup-it-named");
      const byName = await startSupervisor({
        endpoint: `http://localhost:${gw.supervisorPort}`,
        sandboxId: named.sandbox.id,
        token: named.token,
        gatewayAddresses: ["127.0.0.1"],
      });
      try {
        await api.waitForPhase(named.sandbox.id, READY);
      } finally {
        await byName.close();
      }
    });

    await t.step(
      "SIGTERM: session closed, sessions' processes and socket gone, exit 0",
      async () => {
        const live = sup!;
        const contained = live.sessionCgroup !== undefined;
        const open = contained
          ? await sessionLeavingProcess(await routeFor(api, gw, sandbox.id), { tty: false })
          : undefined;
        const status = await live.stop();
        assert.equal(status.code, 0, live.stderr());
        if (open) {
          // Killed before the supervisor exited, not some time later.
          assert.equal(await alive(open.pid), false, "a session's process outlived the supervisor");
          assert.notEqual((await open.release()).code, 0, "the client saw its connection end");
        }
        assert.ok(live.events().some((e) => e.activity_name === "Close" && e.unmapped.session_id));
        assert.throws(() => Deno.lstatSync(live.socketPath), Deno.errors.NotFound);
        await api.waitForPhase(sandbox.id, "SANDBOX_PHASE_PROVISIONING");
      },
    );
  } finally {
    api.close();
    await sup?.close();
    await gw.shutdown();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** Runs the supervisor with `args` and its grants for `socketPath`; resolves with its exit. */
async function runSupervisor(
  args: string[],
  socketPath: string,
  readFiles: string[] = [],
): Promise<{ code: number; stderr: string }> {
  const grants = supervisorGrants({
    gateway: { host: "127.0.0.1", port: 9 },
    socketPath,
    sshd: TEST_SSHD,
    readFiles,
  });
  const [exe, ...rest] = roleCommand("supervisor", grants, args);
  const out = await new Deno.Command(exe, {
    args: rest,
    clearEnv: true,
    env: cleanEnv(),
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr).trim() };
}

/** The flags of a supervisor that would start, but for its socket path. */
function baseArgs(sock: string): string[] {
  return [
    "--sandbox-id",
    "sb",
    "--openshell-endpoint",
    "http://127.0.0.1:9",
    "--ssh-socket-path",
    sock,
  ];
}

Deno.test("supervisor: bad configuration stops it at start with one clear line", async () => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osup-cfg-" });
  try {
    await Deno.writeTextFile(`${dir}/bad_key`, "not a key\n");
    const [missing, https, badKey] = await Promise.all([
      runSupervisor(["--openshell-endpoint", "http://127.0.0.1:9"], `${dir}/a/ssh.sock`),
      runSupervisor(
        ["--sandbox-id", "sb", "--openshell-endpoint", "https://127.0.0.1:9"],
        `${dir}/a/ssh.sock`,
      ),
      runSupervisor(
        [...baseArgs(`${dir}/k/ssh.sock`), "--ssh-host-key", `${dir}/bad_key`],
        `${dir}/k/ssh.sock`,
        [`${dir}/bad_key`],
      ),
    ]);
    assert.equal(missing.code, 2);
    assert.equal(
      missing.stderr,
      "openshell-sandbox: --sandbox-id (or OPENSHELL_SANDBOX_ID) is required",
    );
    assert.equal(https.code, 2);
    assert.match(https.stderr, /https:\/\/ endpoint needs --tls-ca/);
    assert.equal(badKey.code, 1);
    assert.match(badKey.stderr, /host key is not an OpenSSH private key/);
    for (const r of [missing, https, badKey]) {
      assert.equal(r.stderr.split("\n").length, 1, r.stderr);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "supervisor: a socket dir owned by another user stops it at start (root only)",
  // Only root can give the directory away; otherwise there is nothing to refuse.
  ignore: Deno.uid() !== 0,
  fn: async () => {
    await ensureSandboxUser();
    const dir = await Deno.makeTempDir({ prefix: "osup-cfg-" });
    try {
      await Deno.mkdir(`${dir}/foreign`, { mode: 0o700 });
      await Deno.chown(`${dir}/foreign`, 65534, 65534);
      const sock = `${dir}/foreign/ssh.sock`;
      const foreign = await runSupervisor(baseArgs(sock), sock);
      assert.equal(foreign.code, 1);
      assert.match(foreign.stderr, /ERROR .*socket directory .* is owned by uid 65534/);
      assert.equal(foreign.stderr.split("\n").length, 1, foreign.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("supervisor: https supervisor plane verified with the gateway's CA; another CA is refused", async () => {
  await ensureSandboxUser();
  const dir = await Deno.makeTempDir({ prefix: "osup-tls-" });
  const pki = await makeTestPki(dir);
  // The user API serves the operator's own certificate; the supervisor plane always
  // serves one from the gateway's PKI, whose CA comes with the supervisor credentials.
  const gw = await spawnGateway({
    tls: true,
    args: [
      "--tls-cert",
      pki.serverCert,
      "--tls-key",
      pki.serverKey,
      "--tls-client-ca",
      pki.ca,
    ],
  });
  const api = gatewayApi(gw.port, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
  const sups: SupervisorProcess[] = [];
  try {
    const byo = await byoSupervisor(gw, "sup-tls", {
      clientPki: { dir, ca: pki.ca, clientCert: pki.clientCert, clientKey: pki.clientKey },
    });
    assert.equal(byo.credentials.endpoint, gw.supervisorEndpoint);
    assert.match(byo.credentials.endpoint, /^https:/);
    const planeCa = `${dir}/plane-ca.crt`;
    await Deno.writeTextFile(planeCa, byo.credentials.ca_cert_pem);
    const endpoint = gw.supervisorEndpoint;
    // The user API's CA does not sign the supervisor plane: refused, one clear failure.
    const wrong = await startSupervisor({
      endpoint,
      sandboxId: byo.sandbox.id,
      token: byo.token,
      args: ["--tls-ca", pki.ca],
      readFiles: [pki.ca],
    });
    sups.push(wrong);
    const refused = await wrong.waitForEvent((e) => e.activity_name === "Fail");
    assert.match(String(refused.status_detail), /certificate|self[- ]signed|verif/i);
    await wrong.close();

    const right = await startSupervisor({
      endpoint,
      sandboxId: byo.sandbox.id,
      token: byo.token,
      args: ["--tls-ca", planeCa],
      readFiles: [planeCa],
    });
    sups.push(right);
    await api.waitForPhase(byo.sandbox.id, READY);
    const opened = await right.waitForEvent((e) => e.activity_name === "Open");
    assert.deepEqual(opened.dst_endpoint, { hostname: "127.0.0.1", port: gw.supervisorPort });
  } finally {
    api.close();
    for (const s of sups) await s.close();
    await gw.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
