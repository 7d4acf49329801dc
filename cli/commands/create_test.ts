import assert from "node:assert/strict";
import type { Sandbox, SandboxLogLine, SandboxStreamEvent } from "../../core/protocol.ts";
import { Code } from "../../core/status.ts";
import { type GatewayClient, GatewayError, type ServerStream } from "../client.ts";
import { parseGatewayUrl } from "../config.ts";
import { Context, type StdStreams } from "../context.ts";
import { CliError } from "../errors.ts";
import { COMMANDS, parseCommandArgs, UsageError } from "../args.ts";
import { resourcesTemplate, sandboxCreateCommand, waitUntilReady } from "./create.ts";
import { fromStruct } from "../../core/resources.ts";

function sandbox(phase: Sandbox["phase"], reason = "", message = ""): Sandbox {
  return {
    id: "sb-1",
    name: "dev",
    namespace: "",
    spec: null,
    status: reason
      ? {
        sandbox_name: "dev",
        agent_pod: "",
        agent_fd: "",
        sandbox_fd: "",
        conditions: [{ type: "Ready", status: "False", reason, message, last_transition_time: "" }],
      }
      : null,
    phase,
    created_at_ms: 0,
    current_policy_version: 0,
  };
}

function log(message: string): SandboxLogLine {
  return {
    sandbox_id: "sb-1",
    timestamp_ms: 0,
    level: "ERROR",
    target: "",
    message,
    source: "console",
    fields: {},
  };
}

/** A watch that yields `events`, then waits (like a live stream) until cancelled. */
function stream(events: SandboxStreamEvent[], end = false): ServerStream<SandboxStreamEvent> {
  let cancel!: () => void;
  const cancelled = new Promise<void>((r) => cancel = r);
  async function* gen() {
    for (const e of events) yield e;
    if (!end) await cancelled;
  }
  return { [Symbol.asyncIterator]: () => gen(), cancel: () => cancel() };
}

function fixture(
  events: SandboxStreamEvent[],
  options: { logs?: SandboxLogLine[]; end?: boolean; args?: string[]; create?: () => never } = {},
) {
  let stderr = "";
  const streams: StdStreams = {
    stdin: { read: () => Promise.resolve(null), isTerminal: () => false },
    stdout: { write: (p) => Promise.resolve(p.length), isTerminal: () => false },
    stderr: {
      writeSync: (p) => {
        stderr += new TextDecoder().decode(p);
        return p.length;
      },
      isTerminal: () => false,
    },
  };
  const fake = {
    watchSandbox: () => stream(events, options.end),
    getSandboxLogs: () => Promise.resolve({ logs: options.logs ?? [], buffer_total: 0 }),
    getSandbox: () => Promise.reject(new CliError("gone")),
    createSandbox: () => Promise.resolve().then(options.create),
  };
  const spec = COMMANDS.find((c) => c.id === "sandbox create")!;
  const ctx = new Context({
    invocation: parseCommandArgs(spec, options.args ?? []),
    env: () => undefined,
    streams,
    gateway: { endpoint: parseGatewayUrl("http://127.0.0.1:1"), key: "k", source: "flag" },
    client: fake as unknown as GatewayClient,
  });
  return { ctx, stderr: () => stderr };
}

Deno.test("create follows phases until READY", async () => {
  const f = fixture([
    {
      payload: "sandbox",
      sandbox: sandbox("SANDBOX_PHASE_PROVISIONING", "Starting", "VM is starting"),
    },
    {
      payload: "event",
      event: {
        timestamp_ms: 0,
        source: "vm",
        type: "Normal",
        reason: "Pulled",
        message: "image ready",
        metadata: {},
      },
    },
    { payload: "sandbox", sandbox: sandbox("SANDBOX_PHASE_READY") },
  ]);
  const ready = await waitUntilReady(f.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), {
    timeoutS: 30,
  });
  assert.equal(ready.phase, "SANDBOX_PHASE_READY");
  const lines = f.stderr().trim().split("\n");
  assert.match(lines[0], /^\[ +\d+\.\ds\] Provisioning$/);
  assert.match(lines[1], /^\[ +\d+\.\ds\] Provisioning \(Starting: VM is starting\)$/);
  assert.match(lines[2], /^\[ +\d+\.\ds\] Normal: Pulled: image ready$/);
  assert.match(lines[3], /^Sandbox dev is ready \(\d+\.\ds\)$/);
});

Deno.test("create fails on ERROR with the reason and the log tail", async () => {
  const f = fixture(
    [
      { payload: "log", log: log("from the watch") },
      {
        payload: "sandbox",
        sandbox: sandbox("SANDBOX_PHASE_ERROR", "ProcessExited", "VM process exited with status 1"),
      },
    ],
    { logs: [log("kernel panic"), log("the end")] },
  );
  await assert.rejects(
    waitUntilReady(f.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), { timeoutS: 30 }),
    (e) => {
      assert.ok(e instanceof CliError);
      assert.equal(
        e.message,
        `sandbox "dev" failed (ProcessExited: VM process exited with status 1); it is kept: ` +
          "see 'openshell sandbox logs dev', delete it with 'openshell sandbox delete dev'",
      );
      return true;
    },
  );
  assert.match(f.stderr(), /^Last 2 log lines of dev:$/m);
  assert.match(f.stderr(), /^ {2}\S+ ERROR \[console\] kernel panic$/m);
});

Deno.test("create gives up after the timeout and on Ctrl-C", async () => {
  const slow = fixture([{ payload: "sandbox", sandbox: sandbox("SANDBOX_PHASE_PROVISIONING") }]);
  await assert.rejects(
    waitUntilReady(slow.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), { timeoutS: 0.05 }),
    (e) => {
      assert.ok(e instanceof CliError);
      assert.equal(
        e.message,
        `sandbox "dev" is not ready after 0.05 s (Provisioning); it is kept: ` +
          "see 'openshell sandbox logs dev', delete it with 'openshell sandbox delete dev'",
      );
      return true;
    },
  );
  // With --no-keep it is deleted (create says so on its own line): nothing to point at.
  const gone = fixture([{ payload: "sandbox", sandbox: sandbox("SANDBOX_PHASE_PROVISIONING") }]);
  await assert.rejects(
    waitUntilReady(gone.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), {
      timeoutS: 0.05,
      keep: false,
    }),
    (e) =>
      e instanceof CliError &&
      e.message === `sandbox "dev" is not ready after 0.05 s (Provisioning)`,
  );
  const stopped = fixture([{ payload: "sandbox", sandbox: sandbox("SANDBOX_PHASE_PROVISIONING") }]);
  const waiting = waitUntilReady(stopped.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), {
    timeoutS: 30,
  });
  stopped.ctx.raiseInterrupt();
  await assert.rejects(waiting, (e) => e instanceof CliError && e.exitCode === 130);
});

Deno.test("create reports a sandbox deleted while it provisions", async () => {
  const f = fixture([{ payload: "sandbox", sandbox: sandbox("SANDBOX_PHASE_PROVISIONING") }], {
    end: true,
  });
  await assert.rejects(
    waitUntilReady(f.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), { timeoutS: 30 }),
    /: sandbox "dev" was deleted while provisioning$/,
  );
  const d = fixture([{ payload: "sandbox", sandbox: sandbox("SANDBOX_PHASE_DELETING") }]);
  await assert.rejects(
    waitUntilReady(d.ctx, sandbox("SANDBOX_PHASE_PROVISIONING"), { timeoutS: 30 }),
    /: sandbox "dev" is being deleted$/,
  );
});

Deno.test("create: --cpus, --memory and --disk-gib become upstream's resource limits", () => {
  const spec = COMMANDS.find((c) => c.id === "sandbox create")!;
  const inv = parseCommandArgs(spec, ["--cpus", "2", "--memory", "2Gi", "--disk-gib", "20"]);
  const t = resourcesTemplate({
    cpus: inv.values.cpus as string,
    memory: inv.values.memory as string,
    diskGib: inv.values["disk-gib"] as number,
  });
  assert.deepEqual(fromStruct(t?.resources), {
    limits: { cpu: "2", memory: "2Gi", "ephemeral-storage": "20Gi" },
  });
  assert.deepEqual(fromStruct(resourcesTemplate({ cpus: "1500m" })?.resources), {
    limits: { cpu: "1500m" },
  });
  assert.equal(resourcesTemplate({}), undefined, "nothing asked: no template at all");
});

Deno.test("create: a malformed size is a usage error naming the flag", () => {
  const cases: [Parameters<typeof resourcesTemplate>[0], RegExp][] = [
    [{ cpus: "two" }, /^--cpus must be a number of CPUs \(2, 0\.5\) or millicores \(500m\)/],
    [{ cpus: "0" }, /^--cpus must be more than zero/],
    [{ memory: "2GB" }, /^--memory must be a size such as 2Gi, 512Mi or 2G, not "2GB"$/],
  ];
  for (const [flags, re] of cases) {
    assert.throws(() => resourcesTemplate(flags), (e: unknown) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("create with a name that is taken: one line that says what to do", async () => {
  const f = fixture([], {
    args: ["--name", "dev", "--", "true"],
    create: () => {
      throw new GatewayError(
        { code: Code.ALREADY_EXISTS, details: 'sandbox "dev" already exists' },
        parseGatewayUrl("http://127.0.0.1:1"),
      );
    },
  });
  await assert.rejects(sandboxCreateCommand(f.ctx), (e) => {
    assert.ok(e instanceof CliError);
    assert.equal(
      e.message,
      `sandbox "dev" already exists: pick another --name, or delete it with ` +
        "'openshell sandbox delete dev'",
    );
    assert.equal(e.exitCode, 1);
    return true;
  });
});
