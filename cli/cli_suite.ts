/**
 * The CLI test suite: every command against a real gateway whose sandboxes
 * are served by host supervisors (OpenSSH sshd as the `sandbox` user), with
 * the CLI running under its shipped grants. It runs once per scheme:
 * `cli_test.ts` over plaintext http, `cli_https_test.ts` over TLS with
 * client certificates (plus the TLS failure cases).
 *
 * Each case is a step of one test sharing the fixture: a failed step does not
 * stop the others, and the steps that use the sandbox of the create step are
 * reported ignored (not failed) when that step failed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { runCommand } from "../core/command.ts";
import { certificateInfo } from "../core/pki.ts";
import { shellJoin } from "../core/shell.ts";
import { findProcesses, waitFor } from "../core/testing.ts";
import { startSupervisor } from "../testing/supervisor.ts";
import { type CliFixture, type CliResult, type Scheme, startCliFixture } from "./testing.ts";

const dec = new TextDecoder();

/** `text` as a literal in a RegExp. */
function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stderr}`);
  return r;
}

async function sandboxNames(f: CliFixture): Promise<string[]> {
  const res = await f.api.call(f.api.raw.ListSandboxes, {
    limit: 100, // the largest page the gateway serves
    offset: 0,
  });
  return res.sandboxes.map((s) => s.name);
}

/** The entries (non-blank, non-comment lines) of the CLI's known_hosts. */
async function knownHosts(f: CliFixture): Promise<string[]> {
  const text = await Deno.readTextFile(`${f.configHome}/openshell/known_hosts`).catch(() => "");
  return text.split("\n").filter((l) => l.trim() && !l.startsWith("#"));
}

function runCmd(
  cmd: string,
  args: string[],
  stdin?: string,
  env?: Record<string, string>,
): Promise<CliResult> {
  return runCommand([cmd, ...args], { stdin, env });
}

/** Runs the suite over `scheme` as steps of `t`. */
export async function cliSuite(t: Deno.TestContext, scheme: Scheme): Promise<void> {
  const f = await startCliFixture({ scheme });
  const https = scheme === "https";
  /** `--gateway-name` for token-mode ssh-proxy runs (its TLS files). */
  const gatewayName = f.names.gateway ? ["--gateway-name", f.names.gateway] : [];
  const tmp = await Deno.makeTempDir({ prefix: "oscli-test-" });
  let failed = false;
  /**
   * One step of the suite: a failed step does not stop the next ones. A step
   * whose prerequisite is missing (`unmet`) is reported ignored, not failed.
   */
  const step = async (name: string, fn: () => Promise<void>, unmet?: string) => {
    const passed = await t.step({ name, ignore: unmet !== undefined, fn });
    if (!passed && unmet === undefined) failed = true;
    return passed;
  };
  /** The sandbox `name` of the create step; steps that use it need that step. */
  let created = false;
  const sandboxStep = (label: string, fn: () => Promise<void>) =>
    step(label, fn, created ? undefined : "the create step failed");
  /** The never-ready sandbox `slow` on the bare gateway. */
  let slowMade = false;
  try {
    await step("status: Connected with the server version", async () => {
      const r = ok(await f.run(["status"]), "status");
      assert.match(r.stdout, new RegExp(`^Server: +${f.url}$`, "m"));
      assert.match(r.stdout, /^Version: +\d+\.\d+\.\d+/m);
      assert.match(r.stdout, /^Status: +Connected$/m);
    });

    await step("status: Disconnected and exit 1 when the gateway does not answer", async () => {
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const r = await f.run(["--gateway-endpoint", `${scheme}://127.0.0.1:${port}`, "status"], {
        gateways: [{ host: "127.0.0.1", port }],
      });
      assert.equal(r.code, 1);
      assert.match(
        r.stdout,
        /^Status: +Disconnected: cannot reach the gateway at .*: connection refused$/m,
      );
    });

    let name = "";
    created = await step("create -- echo ok: prints ok, exit 0, sandbox kept", async () => {
      const r = ok(await f.run(["sandbox", "create", "--", "echo", "ok"]), "create");
      assert.equal(r.stdout, "ok\n");
      const m = r.stderr.match(/^Created sandbox: (\S+)$/m);
      assert.ok(m, r.stderr);
      name = m[1];
      assert.match(r.stderr, /is ready \(\d+\.\ds\)/);
      assert.ok((await sandboxNames(f)).includes(name));
      assert.equal((await knownHosts(f)).length, 1, "ssh remembered its host key");
    });

    await sandboxStep(
      "create with a name that is taken: one line saying what to do, exit 1",
      async () => {
        const r = await f.run(["sandbox", "create", "--name", name, "--", "true"]);
        assert.deepEqual([r.code, r.stdout, r.stderr], [
          1,
          "",
          `error: sandbox "${name}" already exists: pick another --name, or delete it with ` +
          `'openshell sandbox delete ${name}'\n`,
        ]);
      },
    );

    await step("create --no-keep -- sh -c 'exit 7': exit 7, sandbox deleted", async () => {
      const hostsBefore = (await knownHosts(f)).length;
      const r = await f.run([
        "sandbox",
        "create",
        "--name",
        "seven",
        "--no-keep",
        "--",
        "sh",
        "-c",
        "exit 7",
      ]);
      assert.equal(r.code, 7, r.stderr);
      assert.match(r.stderr, /^Deleted sandbox seven$/m);
      assert.ok(!(await sandboxNames(f)).includes("seven"));
      assert.equal(
        (await knownHosts(f)).length,
        hostsBefore,
        "its host key left known_hosts with it",
      );
    });

    await step(
      "create without CMD runs a shell (reading stdin when it is not a terminal)",
      async () => {
        const r = await f.run(["sandbox", "create", "--no-keep"], {
          stdin: "echo from-shell $((1+1))\nexit 5\n",
        });
        assert.equal(r.code, 5, r.stderr);
        assert.equal(r.stdout, "from-shell 2\n");
      },
    );

    await sandboxStep("list: table, names, ids, json", async () => {
      const table = ok(await f.run(["sandbox", "list"]), "list");
      assert.match(table.stdout, /^NAME +ID +PHASE +AGE$/m);
      assert.match(table.stdout, new RegExp(`^${name} +\\S+ +Ready +\\d+[smhd]$`, "m"));
      // The gateway's sandboxes: only `name`, unless an earlier step failed to delete its own.
      const all = await sandboxNames(f);
      assert.ok(all.includes(name));
      const names = ok(await f.run(["sandbox", "list", "--names"]), "list --names");
      assert.deepEqual(names.stdout.trim().split("\n"), all);
      const json = JSON.parse(ok(await f.run(["sandbox", "list", "-o", "json"]), "json").stdout);
      assert.deepEqual(json.map((s: { name: string }) => s.name), all);
      const mine = json.find((s: { name: string }) => s.name === name);
      assert.equal(mine.phase, "SANDBOX_PHASE_READY");
      const ids = ok(await f.run(["sandbox", "list", "--ids"]), "list --ids");
      assert.equal(ids.stdout, json.map((s: { id: string }) => `${s.id}\n`).join(""));
    });

    await sandboxStep("get: text, json, the last sandbox by default, unknown name", async () => {
      const text = ok(await f.run(["sandbox", "get", name]), "get");
      assert.match(text.stdout, new RegExp(`^Name: +${name}$`, "m"));
      assert.match(text.stdout, /^Phase: +Ready$/m);
      const last = ok(await f.run(["sandbox", "get", "-o", "json"]), "get (last)");
      assert.equal(JSON.parse(last.stdout).name, name, "create remembered the sandbox");
      assert.equal(last.stderr, `→ using sandbox '${name}' (last used)\n`, "and says so");
      const missing = await f.run(["sandbox", "get", "nope"]);
      assert.equal(missing.code, 1);
      assert.equal(missing.stderr, 'error: sandbox "nope" not found\n');
    });

    await sandboxStep("exec: split output, exit code, stdin, workdir, env", async () => {
      const r = await f.run([
        "sandbox",
        "exec",
        name,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
      ]);
      assert.deepEqual([r.code, r.stdout, r.stderr], [3, "out\n", "err\n"]);
      const cat = ok(
        await f.run(["sandbox", "exec", name, "--", "cat"], { stdin: "piped data\n" }),
        "cat",
      );
      assert.equal(cat.stdout, "piped data\n");
      const wd = ok(
        await f.run([
          "sandbox",
          "exec",
          name,
          "--workdir",
          "/tmp",
          "-e",
          "GREETING=hi there",
          "--",
          "sh",
          "-c",
          'pwd; echo "$GREETING"',
        ]),
        "exec --workdir",
      );
      assert.equal(wd.stdout, "/tmp\nhi there\n");
      const tty = ok(await f.run(["sandbox", "exec", name, "--tty", "--", "tty"]), "exec --tty");
      assert.match(tty.stdout, /^\/dev\/pts\/\d+\r?\n$/);
      const missing = await f.run(["sandbox", "exec", "nope", "--", "true"]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^error: sandbox "nope" not found$/m);
      const noCmd = await f.run(["sandbox", "exec", name]);
      assert.equal(noCmd.code, 2);
      assert.match(noCmd.stderr, /missing command after '--'/);
      const slow = await f.run(["sandbox", "exec", name, "--timeout", "1", "--", "sleep", "30"]);
      assert.deepEqual([slow.code, slow.stdout, slow.stderr], [
        124,
        "",
        "error: the command did not finish within 1 s (--timeout) and was stopped\n",
      ]);
    });

    await sandboxStep("ssh-config works with plain ssh and scp (both ways)", async () => {
      const cfg = ok(await f.run(["sandbox", "ssh-config", name]), "ssh-config");
      assert.match(cfg.stdout, new RegExp(`^Host openshell-${name}$`, "m"));
      assert.match(cfg.stdout, /^ {4}StrictHostKeyChecking accept-new$/m);
      assert.match(cfg.stdout, /^ {4}ServerAliveInterval 10$/m);
      const file = `${tmp}/ssh_config`;
      await Deno.writeTextFile(file, cfg.stdout);
      const base = ["-F", file, "-o", "BatchMode=yes"];
      const sshRun = await runCmd("ssh", [...base, `openshell-${name}`, "echo hello; whoami"]);
      assert.equal(sshRun.code, 0, sshRun.stderr);
      assert.equal(sshRun.stdout, "hello\nsandbox\n");
      assert.equal(sshRun.stderr, "", "the proxy revoked its own token without a warning");
      const local = `${tmp}/up.bin`;
      const payload = new Uint8Array(200_000);
      for (let i = 0; i < payload.length; i += 65536) {
        crypto.getRandomValues(payload.subarray(i, i + 65536));
      }
      await Deno.writeFile(local, payload);
      const remote = `/tmp/oscli-${crypto.randomUUID()}`;
      const up = await runCmd("scp", [...base, local, `openshell-${name}:${remote}`]);
      assert.equal(up.code, 0, up.stderr);
      const down = await runCmd("scp", [...base, `openshell-${name}:${remote}`, `${tmp}/down.bin`]);
      assert.equal(down.code, 0, down.stderr);
      assert.deepEqual(await Deno.readFile(`${tmp}/down.bin`), payload);
      await runCmd("ssh", [...base, `openshell-${name}`, `rm -f ${remote}`]);
      const known = await Deno.readTextFile(`${f.configHome}/openshell/known_hosts`);
      assert.match(known, / ssh-ed25519 AAAA/, "ssh remembered the sandbox's host key");
    });

    await sandboxStep("ssh-proxy pins the host key the gateway reported", async () => {
      const sandbox = JSON.parse(
        ok(await f.run(["sandbox", "get", name, "-o", "json"]), "get").stdout,
      );
      const session = await f.api.call(f.api.raw.CreateSshSession, { sandbox_id: sandbox.id });
      assert.match(session.host_key_fingerprint, /^SHA256:/, "the host driver provisions the key");
      const proxy = (fp: string) =>
        shellJoin(f.argv([
          "ssh-proxy",
          "--gateway",
          `${f.url}/connect/ssh`,
          "--sandbox-id",
          sandbox.id,
          "--host-key-fingerprint",
          fp,
          "--config-dir",
          `${f.configHome}/openshell`,
          ...gatewayName,
        ]));
      const sshVia = (fp: string) =>
        runCmd(
          "ssh",
          [
            "-F",
            "/dev/null",
            "-o",
            `ProxyCommand=${proxy(fp)}`,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "sandbox@sandbox",
            "echo pinned",
          ],
          undefined,
          { OPENSHELL_SSH_TOKEN: session.token },
        );
      const good = await sshVia(session.host_key_fingerprint);
      assert.equal(good.code, 0, good.stderr);
      assert.equal(good.stdout, "pinned\n");
      const bad = await sshVia("SHA256:9TuMax+jc70j8hFvcAg2gDcUJChX4iU37tYGbqOAyyQ");
      assert.equal(bad.code, 255);
      assert.equal(bad.stdout, "");
      assert.match(
        bad.stderr,
        /error: host key mismatch: the sandbox presented SHA256:\S+ but the gateway reported SHA256:9TuMax/,
      );
    });

    await sandboxStep("connect in tmux: prompt, command, resize, exit", async () => {
      const socket = `oscli-${crypto.randomUUID().slice(0, 8)}`;
      const tmux = (...args: string[]) => runCmd("tmux", ["-L", socket, ...args]);
      const command = shellJoin([
        "env",
        `XDG_CONFIG_HOME=${f.configHome}`,
        `OPENSHELL_GATEWAY_ENDPOINT=${f.url}`,
        ...f.argv(["sandbox", "connect", name]),
      ]) + "; echo EXIT=$?; sleep 60";
      ok(await tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command), "tmux");
      const screen = async () => (await tmux("capture-pane", "-p", "-t", "t")).stdout;
      let last = "";
      const seen = (pattern: RegExp) =>
        waitFor(`${pattern} on screen`, async () => {
          last = await screen();
          return pattern.test(last);
        }, { timeoutMs: 20_000, intervalMs: 100 }).catch((e) => {
          throw new Error(`${e.message}; the screen shows:\n${last}`);
        });
      try {
        await seen(/sandbox@\S*:.*\$\s*$/m);
        await tmux("send-keys", "-t", "t", "echo marker-$((6*7))", "Enter");
        await seen(/^marker-42$/m);
        await tmux("resize-window", "-t", "t", "-x", "120", "-y", "40");
        await tmux("send-keys", "-t", "t", "stty size", "Enter");
        await seen(/^40 120$/m);
        await tmux("send-keys", "-t", "t", "exit", "Enter");
        await seen(/^EXIT=0$/m);
      } finally {
        await tmux("kill-server");
      }
    });

    await sandboxStep(
      "connect: the SSH token is in no process's argv and is revoked when ssh exits",
      async () => {
        const sandbox = JSON.parse(
          ok(await f.run(["sandbox", "get", name, "-o", "json"]), "get").stdout,
        );
        const child = f.spawn(["sandbox", "connect", name]);
        const stdin = child.stdin.getWriter();
        const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
        let out = "";
        let token = "";
        try {
          await stdin.write(new TextEncoder().encode("echo connected\n"));
          while (!out.includes("connected\n")) {
            const { value, done } = await reader.read();
            if (done) break;
            out += value;
          }
          assert.equal(out, "connected\n");
          // The session is up: its ssh-proxy holds the token in its environment.
          const proxies = [];
          for (const p of await findProcesses(sandbox.id)) {
            const args = dec.decode(
              await Deno.readFile(`/proc/${p.pid}/cmdline`).catch(() => new Uint8Array()),
            ).split("\0");
            if (args.includes("ssh-proxy")) proxies.push(p); // not ssh, whose -o holds the command
          }
          assert.equal(proxies.length, 1, JSON.stringify(proxies));
          const environ = dec.decode(await Deno.readFile(`/proc/${proxies[0].pid}/environ`));
          token = environ.split("\0").find((v) => v.startsWith("OPENSHELL_SSH_TOKEN="))
            ?.slice("OPENSHELL_SSH_TOKEN=".length) ?? "";
          assert.ok(token.length >= 16, "ssh-proxy got the token from its environment");
          const leaks: string[] = [];
          let scanned = 0;
          for await (const e of Deno.readDir("/proc")) {
            if (!/^\d+$/.test(e.name)) continue;
            const argv = await Deno.readFile(`/proc/${e.name}/cmdline`).catch(() => undefined);
            if (!argv) continue;
            scanned++;
            if (dec.decode(argv).includes(token)) leaks.push(`${e.name}: ${dec.decode(argv)}`);
          }
          assert.ok(scanned > 3, "read the argv of every process");
          assert.deepEqual(leaks, [], "no process has the token in its argv");
          await stdin.write(new TextEncoder().encode("exit 3\n"));
          await stdin.close();
        } finally {
          await stdin.close().catch(() => {});
          for (let r = await reader.read(); !r.done; r = await reader.read()) out += r.value;
        }
        const status = await child.status;
        const err = await new Response(child.stderr).text();
        assert.equal(status.code, 3, err);
        // ssh has exited: the CLI revoked the token.
        const reuse = await f.run([
          "ssh-proxy",
          "--gateway",
          `${f.url}/connect/ssh`,
          "--sandbox-id",
          sandbox.id,
          ...gatewayName,
        ], { env: { OPENSHELL_SSH_TOKEN: token } });
        assert.equal(reuse.code, 1);
        assert.equal(
          reuse.stderr,
          "error: the gateway refused the SSH session token: it is unknown, expired or revoked " +
            "(token revoked)\n",
        );
      },
    );

    await sandboxStep("logs: prints the sandbox's log lines, as text or JSON", async () => {
      const r = ok(await f.run(["sandbox", "logs", name]), "logs");
      const lines = r.stdout.trim().split("\n");
      assert.ok(lines.length >= 1, "the gateway logged at least the creation");
      for (const l of lines) assert.match(l, /^\d{4}-\d\d-\d\dT\S+Z \w+ +\[\w+\] /);
      const json = ok(await f.run(["sandbox", "logs", name, "-o", "json", "--lines", "1"]), "json");
      const parsed = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.equal(parsed.length, 1);
      assert.equal(typeof parsed[0].message, "string");
      // The filters reach the gateway: its lines here are INFO lines of source gateway.
      const all = ok(
        await f.run([
          "sandbox",
          "logs",
          name,
          "--since",
          "1h",
          "--level",
          "info",
          "--source",
          "gateway",
        ]),
        "logs filtered",
      );
      assert.equal(all.stdout, r.stdout);
      for (
        const filter of [["--level", "warn"], ["--source", "console"], [
          "--since",
          "2100-01-01T00:00:00Z",
        ]]
      ) {
        const none = ok(await f.run(["sandbox", "logs", name, ...filter]), filter.join(" "));
        assert.equal(none.stdout, "", filter.join(" "));
      }
    });

    await sandboxStep(
      "logs --follow prints lines as they come and ends cleanly on Ctrl-C",
      async () => {
        const child = f.spawn(["sandbox", "logs", name, "--follow"], { stdin: "null" });
        const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const first = await reader.read();
        assert.match(first.value ?? "", /\[\w+\] /, "the tail arrives through the watch");
        child.kill("SIGINT");
        while (!(await reader.read()).done) { /* drain */ }
        const status = await child.status;
        const err = await new Response(child.stderr).text();
        assert.equal(status.code, 0, err);
      },
    );

    await sandboxStep("ssh-proxy: a bad token is refused with a clear message", async () => {
      const json = JSON.parse(
        ok(await f.run(["sandbox", "get", name, "-o", "json"]), "get").stdout,
      );
      const r = await f.run([
        "ssh-proxy",
        "--gateway",
        `${f.url}/connect/ssh`,
        "--sandbox-id",
        json.id,
        ...gatewayName,
      ], { env: { OPENSHELL_SSH_TOKEN: "not-a-token" } });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: the gateway refused the SSH session token/m);
      const argv = await f.run([
        "ssh-proxy",
        "--gateway",
        `${f.url}/connect/ssh`,
        "--sandbox-id",
        json.id,
        "--token",
        "not-a-token",
      ]);
      assert.equal(argv.code, 2);
      assert.match(
        argv.stderr,
        /^error: --token is not accepted on the command line, where every user can read it \(ps\): set OPENSHELL_SSH_TOKEN instead/,
      );
    });

    await step("a sandbox that never gets ready: --timeout, exec refused, Ctrl-C", async () => {
      const bare = ["--gateway-endpoint", f.bareUrl];
      const slow = await f.run([...bare, "sandbox", "create", "--name", "slow", "--", "true"], {
        env: { OPENSHELL_PROVISION_TIMEOUT: "1" },
      });
      assert.equal(slow.code, 1);
      assert.equal(
        slow.stderr.split("\n").at(-2),
        `error: sandbox "slow" is not ready after 1 s (Provisioning); it is kept: see ` +
          "'openshell sandbox logs slow', delete it with 'openshell sandbox delete slow'",
      );
      slowMade = true;
      const notYet = `error: sandbox "slow" is not ready yet (Provisioning): see ` +
        "'openshell sandbox logs slow'\n";
      const notReady = await f.run([...bare, "sandbox", "exec", "slow", "--", "true"]);
      assert.deepEqual([notReady.code, notReady.stderr], [1, notYet]);
      const noSsh = await f.run([...bare, "sandbox", "connect", "slow"]);
      assert.deepEqual([noSsh.code, noSsh.stderr], [1, notYet]);

      const child = f.spawn([
        ...bare,
        "sandbox",
        "create",
        "--name",
        "gone",
        "--no-keep",
        "--",
        "true",
      ], {
        stdin: "null",
      });
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let err = "";
      while (!err.includes("Created sandbox:")) {
        const { value, done } = await reader.read();
        if (done) break;
        err += value;
      }
      child.kill("SIGINT");
      for (let r = await reader.read(); !r.done; r = await reader.read()) err += r.value;
      const status = await child.status;
      await child.stdout.cancel();
      assert.equal(status.code, 130, err);
      assert.match(err, /^Cancelled\.$/m);
      assert.match(err, /^Deleted sandbox gone$/m);
      const names = ok(await f.run([...bare, "sandbox", "list", "--names"]), "list");
      assert.equal(names.stdout, "slow\n");
    });

    await step(
      "sandbox credentials: a bring-your-own supervisor makes a sandbox READY",
      async () => {
        const bare = ["--gateway-endpoint", f.bareUrl];
        const out = `${tmp}/byo-creds`;
        const r = ok(
          await f.run([...bare, "sandbox", "credentials", "slow", "--out", out]),
          "credentials",
        );
        const token = (await Deno.readTextFile(`${out}/token`)).trim();
        assert.match(token, /^[A-Za-z0-9_-]{43}$/);
        assert.ok(
          !r.stdout.includes(token) && !r.stderr.includes(token),
          "the token is never printed",
        );
        assert.equal((await Deno.stat(out)).mode! & 0o777, 0o700);
        assert.equal((await Deno.stat(`${out}/token`)).mode! & 0o777, 0o600);
        const hasCa = await Deno.stat(`${out}/ca.crt`).then(() => true, () => false);
        assert.equal(hasCa, https, "the supervisor plane's CA is written for a TLS gateway only");
        const words = r.stdout.trim().split(" ");
        assert.equal(words[0], "openshell-sandbox");
        const endpoint = words[words.indexOf("--openshell-endpoint") + 1];
        const id = words[words.indexOf("--sandbox-id") + 1];
        assert.equal(endpoint, f.bare.supervisorEndpoint);
        const supervisor = await startSupervisor({
          endpoint,
          sandboxId: id,
          args: [
            "--supervisor-token-file",
            `${out}/token`,
            "--ssh-host-key",
            `${out}/ssh_host_key`,
            ...(hasCa ? ["--tls-ca", `${out}/ca.crt`] : []),
          ],
          readFiles: [`${out}/token`, `${out}/ssh_host_key`, ...(hasCa ? [`${out}/ca.crt`] : [])],
          writeFiles: [`${out}/ssh_host_key`],
        });
        try {
          await waitFor("slow to become READY", async () => {
            const g = await f.run([...bare, "sandbox", "get", "slow", "-o", "json"]);
            return g.code === 0 && JSON.parse(g.stdout).phase === "SANDBOX_PHASE_READY";
          }, { timeoutMs: 20_000, intervalMs: 100 });
          const e = ok(
            await f.run([...bare, "sandbox", "exec", "slow", "--", "echo", "byo-ok"]),
            "exec",
          );
          assert.equal(e.stdout, "byo-ok\n");
        } finally {
          await supervisor.close();
        }
        // Issuing again invalidates the token the supervisor had.
        ok(await f.run([...bare, "sandbox", "credentials", "slow", "--out", out]), "re-issue");
        assert.notEqual((await Deno.readTextFile(`${out}/token`)).trim(), token);
      },
      slowMade ? undefined : "the never-ready step made no sandbox slow",
    );

    if (!https) {
      await step("https:// against this plaintext gateway says to use http://", async () => {
        const wrong = `https://127.0.0.1:${f.gateway.port}`;
        const r = await f.run(["--gateway-endpoint", wrong, "sandbox", "list"]);
        assert.deepEqual([r.code, r.stdout, r.stderr], [
          1,
          "",
          `error: the gateway at ${wrong} does not speak TLS (use an http:// URL for a ` +
          "plaintext gateway)\n",
        ]);
      });
    }

    if (https) {
      await sandboxStep(
        "https: no client certificate, a foreign CA, an expired certificate: one line each, exit 1",
        async () => {
          const pki = f.pki!;
          const url = f.url;
          const sandbox = JSON.parse(
            ok(await f.run(["sandbox", "get", name, "-o", "json"]), "get").stdout,
          );
          const session = await f.api.call(f.api.raw.CreateSshSession, {
            sandbox_id: sandbox.id,
          });
          /** The same request through gRPC (sandbox list) and through ssh-proxy's CONNECT. */
          const bothPaths = async (gateway: string, line: string) => {
            const list = await f.run(["-g", gateway, "sandbox", "list"]);
            assert.deepEqual([list.code, list.stderr], [1, `error: ${line}\n`], "sandbox list");
            const proxy = await f.run([
              "ssh-proxy",
              "--gateway",
              `${url}/connect/ssh`,
              "--sandbox-id",
              sandbox.id,
              "--gateway-name",
              gateway,
            ], { env: { OPENSHELL_SSH_TOKEN: session.token } });
            assert.deepEqual([proxy.code, proxy.stderr], [1, `error: ${line}\n`], "ssh-proxy");
          };
          const fix = (gateway: string) =>
            `openshell gateway add ${gateway} ${url} --mtls-dir DIR --force, DIR being the ` +
            "gateway's <state-dir>/pki)";

          // Unauthenticated: the CA only, no client certificate.
          ok(await f.run(["gateway", "add", "nocert", url, "--ca", pki.bundle.ca]), "add nocert");
          const noCert = `the gateway at ${url} closed the TLS connection: it may require a ` +
            "client certificate, and none is configured (import the gateway's client bundle: " +
            fix("nocert");
          await bothPaths("nocert", noCert);
          const status = await f.run(["-g", "nocert", "status"]);
          assert.equal(status.code, 1);
          assert.match(
            status.stdout,
            new RegExp(`^Status: +Disconnected: ${escape(noCert)}$`, "m"),
          );

          // Another gateway's bundle: its CA does not sign this gateway's certificate.
          ok(
            await f.run(["gateway", "add", "foreign", url, "--mtls-dir", pki.foreign.dir]),
            "add foreign",
          );
          await bothPaths(
            "foreign",
            `the gateway at ${url} presented a certificate that the trusted CA did not sign ` +
              `(import the gateway's current client bundle: ${fix("foreign")}`,
          );
          // A client certificate from a CA the gateway does not trust (the CLI trusts both).
          const both = `${tmp}/both-cas.crt`;
          await Deno.writeTextFile(
            both,
            (await Deno.readTextFile(pki.bundle.ca)) + (await Deno.readTextFile(pki.foreign.ca)),
          );
          ok(
            await f.run([
              "gateway",
              "add",
              "mixed",
              url,
              "--ca",
              both,
              "--cert",
              pki.foreign.cert,
              "--key",
              pki.foreign.key,
            ]),
            "add mixed",
          );
          await bothPaths(
            "mixed",
            `the gateway at ${url} closed the TLS connection: it may not accept this client's ` +
              `certificate (import the gateway's current client bundle: ${fix("mixed")}`,
          );

          // Expired: refused when imported, and before any connection once it expires.
          const expiredCert = await Deno.readTextFile(pki.expired.cert);
          const expiredOn = certificateInfo(expiredCert).notAfter.toISOString();
          const add = await f.run(["gateway", "add", "old", url, "--mtls-dir", pki.expired.dir]);
          assert.deepEqual([add.code, add.stderr], [
            1,
            `error: client certificate ${pki.expired.dir}/client.crt expired on ${expiredOn}: ` +
            "use the ca.crt, client.crt and client.key of one gateway's current <state-dir>/pki " +
            "(a gateway renews its client bundle at start)\n",
          ]);
          ok(await f.run(["gateway", "add", "old", url, ...f.addArgs]), "add old");
          const stored = `${f.configHome}/openshell/gateways/old/mtls`;
          await Deno.writeTextFile(`${stored}/tls.crt`, expiredCert);
          await Deno.writeTextFile(`${stored}/tls.key`, await Deno.readTextFile(pki.expired.key));
          await bothPaths(
            "old",
            `client certificate ${stored}/tls.crt expired on ${expiredOn}: import the gateway's ` +
              `current client bundle: ${fix("old").slice(0, -1)}`,
          );
          await f.api.call(f.api.raw.RevokeSshSession, { token: session.token });
          // They all share the gateway's URL: forget them so later runs match "main" again.
          for (const gateway of ["nocert", "foreign", "mixed", "old"]) {
            ok(await f.run(["gateway", "remove", gateway]), `remove ${gateway}`);
          }
        },
      );

      await step(
        "https: the wrong scheme says which one to use, with no raw TLS error",
        async () => {
          // A plaintext HTTP server (answers the TLS ClientHello with an HTTP error at once).
          const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
          const port = (listener.addr as Deno.NetAddr).port;
          const answering = (async () => {
            for await (const conn of listener) {
              await conn.read(new Uint8Array(4096)).catch(() => null);
              await conn.write(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"))
                .catch(() => 0);
              conn.close();
            }
          })();
          try {
            const plain = `https://127.0.0.1:${port}`;
            const notTls = `the gateway at ${plain} does not speak TLS (use an http:// URL for a ` +
              "plaintext gateway)";
            const gateways = [{ host: "127.0.0.1", port }];
            const status = await f.run(["--gateway-endpoint", plain, "status"], { gateways });
            assert.equal(status.code, 1);
            assert.match(
              status.stdout,
              new RegExp(`^Status: +Disconnected: ${escape(notTls)}$`, "m"),
            );
            const proxy = await f.run(
              ["ssh-proxy", "--gateway", `${plain}/connect/ssh`, "--sandbox-id", "x"],
              { gateways, env: { OPENSHELL_SSH_TOKEN: "t".repeat(20) } },
            );
            assert.deepEqual([proxy.code, proxy.stderr], [1, `error: ${notTls}\n`]);
            for (const text of [status.stdout, status.stderr, proxy.stderr]) {
              assert.doesNotMatch(text, /ERR_INVALID_ARG_VALUE|servername/);
            }
          } finally {
            listener.close();
            await answering.catch(() => {});
          }
          const http = `http://127.0.0.1:${f.gateway.port}`;
          const list = await f.run(["--gateway-endpoint", http, "sandbox", "list"]);
          assert.deepEqual([list.code, list.stderr], [
            1,
            `error: the gateway at ${http} closed the connection before HTTP/2 started: if it ` +
            "serves TLS (its default), use an https:// URL and import its client bundle " +
            `(openshell gateway add NAME ${f.url} --mtls-dir DIR, DIR being the gateway's ` +
            "<state-dir>/pki)\n",
          ]);
          const proxy = await f.run(
            ["ssh-proxy", "--gateway", `${http}/connect/ssh`, "--sandbox-id", "x"],
            { env: { OPENSHELL_SSH_TOKEN: "t".repeat(20) } },
          );
          assert.deepEqual([proxy.code, proxy.stderr], [
            1,
            "error: the gateway answered in TLS: use an https:// URL for it\n",
          ]);
        },
      );
    }

    await sandboxStep("delete: by name, unknown name, --all", async () => {
      const r = ok(await f.run(["sandbox", "delete", name]), "delete");
      assert.equal(r.stdout, `Deleted sandbox ${name}\n`);
      assert.deepEqual(await knownHosts(f), [], "its host key left known_hosts");
      const again = await f.run(["sandbox", "delete", name]);
      assert.deepEqual([again.code, again.stdout, again.stderr], [
        1,
        "",
        `error: sandbox "${name}" not found\n`,
      ]);
      ok(await f.run(["sandbox", "create", "--name", "other", "--", "true"]), "create");
      assert.equal((await knownHosts(f)).length, 1);
      const page = ok(
        await f.run(["sandbox", "list", "--names", "--limit", "1", "--offset", "0"]),
        "list --limit",
      );
      assert.equal(page.stdout.trim().split("\n").length, 1, "one page of one");
      const all = ok(await f.run(["sandbox", "delete", "--all"]), "delete --all");
      assert.match(all.stdout, /^Deleted sandbox other$/m);
      assert.deepEqual(await sandboxNames(f), []);
      assert.deepEqual(await knownHosts(f), [], "delete --all forgot its host key too");
    });

    await step("a registered gateway is used when no endpoint is given", async () => {
      const env = { OPENSHELL_GATEWAY_ENDPOINT: "" };
      ok(await f.run(["gateway", "add", "local", f.url, ...f.addArgs], { env }), "gateway add");
      ok(await f.run(["gateway", "select", "local"], { env }), "gateway select");
      const r = ok(await f.run(["status"], { env }), "status");
      assert.match(r.stdout, /^Gateway: +local$/m);
      assert.match(r.stdout, /^Status: +Connected$/m);
    });
  } finally {
    if (failed) {
      const tail = (text: string) => text.split("\n").slice(-40).join("\n");
      console.error(`--- gateway log (tail) ---\n${tail(f.gateway.stderr())}`);
    }
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await f.close();
  }
}
