import assert from "node:assert/strict";
import net from "node:net";
import { waitFor } from "../core/testing.ts";
import {
  BoundedLines,
  MAX_PENDING_COMMANDS,
  MAX_QMP_LINE_BYTES,
  POWERDOWN_COMMANDS,
  qmpBindPath,
  QmpChannels,
  QmpConnection,
  QmpError,
} from "./qmp.ts";
import { memoryLogger } from "./testing.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("qmp: lines split across chunks; a line past the cap is dropped whole", () => {
  const l = new BoundedLines(8);
  assert.deepEqual(l.push(enc("ab")), []);
  assert.deepEqual(l.push(enc("c\nde\nf")), ["abc", "de"]);
  assert.deepEqual(l.push(enc("0123456789")), [], "over the cap: skipped, nothing kept");
  assert.deepEqual(l.push(enc("xyz\nok\n")), ["ok"]);
  assert.equal(l.dropped, 1);
  assert.deepEqual(l.push(enc("12345678\n")), ["12345678"], "exactly the cap is kept");
});

/** A fake qemu on the other end of a socket pair: the test writes what qemu would. */
async function pair(): Promise<
  { qemu: net.Socket; client: QmpConnection; sent: () => string[]; close(): Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "qmpt" });
  const path = `${dir}/q.sock`;
  let qemu!: net.Socket;
  const accepted = new Promise<void>((resolve) => {
    const server = net.createServer((s) => {
      qemu = s;
      server.close();
      resolve();
    });
    server.listen(path);
  });
  const socket = net.connect(path);
  await accepted;
  const client = new QmpConnection(socket, 200);
  const received: string[] = [];
  let rest = "";
  qemu.on("data", (d: Uint8Array) => {
    rest += new TextDecoder().decode(d);
    let i;
    while ((i = rest.indexOf("\n")) >= 0) {
      received.push(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  });
  qemu.on("error", () => {});
  return {
    qemu,
    client,
    sent: () => received,
    async close() {
      client.close();
      qemu.destroy();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function answerEach(
  p: { qemu: net.Socket; sent: () => string[] },
  answer: (cmd: { execute: string; id?: string }) => object | undefined,
): void {
  let seen = 0;
  const tick = setInterval(() => {
    for (; seen < p.sent().length; seen++) {
      const cmd = JSON.parse(p.sent()[seen]);
      const a = answer(cmd);
      if (a) p.qemu.write(JSON.stringify({ ...a, ...(cmd.id ? { id: cmd.id } : {}) }) + "\n");
    }
  }, 5);
  p.qemu.on("close", () => clearInterval(tick));
}

Deno.test("qmp: greeting, capabilities, then commands answered by id; errors are QmpError", async () => {
  const p = await pair();
  try {
    answerEach(
      p,
      (c) =>
        c.execute === "qmp_capabilities"
          ? { return: {} }
          : c.execute === "query-status"
          ? { return: { status: "running" } }
          : {
            error: {
              class: "CommandNotFound",
              desc: `The command ${c.execute} has not been found`,
            },
          },
    );
    const pending = p.client.command("query-status");
    p.qemu.write('{"QMP": {"version": {}, "capabilities": []}}\n');
    // an event and junk in between are skipped
    p.qemu.write('{"event": "RTC_CHANGE", "data": {}}\nnot json\n');
    assert.deepEqual(await pending, { status: "running" });
    assert.equal(JSON.parse(p.sent()[0]).execute, "qmp_capabilities", "negotiated first");
    await assert.rejects(p.client.command("nope"), (e: unknown) => {
      assert.ok(e instanceof QmpError);
      assert.equal(e.errorClass, "CommandNotFound");
      return true;
    });
    assert.equal(p.client.events, 1);
  } finally {
    await p.close();
  }
});

Deno.test("qmp: no greeting or no answer times out; a closed monitor rejects what waits", async () => {
  const p = await pair();
  try {
    await assert.rejects(p.client.command("query-status"), /no QMP greeting within 200 ms/);
    answerEach(p, (c) => (c.execute === "qmp_capabilities" ? { return: {} } : undefined));
    p.qemu.write('{"QMP": {}}\n');
    await assert.rejects(p.client.command("query-status"), /did not answer query-status/);
    const waiting = p.client.command("query-status");
    p.qemu.destroy();
    await assert.rejects(waiting, /closed its monitor connection/);
  } finally {
    await p.close();
  }
});

Deno.test("qmp: a flood from qemu (huge lines, events, too many commands) stays bounded", async () => {
  const p = await pair();
  try {
    answerEach(p, (c) => (c.execute === "qmp_capabilities" ? { return: {} } : undefined));
    p.qemu.write('{"QMP": {}}\n');
    // 4 MiB without a newline, then many events: nothing of it is kept
    const big = "x".repeat(MAX_QMP_LINE_BYTES);
    for (let i = 0; i < 64; i++) p.qemu.write(big);
    p.qemu.write("\n" + '{"event":"X"}\n'.repeat(5000));
    await waitFor("the events", () => p.client.events === 5000 || undefined, { timeoutMs: 5000 });
    const many = Array.from(
      { length: MAX_PENDING_COMMANDS + 1 },
      () => p.client.command("query-status").catch((e: Error) => e.message),
    );
    const results = await Promise.all(many);
    assert.ok(
      results.some((r) => r === "too many QMP commands in flight"),
      "commands past the cap are refused",
    );
  } finally {
    await p.close();
  }
});

const QEMU = "/usr/bin/qemu-system-x86_64";
const haveQemu = await Deno.stat(QEMU).then(() => true, () => false);

Deno.test({
  name:
    "qmp: a real qemu connects to the channel once; the socket is gone after; powerdown is sent",
  ignore: !haveQemu,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "qmpq" });
    const { log } = memoryLogger();
    const channels = new QmpChannels({ stateDir: dir, log, commandTimeoutMs: 5000 });
    const ch = await channels.open("sb-1");
    assert.equal(ch.path, `${dir}/qmp/0.sock`);
    await assert.rejects(Deno.stat(qmpBindPath(dir)), Deno.errors.NotFound, "bind path renamed");
    const qemu = new Deno.Command(QEMU, {
      args: [
        "-machine",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-chardev",
        `socket,id=qmp,path=${ch.path}`,
        "-mon",
        "chardev=qmp,mode=control",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      // Once qemu is connected, nothing else can reach the monitor.
      await waitFor("qemu connected (socket removed)", async () => {
        try {
          await Deno.lstat(ch.path);
          return undefined;
        } catch {
          return true;
        }
      }, { timeoutMs: 10_000 });
      assert.equal(await ch.powerdown(), true, "qemu accepted the power-down requests");
      assert.deepEqual(POWERDOWN_COMMANDS.map((c) => c.execute), ["send-key", "system_powerdown"]);
      await ch.close();
    } finally {
      qemu.kill("SIGKILL");
      await qemu.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("qmp: a channel nobody connected to says so and closes cleanly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmpn" });
  try {
    const channels = new QmpChannels({
      stateDir: dir,
      log: memoryLogger().log,
      commandTimeoutMs: 50,
    });
    const a = await channels.open("a");
    const b = await channels.open("b");
    assert.notEqual(a.path, b.path);
    assert.equal(await a.powerdown(), false);
    await a.close();
    await b.close();
    await assert.rejects(Deno.stat(a.path), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(b.path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
