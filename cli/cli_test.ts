/**
 * The CLI against a real gateway whose sandboxes are served by host
 * supervisors (OpenSSH sshd as the `sandbox` user), with the CLI running
 * under its shipped grants.
 */
import assert from "node:assert/strict";
import { shellJoin } from "../core/shell.ts";
import { type CliFixture, type CliResult, startCliFixture } from "./testing.ts";

const dec = new TextDecoder();

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stderr}`);
  return r;
}

/** Polls `probe` until it returns a value, for things that raise no event. */
async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function sandboxNames(f: CliFixture): Promise<string[]> {
  const res = await f.api.call<{ sandboxes: { name: string }[] }>("ListSandboxes", {
    limit: 100, // the largest page the gateway serves
    offset: 0,
  });
  return res.sandboxes.map((s) => s.name);
}

async function runCmd(cmd: string, args: string[], stdin?: string): Promise<CliResult> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("openshell CLI against a gateway with host supervisors", async (t) => {
  const f = await startCliFixture();
  const tmp = await Deno.makeTempDir({ prefix: "oscli-test-" });
  let failed = false;
  const step = async (name: string, fn: () => Promise<void>) => {
    if (!(await t.step(name, fn))) failed = true;
  };
  try {
    await step("status: Connected with the server version", async () => {
      const r = ok(await f.run(["status"]), "status");
      assert.match(r.stdout, new RegExp(`^Server: +${f.gateway.endpoint}$`, "m"));
      assert.match(r.stdout, /^Version: +\d+\.\d+\.\d+/m);
      assert.match(r.stdout, /^Status: +Connected$/m);
    });

    await step("status: Disconnected and exit 1 when the gateway does not answer", async () => {
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const r = await f.run(["--gateway-endpoint", `http://127.0.0.1:${port}`, "status"], {
        gateways: [{ host: "127.0.0.1", port }],
      });
      assert.equal(r.code, 1);
      assert.match(
        r.stdout,
        /^Status: +Disconnected: cannot reach the gateway at .*: connection refused$/m,
      );
    });

    let name = "";
    await step("create -- echo ok: prints ok, exit 0, sandbox kept", async () => {
      const r = ok(await f.run(["sandbox", "create", "--", "echo", "ok"]), "create");
      assert.equal(r.stdout, "ok\n");
      const m = r.stderr.match(/^Created sandbox: (\S+)$/m);
      assert.ok(m, r.stderr);
      name = m[1];
      assert.match(r.stderr, /is ready \(\d+\.\ds\)/);
      assert.ok((await sandboxNames(f)).includes(name));
    });

    await step("create --no-keep -- sh -c 'exit 7': exit 7, sandbox deleted", async () => {
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

    await step("list: table, names, ids, json", async () => {
      const table = ok(await f.run(["sandbox", "list"]), "list");
      assert.match(table.stdout, /^NAME +ID +PHASE +AGE$/m);
      assert.match(table.stdout, new RegExp(`^${name} +\\S+ +Ready +\\d+[smhd]$`, "m"));
      const names = ok(await f.run(["sandbox", "list", "--names"]), "list --names");
      assert.deepEqual(names.stdout.trim().split("\n"), [name]);
      const json = JSON.parse(ok(await f.run(["sandbox", "list", "-o", "json"]), "json").stdout);
      assert.equal(json[0].name, name);
      assert.equal(json[0].phase, "SANDBOX_PHASE_READY");
      const ids = ok(await f.run(["sandbox", "list", "--ids"]), "list --ids");
      assert.equal(ids.stdout, `${json[0].id}\n`);
    });

    await step("get: text, json, the last sandbox by default, unknown name", async () => {
      const text = ok(await f.run(["sandbox", "get", name]), "get");
      assert.match(text.stdout, new RegExp(`^Name: +${name}$`, "m"));
      assert.match(text.stdout, /^Phase: +Ready$/m);
      const last = ok(await f.run(["sandbox", "get", "-o", "json"]), "get (last)");
      assert.equal(JSON.parse(last.stdout).name, name, "create remembered the sandbox");
      const missing = await f.run(["sandbox", "get", "nope"]);
      assert.equal(missing.code, 1);
      assert.equal(missing.stderr, 'error: sandbox "nope" not found\n');
    });

    await step("exec: split output, exit code, stdin, workdir, env", async () => {
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
    });

    await step("ssh-config works with plain ssh and scp (both ways)", async () => {
      const cfg = ok(await f.run(["sandbox", "ssh-config", name]), "ssh-config");
      assert.match(cfg.stdout, new RegExp(`^Host openshell-${name}$`, "m"));
      assert.match(cfg.stdout, /^ {4}StrictHostKeyChecking accept-new$/m);
      assert.match(cfg.stdout, /^ {4}ServerAliveInterval 15$/m);
      const file = `${tmp}/ssh_config`;
      await Deno.writeTextFile(file, cfg.stdout);
      const base = ["-F", file, "-o", "BatchMode=yes"];
      const sshRun = await runCmd("ssh", [...base, `openshell-${name}`, "echo hello; whoami"]);
      assert.equal(sshRun.code, 0, sshRun.stderr);
      assert.equal(sshRun.stdout, "hello\nsandbox\n");
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

    await step("ssh-proxy pins the host key the gateway reported", async () => {
      const sandbox = JSON.parse(
        ok(await f.run(["sandbox", "get", name, "-o", "json"]), "get").stdout,
      );
      const session = await f.api.call<{ token: string; host_key_fingerprint: string }>(
        "CreateSshSession",
        { sandbox_id: sandbox.id },
      );
      assert.match(session.host_key_fingerprint, /^SHA256:/, "the host driver provisions the key");
      const proxy = (fp: string) =>
        shellJoin(f.argv([
          "ssh-proxy",
          "--gateway",
          `${f.gateway.endpoint}/connect/ssh`,
          "--sandbox-id",
          sandbox.id,
          "--token",
          session.token,
          "--host-key-fingerprint",
          fp,
          "--config-dir",
          `${f.configHome}/openshell`,
        ]));
      const sshVia = (fp: string) =>
        runCmd("ssh", [
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
        ]);
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

    await step("connect in tmux: prompt, command, resize, exit", async () => {
      const socket = `oscli-${crypto.randomUUID().slice(0, 8)}`;
      const tmux = (...args: string[]) => runCmd("tmux", ["-L", socket, ...args]);
      const command = shellJoin([
        "env",
        `XDG_CONFIG_HOME=${f.configHome}`,
        `OPENSHELL_GATEWAY_ENDPOINT=${f.gateway.endpoint}`,
        ...f.argv(["sandbox", "connect", name]),
      ]) + "; echo EXIT=$?; sleep 60";
      ok(await tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command), "tmux");
      const screen = async () => (await tmux("capture-pane", "-p", "-t", "t")).stdout;
      let last = "";
      const seen = (pattern: RegExp) =>
        waitFor(`${pattern} on screen`, async () => {
          last = await screen();
          return pattern.test(last) ? true : undefined;
        }).catch((e) => {
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

    await step("logs: prints the sandbox's log lines, as text or JSON", async () => {
      const r = ok(await f.run(["sandbox", "logs", name]), "logs");
      const lines = r.stdout.trim().split("\n");
      assert.ok(lines.length >= 1, "the gateway logged at least the creation");
      for (const l of lines) assert.match(l, /^\d{4}-\d\d-\d\dT\S+Z \w+ +\[\w+\] /);
      const json = ok(await f.run(["sandbox", "logs", name, "-o", "json", "--lines", "1"]), "json");
      const parsed = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.equal(parsed.length, 1);
      assert.equal(typeof parsed[0].message, "string");
    });

    await step("logs --follow prints lines as they come and ends cleanly on Ctrl-C", async () => {
      const child = f.spawn(["sandbox", "logs", name, "--follow"], { stdin: "null" });
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await reader.read();
      assert.match(first.value ?? "", /\[\w+\] /, "the tail arrives through the watch");
      child.kill("SIGINT");
      while (!(await reader.read()).done) { /* drain */ }
      const status = await child.status;
      const err = await new Response(child.stderr).text();
      assert.equal(status.code, 0, err);
    });

    await step("ssh-proxy: a bad token is refused with a clear message", async () => {
      const json = JSON.parse(
        ok(await f.run(["sandbox", "get", name, "-o", "json"]), "get").stdout,
      );
      const r = await f.run([
        "ssh-proxy",
        "--gateway",
        `${f.gateway.endpoint}/connect/ssh`,
        "--sandbox-id",
        json.id,
        "--token",
        "not-a-token",
      ]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: the gateway refused the SSH session token/m);
    });

    await step("a sandbox that never gets ready: --timeout, exec refused, Ctrl-C", async () => {
      const bare = ["--gateway-endpoint", f.bare.endpoint];
      const slow = await f.run([...bare, "sandbox", "create", "--name", "slow", "--", "true"], {
        env: { OPENSHELL_PROVISION_TIMEOUT: "1" },
      });
      assert.equal(slow.code, 1);
      assert.match(
        slow.stderr,
        /^error: sandbox slow is not ready after 1 s \(phase: Provisioning\)$/m,
      );
      const notReady = await f.run([...bare, "sandbox", "exec", "slow", "--", "true"]);
      assert.equal(notReady.code, 1);
      assert.match(notReady.stderr, /^error: sandbox "slow" is not ready/m);
      const noSsh = await f.run([...bare, "sandbox", "connect", "slow"]);
      assert.equal(noSsh.code, 1);
      assert.match(noSsh.stderr, /^error: sandbox "slow" is not ready \(Provisioning\)$/m);

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

    await step("delete: by name, unknown name, --all", async () => {
      const r = ok(await f.run(["sandbox", "delete", name]), "delete");
      assert.equal(r.stdout, `Deleted sandbox ${name}\n`);
      const again = await f.run(["sandbox", "delete", name]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, new RegExp(`Sandbox ${name} not found`));
      ok(await f.run(["sandbox", "create", "--name", "other", "--", "true"]), "create");
      const page = ok(
        await f.run(["sandbox", "list", "--names", "--limit", "1", "--offset", "0"]),
        "list --limit",
      );
      assert.equal(page.stdout.trim().split("\n").length, 1, "one page of one");
      const all = ok(await f.run(["sandbox", "delete", "--all"]), "delete --all");
      assert.match(all.stdout, /^Deleted sandbox other$/m);
      assert.deepEqual(await sandboxNames(f), []);
    });

    await step("a registered gateway is used when no endpoint is given", async () => {
      const env = { OPENSHELL_GATEWAY_ENDPOINT: "" };
      ok(await f.run(["gateway", "add", "local", f.gateway.endpoint], { env }), "gateway add");
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
});
