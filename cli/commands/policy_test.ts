import assert from "node:assert/strict";
import net from "node:net";
import { cliGrants } from "../../core/grants.ts";
import { roleCommand } from "../../core/launcher.ts";
import { waitFor } from "../../core/testing.ts";
import { apiClient, spawnGateway } from "../../testing/gateway.ts";
import { cleanEnv } from "../../testing/supervisor.ts";
import { parseCommandLine } from "../args.ts";
import { createStyle } from "../output.ts";
import { revisionDetails, statusLabel } from "./policy.ts";

Deno.test("policy: the commands' arguments", () => {
  const set = parseCommandLine([
    "policy",
    "set",
    "dev",
    "--allow",
    "a.example",
    "--allow",
    "b.example:80",
    "--preset",
    "pypi",
    "--wait",
  ]);
  assert.ok(set.kind === "run");
  assert.deepEqual(set.invocation.values.allow, ["a.example", "b.example:80"]);
  assert.deepEqual(set.invocation.values.preset, ["pypi"]);
  assert.equal(set.invocation.values.wait, true);
  assert.throws(() => parseCommandLine(["policy", "set"]), /missing NAME/);
  assert.throws(() => parseCommandLine(["policy", "get"]), /missing NAME/);
  assert.throws(() => parseCommandLine(["policy", "list", "a", "b"]), /unexpected argument "b"/);
  const get = parseCommandLine(["policy", "get", "dev", "--version", "2", "--full"]);
  assert.ok(get.kind === "run" && get.invocation.values.full === true);
  const create = parseCommandLine([
    "sandbox",
    "create",
    "--policy",
    "p.yaml",
    "--allow",
    "x",
    "--",
    "true",
  ]);
  assert.ok(create.kind === "run" && create.invocation.values.policy === "p.yaml");
  const help = parseCommandLine(["policy", "--help"]);
  assert.ok(help.kind === "help" && /set .*Replace a sandbox's network policy/.test(help.text));
});

Deno.test("policy get: a revision reads naturally", () => {
  assert.equal(statusLabel("POLICY_STATUS_LOADED"), "Loaded");
  assert.equal(statusLabel("POLICY_STATUS_SUPERSEDED"), "Superseded");
  const text = revisionDetails(
    {
      version: 2,
      policy_hash: "ab".repeat(32),
      status: "POLICY_STATUS_FAILED",
      load_error: "bad\x1b[31m rule",
      created_at_ms: 1_000,
      loaded_at_ms: 0,
      policy: {
        version: 0,
        filesystem: null,
        landlock: null,
        process: null,
        network_policies: {
          a: { name: "", endpoints: [], binaries: [] },
          b: { name: "", endpoints: [], binaries: [] },
        },
      },
    },
    1,
    61_000,
    createStyle(false),
  );
  assert.match(text, /^Version: +2\n/);
  assert.match(text, /^Status: +Failed$/m);
  assert.match(text, /^Created: +1970-01-01T00:00:01\.000Z \(1m ago\)$/m);
  assert.match(text, /^Loaded: +-$/m);
  assert.match(text, /^Enforced: +version 1$/m);
  assert.match(text, /^Error: +bad rule$/m, "controls stripped");
  assert.match(text, /^Rules: +2$/m);
});

const dec = new TextDecoder();

Deno.test("policy set --wait, get, list and create --policy against a gateway with its egress proxy", async () => {
  const gw = await spawnGateway({ egress: true });
  const api = apiClient(gw.port);
  const home = await Deno.makeTempDir({ prefix: "oscli-pol-" });
  const cli = async (args: string[]) => {
    const [exe, ...rest] = roleCommand(
      "cli",
      cliGrants({ gateways: [{ host: "127.0.0.1", port: gw.port }] }),
      args,
    );
    const out = await new Deno.Command(exe, {
      args: rest,
      clearEnv: true,
      env: cleanEnv({ XDG_CONFIG_HOME: home, OPENSHELL_GATEWAY_ENDPOINT: gw.endpoint }),
      stdin: "null",
    }).output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  try {
    await Deno.writeTextFile(
      `${home}/policy.yaml`,
      "network_policies:\n  api:\n    endpoints:\n      - host: api.example.com\n        port: 443\n",
    );
    await Deno.writeTextFile(
      `${home}/bad.yaml`,
      "network_policies:\n  api:\n    endpoints:\n      - hots: api.example.com\n        port: 443\n",
    );

    // create --policy/--preset/--allow: the spec carries them (the sandbox never gets
    // ready without a driver, so create gives up after a second and keeps it).
    const created = await cli([
      "sandbox",
      "create",
      "--name",
      "dev",
      "--timeout",
      "1",
      "--policy",
      `${home}/policy.yaml`,
      "--preset",
      "pypi",
      "--allow",
      "mirror.example:8080",
      "--",
      "true",
    ]);
    assert.equal(created.code, 1, created.stderr);
    const sandbox = (await api.call(api.raw.GetSandbox, { name: "dev" })).sandbox!;
    assert.deepEqual(Object.keys(sandbox.spec?.policy?.network_policies ?? {}).sort(), [
      "allow",
      "api",
      "pypi",
    ]);
    await waitFor(
      "version 1 loaded",
      async () =>
        (await api.call(api.raw.GetSandboxPolicyStatus, {
          name: "dev",
          version: 1,
        })).revision?.status === "POLICY_STATUS_LOADED",
    );

    // A bad file: one line naming file:line:col and the YAML path; nothing created.
    const bad = await cli(["sandbox", "create", "--name", "bad", "--policy", `${home}/bad.yaml`]);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /^error: .*bad\.yaml:4:9: network_policies\.api\.endpoints\[0\]\.hots: unknown key/m,
    );
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
    await assert.rejects(api.call(api.raw.GetSandbox, { name: "bad" }));

    // policy set --wait: a new version, loaded by the proxy.
    const set = await cli(["policy", "set", "dev", "--allow", "example.com", "--wait"]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(
      set.stderr,
      /Policy version 2 set for sandbox dev \(1 rules, sha256 [0-9a-f]{12}\)/,
    );
    assert.match(set.stderr, /Policy version 2 is loaded/);

    // Bad input is refused before anything is sent.
    const usage = await cli(["policy", "set", "dev", "--allow", "example.com:https"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--allow example\.com:https: the port must be a number/);
    const none = await cli(["policy", "set", "dev"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /policy set needs --policy FILE, --preset NAME or --allow/);
    const badFile = await cli(["policy", "set", "dev", "--policy", `${home}/bad.yaml`]);
    assert.equal(badFile.code, 1);
    assert.match(badFile.stderr, /hots: unknown key/);
    const unknown = await cli(["policy", "set", "nope", "--preset", "npm"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /sandbox "nope" not found/);

    // get: the latest by default, --full adds the YAML, -o json a given version.
    const got = await cli(["policy", "get", "dev", "--full"]);
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /^Version: +2 \(enforced now\)$/m);
    assert.match(got.stdout, /^Status: +Loaded$/m);
    assert.match(
      got.stdout,
      /network_policies:\n {2}allow:\n {4}endpoints:\n {6}- host: example\.com\n {8}port: 443\n/,
    );
    const v1 = await cli(["policy", "get", "dev", "--version", "1", "-o", "json"]);
    assert.equal(v1.code, 0, v1.stderr);
    const json = JSON.parse(v1.stdout);
    assert.equal(json.revision.version, 1);
    assert.equal(json.active_version, 2);
    assert.equal(json.revision.policy, undefined, "the policy only with --full");
    const missing = await cli(["policy", "get", "dev", "--version", "9"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no policy version 9 \(the latest is 2\)/);

    // list: newest first.
    const list = await cli(["policy", "list", "dev"]);
    assert.equal(list.code, 0, list.stderr);
    const rows = list.stdout.trim().split("\n");
    assert.match(rows[0], /^VERSION +STATUS +HASH +CREATED +LOADED +ERROR$/);
    assert.match(rows[1], /^2 +Loaded /);
    assert.match(rows[2], /^1 +Loaded /);

    // A denied connection shows in `sandbox logs --source egress --since 10m`.
    await new Promise<void>((resolve, reject) => {
      const c = net.createConnection(`${gw.stateDir}/egress/guest.sock`);
      c.on("connect", () =>
        c.write(
          `OPENSHELL-EGRESS/1 ${sandbox.id} http\nCONNECT denied.example:443 HTTP/1.1\r\n\r\n`,
        ));
      c.on("data", () => c.end());
      c.on("error", reject);
      c.on("close", () => resolve());
    });
    const logs = await waitFor("the egress line in sandbox logs", async () => {
      const r = await cli(["sandbox", "logs", "dev", "--source", "egress", "--since", "10m"]);
      return r.code === 0 && r.stdout.includes("denied.example") ? r : undefined;
    }, { timeoutMs: 15_000 });
    assert.ok(
      logs.stdout.trim().split("\n").every((l) => l.includes("[egress]")),
      logs.stdout,
    );
  } catch (err) {
    console.error(gw.stderr());
    throw err;
  } finally {
    api.close();
    await gw.stop();
    await Deno.remove(home, { recursive: true });
  }
});
