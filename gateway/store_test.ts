import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Sandbox, SandboxPolicy } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { MAX_POLICY_REVISIONS, MIGRATIONS, type SandboxRecord, SqliteStore } from "./store.ts";
import { hashToken } from "./tokens.ts";

function sandbox(id: string, name: string, created = 1): SandboxRecord {
  const s: Sandbox = {
    id,
    name,
    namespace: "default",
    spec: null,
    status: null,
    phase: "SANDBOX_PHASE_PROVISIONING",
    created_at_ms: created,
    current_policy_version: 0,
  };
  return { sandbox: s, secrets: { supervisorTokenHash: `hash-${id}` } };
}

Deno.test("sandboxes: create, get by id and name, list in creation order, count", async () => {
  const store = SqliteStore.open();
  try {
    await store.createSandbox(sandbox("b", "bravo", 2));
    await store.createSandbox(sandbox("a", "alpha", 1));
    assert.equal((await store.getSandbox("a"))?.sandbox.name, "alpha");
    assert.equal((await store.getSandboxByName("bravo"))?.sandbox.id, "b");
    assert.equal((await store.getSandbox("a"))?.secrets.supervisorTokenHash, "hash-a");
    assert.equal(await store.getSandbox("zzz"), undefined);
    assert.deepEqual(
      (await store.listSandboxes({ limit: 10, offset: 0 })).map((r) => r.sandbox.id),
      ["a", "b"],
    );
    assert.deepEqual(
      (await store.listSandboxes({ limit: 1, offset: 1 })).map((r) => r.sandbox.id),
      ["b"],
    );
    assert.equal(await store.countSandboxes(), 2);
  } finally {
    store.close();
  }
});

Deno.test("duplicate names and ids are ALREADY_EXISTS and change nothing", async () => {
  const store = SqliteStore.open();
  try {
    await store.createSandbox(sandbox("a", "alpha"));
    await assert.rejects(
      store.createSandbox(sandbox("b", "alpha")),
      (e: unknown) =>
        e instanceof StatusError && e.code === Code.ALREADY_EXISTS &&
        /"alpha" already exists/.test(e.message),
    );
    await assert.rejects(
      store.createSandbox(sandbox("a", "other")),
      (e: unknown) => e instanceof StatusError && e.code === Code.ALREADY_EXISTS,
    );
    assert.equal(await store.countSandboxes(), 1);
  } finally {
    store.close();
  }
});

Deno.test("updateSandbox is read-modify-write; a throwing change writes nothing", async () => {
  const store = SqliteStore.open();
  try {
    await store.createSandbox(sandbox("a", "alpha"));
    const updated = await store.updateSandbox("a", (r) => ({
      ...r,
      sandbox: { ...r.sandbox, phase: "SANDBOX_PHASE_READY" },
    }));
    assert.equal(updated?.sandbox.phase, "SANDBOX_PHASE_READY");
    assert.equal((await store.getSandbox("a"))?.sandbox.phase, "SANDBOX_PHASE_READY");
    await assert.rejects(
      store.updateSandbox("a", (r) => {
        r.sandbox.phase = "SANDBOX_PHASE_ERROR";
        throw new Error("changed my mind");
      }),
      /changed my mind/,
    );
    assert.equal((await store.getSandbox("a"))?.sandbox.phase, "SANDBOX_PHASE_READY");
    assert.equal(await store.updateSandbox("nope", (r) => r), undefined);
    const same = await store.updateSandbox("a", () => undefined);
    assert.equal(same?.sandbox.phase, "SANDBOX_PHASE_READY");
  } finally {
    store.close();
  }
});

Deno.test("ssh sessions: create, revoke, prune, and deleted with their sandbox", async () => {
  const store = SqliteStore.open();
  try {
    await store.createSandbox(sandbox("a", "alpha"));
    const base = { sandbox_id: "a", name: "abcdef", created_at_ms: 1, revoked: false };
    await store.createSshSession({ ...base, id: "t1", token: "t1", expires_at_ms: 0 });
    await store.createSshSession({ ...base, id: "t2", token: "t2", expires_at_ms: 100 });
    await store.createSshSession({ ...base, id: "t3", token: "t3", expires_at_ms: 10_000 });
    assert.equal((await store.getSshSession("t1"))?.sandbox_id, "a");
    assert.equal(await store.revokeSshSession("t3"), true);
    assert.equal(await store.revokeSshSession("nope"), false);
    assert.equal((await store.getSshSession("t3"))?.revoked, true);
    assert.equal(await store.pruneSshSessions(500), 2); // t2 expired, t3 revoked
    assert.ok(await store.getSshSession("t1"));
    await assert.rejects(
      store.createSshSession({
        ...base,
        sandbox_id: "ghost",
        id: "t9",
        token: "t9",
        expires_at_ms: 0,
      }),
      (e: unknown) => e instanceof StatusError && e.code === Code.NOT_FOUND,
    );
    assert.equal(await store.deleteSandbox("a"), true);
    assert.equal(await store.getSshSession("t1"), undefined);
    assert.equal(await store.deleteSandbox("a"), false);
  } finally {
    store.close();
  }
});

Deno.test("a file database uses WAL and keeps records across reopen", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/gw.db`;
  try {
    const first = SqliteStore.open({ path });
    await first.createSandbox(sandbox("a", "alpha"));
    assert.equal(first.schemaVersion(), MIGRATIONS.length);
    first.close();
    const second = SqliteStore.open({ path });
    assert.equal((await second.getSandbox("a"))?.sandbox.name, "alpha");
    second.close();
    const raw = new DatabaseSync(path);
    assert.equal(
      (raw.prepare("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode,
      "wal",
    );
    raw.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a database from a newer gateway is refused with a clear message", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/gw.db`;
  try {
    SqliteStore.open({ path }).close();
    const raw = new DatabaseSync(path);
    raw.prepare("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, 0)").run(99);
    raw.close();
    assert.throws(() => SqliteStore.open({ path }), /schema version 99 is newer/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a database file and its -wal/-shm are 0600, an existing file is narrowed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/gw.db`;
    await Deno.writeTextFile(path, "");
    await Deno.chmod(path, 0o644);
    const store = SqliteStore.open({ path });
    try {
      await store.createSandbox(sandbox("a", "alpha", 1));
      for (const f of [path, `${path}-wal`, `${path}-shm`]) {
        assert.equal((await Deno.stat(f)).mode! & 0o777, 0o600, f);
      }
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("schema 2 keeps no secret in plain text: tokens become hashes, host keys go", () => {
  const db = new DatabaseSync(":memory:");
  db.exec(MIGRATIONS[0] as string);
  db.prepare(
    "INSERT INTO sandboxes (id, name, created_at_ms, updated_at_ms, resource, secrets) VALUES (?, ?, 1, 1, '{}', ?)",
  ).run(
    "a",
    "alpha",
    JSON.stringify({ supervisorToken: "tok", sshHostKey: "KEY", hostKeyFingerprint: "SHA256:f" }),
  );
  db.prepare(
    "INSERT INTO ssh_sessions (token, sandbox_id, name, created_at_ms, expires_at_ms) VALUES (?, ?, 'n', 1, 0)",
  ).run("plain", "a");
  (MIGRATIONS[1] as (d: typeof db) => void)(db);
  const secrets = JSON.parse(
    (db.prepare("SELECT secrets FROM sandboxes").get() as { secrets: string }).secrets,
  );
  assert.deepEqual(secrets, {
    hostKeyFingerprint: "SHA256:f",
    supervisorTokenHash: hashToken("tok"),
  });
  const row = db.prepare("SELECT token FROM ssh_sessions").get() as { token: string };
  assert.equal(row.token, hashToken("plain"));
  db.close();
});

function policy(host: string): SandboxPolicy {
  return {
    version: 0,
    filesystem: null,
    landlock: null,
    process: null,
    network_policies: {
      r: {
        name: "r",
        endpoints: [{
          host,
          port: 443,
          protocol: "",
          tls: "",
          enforcement: "",
          access: "",
          rules: [],
          allowed_ips: [],
          ports: [],
          deny_rules: [],
          allow_encoded_slash: false,
        }],
        binaries: [],
      },
    },
  };
}

Deno.test("policy revisions: numbered per sandbox, newer PENDING supersedes older PENDING", async () => {
  const store = SqliteStore.open();
  try {
    await store.createSandbox(sandbox("a", "alpha"));
    await store.createSandbox(sandbox("b", "bravo"));
    const v1 = await store.addPolicyRevision("a", {
      hash: "h1",
      policy: policy("one.example"),
      createdAtMs: 10,
    });
    assert.equal(v1.version, 1);
    assert.equal(v1.status, "POLICY_STATUS_PENDING");
    assert.equal(
      (await store.addPolicyRevision("b", { hash: "x", policy: policy("b"), createdAtMs: 1 }))
        .version,
      1,
    );
    assert.equal(await store.markPolicyLoaded("a", 1, 20), true);
    assert.equal((await store.getSandbox("a"))?.sandbox.current_policy_version, 1);
    await store.addPolicyRevision("a", { hash: "h2", policy: policy("two"), createdAtMs: 30 });
    const v3 = await store.addPolicyRevision("a", {
      hash: "h3",
      policy: policy("three"),
      createdAtMs: 40,
    });
    assert.equal(v3.version, 3);
    const list = await store.listPolicyRevisions("a", { limit: 10, offset: 0 });
    assert.deepEqual(list.map((r) => [r.version, r.status]), [
      [3, "POLICY_STATUS_PENDING"],
      [2, "POLICY_STATUS_SUPERSEDED"],
      [1, "POLICY_STATUS_LOADED"],
    ]);
    assert.equal(list[2].loadedAtMs, 20);
    assert.equal(list[0].policy.network_policies?.r.endpoints?.[0].host, "three");
    assert.deepEqual(
      (await store.listPolicyRevisions("a", { limit: 1, offset: 1 })).map((r) => r.version),
      [2],
    );
    assert.equal((await store.getPolicyRevision("a", 0))?.version, 3);
    assert.equal((await store.getPolicyRevision("a", 2))?.hash, "h2");
    assert.equal(await store.getPolicyRevision("a", 9), undefined);
    // What the egress proxy should enforce: the newest PENDING or LOADED of each sandbox.
    assert.deepEqual(
      (await store.policiesToApply()).map((r) => [r.sandboxId, r.version]),
      [["a", 3], ["b", 1]],
    );
    // A refused version fails; the LOADED one is what is applied again.
    assert.equal(await store.markPolicyFailed("a", 3, "bad rule"), true);
    assert.equal((await store.getPolicyRevision("a", 3))?.loadError, "bad rule");
    assert.deepEqual(
      (await store.policiesToApply()).map((r) => [r.sandboxId, r.version]),
      [["a", 1], ["b", 1]],
    );
    // A FAILED revision stays FAILED; an older load never moves current_policy_version down.
    await store.markPolicyLoaded("a", 3, 50);
    assert.equal((await store.getPolicyRevision("a", 3))?.status, "POLICY_STATUS_FAILED");
    await store.markPolicyLoaded("a", 1, 60);
    assert.equal((await store.getSandbox("a"))?.sandbox.current_policy_version, 3);
    assert.equal((await store.getPolicyRevision("a", 1))?.loadedAtMs, 20);
    await assert.rejects(
      store.addPolicyRevision("zzz", { hash: "h", policy: policy("x"), createdAtMs: 1 }),
      (e: unknown) => e instanceof StatusError && e.code === Code.NOT_FOUND,
    );
    assert.equal(await store.markPolicyLoaded("zzz", 1, 1), false);
    // Deleting the sandbox deletes its revisions.
    await store.deleteSandbox("a");
    assert.equal(await store.getPolicyRevision("a", 0), undefined);
    assert.deepEqual((await store.policiesToApply()).map((r) => r.sandboxId), ["b"]);
  } finally {
    store.close();
  }
});

Deno.test("policy revisions: history is capped, the enforced version is kept", async () => {
  const store = SqliteStore.open();
  try {
    await store.createSandbox(sandbox("a", "alpha"));
    await store.addPolicyRevision("a", { hash: "h1", policy: policy("one"), createdAtMs: 1 });
    await store.markPolicyLoaded("a", 1, 2);
    const total = MAX_POLICY_REVISIONS + 20;
    for (let v = 2; v <= total; v++) {
      await store.addPolicyRevision("a", { hash: `h${v}`, policy: policy("p"), createdAtMs: v });
    }
    const all = await store.listPolicyRevisions("a", { limit: 1000, offset: 0 });
    assert.equal(all.length, MAX_POLICY_REVISIONS + 1);
    assert.equal(all[0].version, total);
    // v1 is enforced: kept although it is past the cap.
    assert.deepEqual(all.at(-1)?.version, 1);
    assert.equal(all.at(-2)?.version, total - MAX_POLICY_REVISIONS + 1);
  } finally {
    store.close();
  }
});

Deno.test("schema 3: a schema-2 database gains policy revisions, its sandboxes kept", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/gw.db`;
  try {
    const db = new DatabaseSync(path);
    db.exec(
      "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    );
    db.exec(MIGRATIONS[0] as string);
    (MIGRATIONS[1] as (d: typeof db) => void)(db);
    db.exec("INSERT INTO schema_migrations VALUES (1, 0), (2, 0)");
    db.prepare(
      "INSERT INTO sandboxes (id, name, created_at_ms, updated_at_ms, resource, secrets) VALUES (?, ?, 1, 1, ?, '{}')",
    ).run("a", "alpha", JSON.stringify(sandbox("a", "alpha").sandbox));
    db.close();
    const store = SqliteStore.open({ path });
    try {
      assert.equal(store.schemaVersion(), 3);
      assert.equal((await store.getSandbox("a"))?.sandbox.name, "alpha");
      assert.equal(
        (await store.addPolicyRevision("a", { hash: "h", policy: policy("x"), createdAtMs: 1 }))
          .version,
        1,
      );
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
