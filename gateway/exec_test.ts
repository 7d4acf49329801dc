/**
 * ExecSandbox end to end: a real gateway, a real supervisor with OpenSSH's
 * sshd behind its Unix socket, both under their exact grants.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type * as grpc from "@grpc/grpc-js";
import type { ExecSandboxEvent, ExecSandboxRequest, Wire } from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { waitFor } from "../core/testing.ts";
import { startSupervisor } from "../testing/supervisor.ts";
import { exitCodeOf } from "./exec.ts";
import { type ApiClient, apiClient, byoSupervisor, spawnGateway } from "../testing/gateway.ts";

interface ExecResult {
  stdout: string;
  stderr: string;
  exit?: number;
}

function exec(api: ApiClient, request: Wire<ExecSandboxRequest>): Promise<ExecResult> {
  const call = api.raw.ExecSandbox(request);
  const out: ExecResult = { stdout: "", stderr: "" };
  return new Promise((resolve, reject) => {
    call.on("data", (e: ExecSandboxEvent) => {
      if (e.payload === "stdout") out.stdout += Buffer.from(e.stdout.data).toString();
      if (e.payload === "stderr") out.stderr += Buffer.from(e.stderr.data).toString();
      if (e.payload === "exit") out.exit = e.exit.exit_code;
    });
    call.on("end", () => resolve(out));
    call.on("error", reject);
  });
}

Deno.test("ExecSandbox runs commands through the sandbox's sshd", async (t) => {
  const gw = await spawnGateway();
  const api = apiClient(gw.port);
  const byo = await byoSupervisor(gw, "exec");
  const sandbox = byo.sandbox;
  const sup = await startSupervisor({
    endpoint: gw.supervisorEndpoint,
    sandboxId: sandbox.id,
    token: byo.token,
    hostKey: byo.hostKey.privateKey,
    environment: { SANDBOX_GREETING: "set at create" },
  });
  try {
    await sup.waitForEvent((e) => e.activity_name === "Open" && /session/.test(e.message));
    const id = sandbox.id;
    // The supervisor reported its host key at hello: that is the key exec pins.
    const ssh = await api.call(api.raw.CreateSshSession, {
      sandbox_id: id,
    });
    assert.equal(ssh.host_key_fingerprint, byo.hostKey.fingerprint);

    await t.step("echo prints and exits 0", async () => {
      const r = await exec(api, { sandbox_id: id, command: ["echo", "hello world"] });
      assert.deepEqual(r, { stdout: "hello world\n", stderr: "", exit: 0 });
    });
    await t.step("stderr and a non-zero exit code come back separately", async () => {
      const r = await exec(api, {
        sandbox_id: id,
        command: ["sh", "-c", "echo out; echo err >&2; exit 3"],
      });
      assert.deepEqual(r, { stdout: "out\n", stderr: "err\n", exit: 3 });
    });
    await t.step("stdin is delivered and closed", async () => {
      const r = await exec(api, {
        sandbox_id: id,
        command: ["sh", "-c", "tr a-z A-Z; echo done"],
        stdin: Buffer.from("shout\n"),
      });
      assert.equal(r.stdout, "SHOUT\ndone\n");
      assert.equal(r.exit, 0);
    });
    await t.step("workdir and environment apply; the user is sandbox", async () => {
      const r = await exec(api, {
        sandbox_id: id,
        command: ["sh", "-c", 'echo "$(pwd) $GREETING $(id -un)"'],
        workdir: "/tmp",
        environment: { GREETING: "it's me" },
      });
      assert.equal(r.stdout, "/tmp it's me sandbox\n");
    });
    await t.step("the sandbox's environment reaches every command", async () => {
      const r = await exec(api, {
        sandbox_id: id,
        command: ["sh", "-c", "echo $SANDBOX_GREETING"],
      });
      assert.equal(r.stdout, "set at create\n");
    });
    await t.step("timeout_seconds ends a long command with exit 124", async () => {
      const r = await exec(api, { sandbox_id: id, command: ["sleep", "30"], timeout_seconds: 1 });
      assert.equal(r.exit, 124);
    });
    await t.step(
      "the supervisor logs every finished exec's relay as a Close, none as a Fail",
      async () => {
        const relays = () => sup.events().filter((e) => /^relay /.test(e.message));
        const closes = () => relays().filter((e) => e.activity_name === "Close").length;
        // Every exec so far opened one relay; the gateway tore each down when it finished.
        const opened = relays().filter((e) => e.activity_name === "Open").length;
        assert.ok(opened >= 6, `${opened} relays opened`);
        await waitFor("a Close for every relay", () => closes() === opened);
        assert.deepEqual(relays().filter((e) => e.activity_name === "Fail"), []);
        assert.ok(relays().every((e) => e.status === "Success"));
      },
    );
    await t.step("a PTY is allocated on request", async () => {
      const r = await exec(api, { sandbox_id: id, command: ["tty"], tty: true });
      assert.match(r.stdout, /^\/dev\/pts\/\d+/);
      assert.equal(r.exit, 0);
    });
    await t.step("bad requests are INVALID_ARGUMENT or NOT_FOUND", async () => {
      await assert.rejects(
        exec(api, { sandbox_id: id, command: [] }),
        (e: grpc.ServiceError) =>
          e.code === Code.INVALID_ARGUMENT && /command is required/.test(e.details),
      );
      await assert.rejects(
        exec(api, { sandbox_id: id, command: ["echo", "a\nb"] }),
        (e: grpc.ServiceError) =>
          e.code === Code.INVALID_ARGUMENT && /command\[1\]/.test(e.details),
      );
      await assert.rejects(
        exec(api, { sandbox_id: id, command: ["true"], environment: { "BAD-KEY": "x" } }),
        (e: grpc.ServiceError) => e.code === Code.INVALID_ARGUMENT && /BAD-KEY/.test(e.details),
      );
      await assert.rejects(
        exec(api, { sandbox_id: "no-such", command: ["true"] }),
        (e: grpc.ServiceError) => e.code === Code.NOT_FOUND,
      );
    });
  } finally {
    await sup.close();
    api.close();
    await gw.stop();
  }
});

Deno.test("ExecSandbox is FAILED_PRECONDITION when not READY or the host key is unknown", async () => {
  const gw = await spawnGateway();
  const api = apiClient(gw.port);
  try {
    const byo = await byoSupervisor(gw, "cold");
    const sb = byo.sandbox;
    await assert.rejects(
      exec(api, { sandbox_id: sb.id, command: ["true"] }),
      (e: grpc.ServiceError) => e.code === Code.FAILED_PRECONDITION && /not ready/.test(e.details),
    );
    // READY through a supervisor that reported no host key: nothing to pin, so no exec.
    const sup = byo.connect({ hostKeyFingerprint: "" });
    await sup.accepted;
    const phase = async () => (await api.call(api.raw.GetSandbox, { name: "cold" })).sandbox!.phase;
    await waitFor("READY", async () => (await phase()) === "SANDBOX_PHASE_READY");
    await assert.rejects(
      exec(api, { sandbox_id: sb.id, command: ["true"] }),
      (e: grpc.ServiceError) =>
        e.code === Code.FAILED_PRECONDITION && /host key .* is not known yet/.test(e.details),
    );
    await assert.rejects(
      api.call(api.raw.CreateSshSession, { sandbox_id: sb.id }),
      (e: grpc.ServiceError) => e.code === Code.FAILED_PRECONDITION,
    );
    sup.close();
  } finally {
    api.close();
    await gw.stop();
  }
});

Deno.test("a burst of 64 execs on one sandbox: 32 relays in flight, 32 RESOURCE_EXHAUSTED", async () => {
  const gw = await spawnGateway();
  const api = apiClient(gw.port);
  try {
    const byo = await byoSupervisor(gw, "burst");
    const sb = byo.sandbox;
    // A supervisor that never answers relay_open keeps every granted relay in flight.
    let opens = 0;
    let allOpened!: () => void;
    const opened = new Promise<void>((r) => allOpened = r);
    const sup = byo.connect({
      ignoreRelays: true,
      onMessage: (m) => m.payload === "relay_open" && ++opens === 32 && allOpened(),
    });
    await sup.accepted;
    let exhausted = 0;
    let allExhausted!: () => void;
    const rejected = new Promise<void>((r) => allExhausted = r);
    const calls = Array.from(
      { length: 64 },
      () => api.raw.ExecSandbox({ sandbox_id: sb.id, command: ["true"] }),
    );
    const codes = calls.map((call) =>
      new Promise<number>((resolve) => {
        call.on("data", () => {});
        call.on("end", () => resolve(0));
        call.on("error", (e: grpc.ServiceError) => {
          if (e.code === Code.RESOURCE_EXHAUSTED && ++exhausted === 32) allExhausted();
          resolve(e.code);
        });
      })
    );
    await Promise.all([opened, rejected]);
    for (const c of calls) c.cancel();
    const final = await Promise.all(codes);
    assert.equal(final.filter((c) => c === Code.RESOURCE_EXHAUSTED).length, 32);
    assert.equal(final.filter((c) => c === Code.CANCELLED).length, 32);
    assert.equal(opens, 32);
    sup.close();
  } finally {
    api.close();
    await gw.stop();
  }
});

Deno.test("exitCodeOf maps codes and signals", () => {
  assert.equal(exitCodeOf(0), 0);
  assert.equal(exitCodeOf(7), 7);
  assert.equal(exitCodeOf(null, "KILL"), 137);
  assert.equal(exitCodeOf(undefined, "SIGTERM"), 143);
  assert.equal(exitCodeOf(undefined), 1);
});
