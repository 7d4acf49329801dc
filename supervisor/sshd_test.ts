import assert from "node:assert/strict";
import { Logger } from "../core/log.ts";
import { waitFor } from "../core/testing.ts";
import { generateHostKey } from "../core/ssh_keys.ts";
import {
  clearStaleSocket,
  prepareSocketDir,
  SshdServer,
  SshdSetupError,
  writeSshdFiles,
} from "./sshd.ts";
import { ensureSandboxUser, ssh, TEST_SSHD, unixRoute } from "../testing/supervisor.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "osup-t-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function mode(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o777;
}

const isRoot = Deno.uid() === 0;

/** A socket file nobody listens on, as a killed process leaves it behind. */
async function leaveDeadSocket(path: string): Promise<void> {
  const code = `Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} }); Deno.exit(0);`;
  const out = await new Deno.Command(Deno.execPath(), { args: ["eval", code] }).output();
  assert.ok(out.success);
}

Deno.test("socket dir: created 0700, an existing one is tightened to 0700", async () => {
  await withTempDir(async (tmp) => {
    const dir = `${tmp}/run`;
    await prepareSocketDir(dir);
    assert.equal(mode(dir), 0o700);
    await Deno.chmod(dir, 0o755);
    await prepareSocketDir(dir);
    assert.equal(mode(dir), 0o700);
    assert.deepEqual([...Deno.readDirSync(dir)], [], "the ownership probe leaves nothing behind");
  });
});

Deno.test("socket dir: a symlink, a file and a missing parent are refused", async () => {
  await withTempDir(async (tmp) => {
    await Deno.mkdir(`${tmp}/real`, { mode: 0o700 });
    await Deno.symlink(`${tmp}/real`, `${tmp}/link`);
    await assert.rejects(prepareSocketDir(`${tmp}/link`), SshdSetupError, "is a symlink");
    await Deno.writeTextFile(`${tmp}/file`, "");
    await assert.rejects(prepareSocketDir(`${tmp}/file`), /exists and is not a directory/);
    await assert.rejects(prepareSocketDir(`${tmp}/no/such`), /its parent is missing/);
  });
});

Deno.test({
  name: "socket dir: a foreign owner is refused (root only: it gives the dir away)",
  ignore: !isRoot,
  fn: () =>
    withTempDir(async (tmp) => {
      await Deno.mkdir(`${tmp}/foreign`, { mode: 0o700 });
      await Deno.chown(`${tmp}/foreign`, 65534, 65534);
      await assert.rejects(prepareSocketDir(`${tmp}/foreign`), /owned by uid 65534.*refusing/);
    }),
});

Deno.test("stale socket: removed; a live socket and a non-socket are refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ssh.sock`;
    await clearStaleSocket(path); // nothing there: fine
    await leaveDeadSocket(path);
    assert.ok(Deno.lstatSync(path).isSocket);
    await clearStaleSocket(path);
    assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);

    const live = Deno.listen({ transport: "unix", path });
    const accepted = live.accept().then((c) => c.close());
    await assert.rejects(clearStaleSocket(path), /in use by a running process/);
    await accepted;
    live.close(); // Deno unlinks the socket file on close

    await Deno.writeTextFile(path, "not a socket");
    await assert.rejects(clearStaleSocket(path), /is not a socket; refusing/);
  });
});

Deno.test("host key: written 0600 with the config; a non-OpenSSH key is refused", async () => {
  await withTempDir(async (dir) => {
    const key = generateHostKey();
    const files = await writeSshdFiles(dir, { hostKey: key.privateKey });
    assert.equal(files.fingerprint, key.fingerprint);
    assert.equal(mode(files.hostKeyPath), 0o600);
    assert.equal(mode(files.configPath), 0o600);
    assert.equal(await Deno.readTextFile(files.hostKeyPath), key.privateKey);
    await assert.rejects(
      writeSshdFiles(dir, { hostKey: "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n" }),
      /host key is not an OpenSSH private key/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["ssh_host_key", "sshd_config"],
      "nothing half-written is left",
    );
  });
});

Deno.test("sshd server: socket 0600, one sshd -i per connection, closed cleanly", async () => {
  await ensureSandboxUser();
  await withTempDir(async (tmp) => {
    const dir = `${tmp}/run`;
    await prepareSocketDir(dir);
    const files = await writeSshdFiles(dir, { hostKey: generateHostKey().privateKey });
    const socketPath = `${dir}/ssh.sock`;
    const lines: string[] = [];
    const server = await SshdServer.listen({
      socketPath,
      sshd: TEST_SSHD,
      configPath: files.configPath,
      logger: new Logger({ sink: (l) => lines.push(l) }),
    });
    try {
      assert.equal(mode(socketPath), 0o600);
      assert.equal(mode(dir), 0o700);
      const route = unixRoute(socketPath);
      const [a, b] = await Promise.all([
        ssh(route, "echo one; exit 7"),
        ssh(route, "id -un; printf '%s' \"$SSH_CONNECTION\" | wc -c"),
      ]);
      assert.equal(a.code, 7, a.stderr);
      assert.equal(a.stdout, "one\n");
      assert.equal(b.code, 0, b.stderr);
      assert.match(b.stdout, /^sandbox\n/);
      assert.equal(server.accepted, 2);
      assert.ok(lines.some((l) => l.includes("Accepted none for sandbox")), lines.join("\n"));
    } finally {
      await server.close();
    }
    assert.equal(server.active, 0);
    assert.throws(() => Deno.lstatSync(socketPath), Deno.errors.NotFound, "socket removed");
  });
});

Deno.test("sshd server: beyond its cap a connection is closed without starting sshd", async () => {
  await withTempDir(async (tmp) => {
    // A stand-in for `sshd -i`: echoes its stdin until EOF.
    const fake = `${tmp}/fake-sshd`;
    await Deno.writeTextFile(fake, "#!/bin/sh\nexec cat\n", { mode: 0o700 });
    const dir = `${tmp}/run`;
    await prepareSocketDir(dir);
    const socketPath = `${dir}/ssh.sock`;
    const server = await SshdServer.listen({
      socketPath,
      sshd: fake,
      configPath: `${dir}/unused`,
      logger: new Logger({ sink: () => {} }),
      maxProcesses: 2,
    });
    const conns: Deno.UnixConn[] = [];
    const connect = async () => {
      const c = await Deno.connect({ transport: "unix", path: socketPath });
      conns.push(c);
      return c;
    };
    /** Writes `text` and reads the echo, or null when the server closed the connection. */
    const echo = async (c: Deno.UnixConn, text: string): Promise<string | null> => {
      await c.write(new TextEncoder().encode(text)).catch(() => {});
      const buf = new Uint8Array(64);
      const n = await c.read(buf).catch(() => null);
      return n === null ? null : new TextDecoder().decode(buf.subarray(0, n));
    };
    try {
      const a = await connect();
      const b = await connect();
      assert.equal(await echo(a, "a"), "a");
      assert.equal(await echo(b, "b"), "b");
      for (let i = 0; i < 20; i++) {
        assert.equal(await echo(await connect(), "x"), null, "refused connection is closed");
      }
      assert.equal(server.refused, 20);
      assert.equal(server.active, 2);
      // One sshd exits (its client went away): the next connection is served.
      await a.closeWrite();
      await waitFor("a slot to free up", () => server.active === 1);
      assert.equal(await echo(await connect(), "c"), "c");
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed already
        }
      }
      await server.close();
    }
  });
});
