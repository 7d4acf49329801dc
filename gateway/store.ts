/**
 * Persistence of sandboxes, their policy revisions and SSH session tokens.
 *
 * {@link Store} is the interface every caller uses (asynchronous, so a
 * Postgres implementation can satisfy it); {@link SqliteStore} implements it
 * over the built-in `node:sqlite`: versioned migrations, WAL for files,
 * every write in one transaction.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import type { PolicyStatus, Sandbox, SandboxPolicy, SshSession, Wire } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { hashToken } from "./tokens.ts";

/**
 * Gateway-only data of a sandbox, never returned by the public API. No
 * secret is kept in plain text: the SSH host private key goes to the driver
 * at create time and is not stored; the supervisor token only as a hash.
 */
export interface SandboxSecrets {
  /** SHA-256 fingerprint of the sandbox's SSH host key (pinned by clients). */
  hostKeyFingerprint?: string;
  /** SHA-256 (hex) of the token the sandbox's supervisor must present. */
  supervisorTokenHash?: string;
}

/** A stored sandbox. */
export interface SandboxRecord {
  sandbox: Sandbox;
  secrets: SandboxSecrets;
}

/** Page of a list. */
export interface ListOptions {
  limit: number;
  offset: number;
}

/**
 * Policy revisions kept per sandbox: older ones are dropped as new ones
 * come (the one the egress proxy enforces is always kept).
 */
export const MAX_POLICY_REVISIONS = 100;

/** One stored version of a sandbox's egress policy. */
export interface PolicyRevisionRecord {
  sandboxId: string;
  /** Per sandbox, from 1. */
  version: number;
  /** Hex SHA-256 of the serialized policy. */
  hash: string;
  status: PolicyStatus;
  /** Why the egress proxy refused it (FAILED). */
  loadError: string;
  createdAtMs: number;
  /** When the egress proxy first enforced it; 0 = never. */
  loadedAtMs: number;
  policy: Wire<SandboxPolicy>;
}

/** A new revision: {@link Store.addPolicyRevision} numbers it. */
export interface NewPolicyRevision {
  hash: string;
  policy: Wire<SandboxPolicy>;
  createdAtMs: number;
}

/** What the gateway persists. All writes are atomic. */
export interface Store {
  /** Inserts a sandbox; ALREADY_EXISTS when its id or name is taken. */
  createSandbox(record: SandboxRecord): Promise<void>;
  /** The sandbox with `id`. */
  getSandbox(id: string): Promise<SandboxRecord | undefined>;
  /** The sandbox named `name`. */
  getSandboxByName(name: string): Promise<SandboxRecord | undefined>;
  /** Sandboxes ordered by creation time then name. */
  listSandboxes(options: ListOptions): Promise<SandboxRecord[]>;
  /** Number of sandboxes. */
  countSandboxes(): Promise<number>;
  /**
   * Reads the sandbox, lets `change` return its new state (or undefined for
   * "no change") and writes it, all in one transaction. Returns the stored
   * record, or undefined when the sandbox does not exist.
   */
  updateSandbox(
    id: string,
    change: (current: SandboxRecord) => SandboxRecord | undefined,
  ): Promise<SandboxRecord | undefined>;
  /** Deletes the sandbox, its SSH sessions and policy revisions; false when it did not exist. */
  deleteSandbox(id: string): Promise<boolean>;
  /**
   * Stores the next policy version of a sandbox as PENDING; older PENDING
   * versions become SUPERSEDED, and versions beyond
   * {@link MAX_POLICY_REVISIONS} are dropped. NOT_FOUND when the sandbox
   * does not exist.
   */
  addPolicyRevision(sandboxId: string, revision: NewPolicyRevision): Promise<PolicyRevisionRecord>;
  /** One revision; version 0 = the latest. */
  getPolicyRevision(sandboxId: string, version: number): Promise<PolicyRevisionRecord | undefined>;
  /** A sandbox's revisions, newest first. */
  listPolicyRevisions(sandboxId: string, options: ListOptions): Promise<PolicyRevisionRecord[]>;
  /**
   * The egress proxy enforces `version`: a PENDING revision becomes LOADED
   * (first load time kept), and the sandbox's `current_policy_version`
   * moves up to it. False when there is no such revision.
   */
  markPolicyLoaded(sandboxId: string, version: number, loadedAtMs: number): Promise<boolean>;
  /** The egress proxy refused `version`: a PENDING revision becomes FAILED with `error`. */
  markPolicyFailed(sandboxId: string, version: number, error: string): Promise<boolean>;
  /**
   * For every sandbox (or only `sandboxId`), the revision the egress proxy
   * should enforce: its newest PENDING or LOADED one.
   */
  policiesToApply(sandboxId?: string): Promise<PolicyRevisionRecord[]>;
  /** Stores an SSH session (its token only as a hash). */
  createSshSession(session: SshSession): Promise<void>;
  /** The SSH session for `token` (its `id`/`token` fields hold the hash). */
  getSshSession(token: string): Promise<SshSession | undefined>;
  /** Marks a token revoked; false when unknown. */
  revokeSshSession(token: string): Promise<boolean>;
  /** Deletes expired or revoked sessions; returns how many. */
  pruneSshSessions(nowMs: number): Promise<number>;
  /** Releases the database. */
  close(): void;
}

/** One schema migration: SQL, or a function for changes SQL cannot express. */
export type Migration = string | ((db: DatabaseSync) => void);

/**
 * Version 2: no secret in plain text. Supervisor tokens become hashes, SSH
 * host private keys are dropped (the driver holds them), SSH session tokens
 * are replaced by their hashes.
 */
function hashStoredSecrets(db: DatabaseSync): void {
  const rows = db.prepare("SELECT id, secrets FROM sandboxes").all() as {
    id: string;
    secrets: string;
  }[];
  const update = db.prepare("UPDATE sandboxes SET secrets = ? WHERE id = ?");
  for (const row of rows) {
    const old = JSON.parse(row.secrets) as Record<string, string | undefined>;
    const next: SandboxSecrets = { hostKeyFingerprint: old.hostKeyFingerprint };
    if (old.supervisorToken) next.supervisorTokenHash = hashToken(old.supervisorToken);
    update.run(JSON.stringify(next), row.id);
  }
  const sessions = db.prepare("SELECT token FROM ssh_sessions").all() as { token: string }[];
  const rehash = db.prepare("UPDATE ssh_sessions SET token = ? WHERE token = ?");
  for (const s of sessions) rehash.run(hashToken(s.token), s.token);
}

/** Schema migrations, applied in order; the index + 1 is the schema version. */
export const MIGRATIONS: readonly Migration[] = [
  `CREATE TABLE sandboxes (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     created_at_ms INTEGER NOT NULL,
     updated_at_ms INTEGER NOT NULL,
     resource TEXT NOT NULL,
     secrets TEXT NOT NULL
   );
   CREATE TABLE ssh_sessions (
     token TEXT PRIMARY KEY,
     sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL,
     expires_at_ms INTEGER NOT NULL,
     revoked INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX ssh_sessions_by_sandbox ON ssh_sessions(sandbox_id);`,
  hashStoredSecrets,
  // Version 3: egress policy revisions (the policy as the API's JSON).
  `CREATE TABLE policy_revisions (
     sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
     version INTEGER NOT NULL,
     policy_hash TEXT NOT NULL,
     status TEXT NOT NULL,
     load_error TEXT NOT NULL DEFAULT '',
     created_at_ms INTEGER NOT NULL,
     loaded_at_ms INTEGER NOT NULL DEFAULT 0,
     policy TEXT NOT NULL,
     PRIMARY KEY (sandbox_id, version)
   );`,
];

interface SandboxRow {
  resource: string;
  secrets: string;
}

interface SessionRow {
  token: string;
  sandbox_id: string;
  name: string;
  created_at_ms: number;
  expires_at_ms: number;
  revoked: number;
}

interface RevisionRow {
  sandbox_id: string;
  version: number;
  policy_hash: string;
  status: string;
  load_error: string;
  created_at_ms: number;
  loaded_at_ms: number;
  policy: string;
}

function toRevision(row: RevisionRow): PolicyRevisionRecord {
  return {
    sandboxId: row.sandbox_id,
    version: Number(row.version),
    hash: row.policy_hash,
    status: row.status as PolicyStatus,
    loadError: row.load_error,
    createdAtMs: Number(row.created_at_ms),
    loadedAtMs: Number(row.loaded_at_ms),
    policy: JSON.parse(row.policy),
  };
}

const PENDING: PolicyStatus = "POLICY_STATUS_PENDING";
const LOADED: PolicyStatus = "POLICY_STATUS_LOADED";

function toRecord(row: SandboxRow): SandboxRecord {
  return { sandbox: JSON.parse(row.resource), secrets: JSON.parse(row.secrets) };
}

/** A stored session: `id` and `token` hold the token's hash, never the token. */
function toSession(row: SessionRow): SshSession {
  return {
    id: row.token,
    token: row.token,
    sandbox_id: row.sandbox_id,
    name: row.name,
    created_at_ms: Number(row.created_at_ms),
    expires_at_ms: Number(row.expires_at_ms),
    revoked: row.revoked !== 0,
  };
}

/** Options of {@link SqliteStore.open}. */
export interface SqliteStoreOptions {
  /** Database file; undefined = in memory. */
  path?: string;
  /** Clock for `updated_at_ms`; default `Date.now`. */
  now?: () => number;
}

/** {@link Store} over `node:sqlite`. */
export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  readonly #now: () => number;

  private constructor(db: DatabaseSync, now: () => number) {
    this.#db = db;
    this.#now = now;
  }

  /**
   * Opens (creating if needed) and migrates a database. A database file and
   * its `-wal`/`-shm` companions are mode 0600 (SQLite gives the companions
   * the main file's mode; an existing file is narrowed too).
   */
  static open(options: SqliteStoreOptions = {}): SqliteStore {
    let db: DatabaseSync;
    if (options.path) createPrivate(options.path);
    try {
      db = new DatabaseSync(options.path ?? ":memory:", { timeout: 5_000 } as never);
    } catch (err) {
      throw new Error(
        `cannot open database ${options.path ?? ":memory:"}: ${(err as Error).message}`,
      );
    }
    try {
      if (options.path) {
        db.exec("PRAGMA journal_mode = WAL");
        for (const f of [options.path, `${options.path}-wal`, `${options.path}-shm`]) {
          try {
            Deno.chmodSync(f, 0o600);
          } catch (err) {
            if (!(err instanceof Deno.errors.NotFound)) throw err;
          }
        }
      }
      db.exec("PRAGMA foreign_keys = ON");
      db.exec("PRAGMA busy_timeout = 5000");
      migrate(db, options.now ?? Date.now);
    } catch (err) {
      db.close();
      throw err;
    }
    return new SqliteStore(db, options.now ?? Date.now);
  }

  /** The schema version in use. */
  schemaVersion(): number {
    return currentVersion(this.#db);
  }

  createSandbox(record: SandboxRecord): Promise<void> {
    return this.#write(() => {
      const s = record.sandbox;
      try {
        this.#db.prepare(
          `INSERT INTO sandboxes (id, name, created_at_ms, updated_at_ms, resource, secrets)
           VALUES (?, ?, ?, ?, ?, ?)`,
        ).run(
          s.id,
          s.name,
          s.created_at_ms,
          this.#now(),
          JSON.stringify(s),
          JSON.stringify(record.secrets),
        );
      } catch (err) {
        if (/UNIQUE constraint failed: sandboxes\.name/.test(String(err))) {
          throw new StatusError(Code.ALREADY_EXISTS, `sandbox "${s.name}" already exists`);
        }
        if (/UNIQUE constraint failed: sandboxes\.id|PRIMARY KEY/.test(String(err))) {
          throw new StatusError(Code.ALREADY_EXISTS, `sandbox id ${s.id} already exists`);
        }
        throw err;
      }
    });
  }

  getSandbox(id: string): Promise<SandboxRecord | undefined> {
    return this.#read(() => {
      const row = this.#db.prepare("SELECT resource, secrets FROM sandboxes WHERE id = ?").get(id);
      return row ? toRecord(row as unknown as SandboxRow) : undefined;
    });
  }

  getSandboxByName(name: string): Promise<SandboxRecord | undefined> {
    return this.#read(() => {
      const row = this.#db.prepare("SELECT resource, secrets FROM sandboxes WHERE name = ?").get(
        name,
      );
      return row ? toRecord(row as unknown as SandboxRow) : undefined;
    });
  }

  listSandboxes(options: ListOptions): Promise<SandboxRecord[]> {
    return this.#read(() =>
      (this.#db.prepare(
        `SELECT resource, secrets FROM sandboxes
         ORDER BY created_at_ms, name LIMIT ? OFFSET ?`,
      ).all(options.limit, options.offset) as unknown as SandboxRow[]).map(toRecord)
    );
  }

  countSandboxes(): Promise<number> {
    return this.#read(() =>
      Number((this.#db.prepare("SELECT COUNT(*) AS n FROM sandboxes").get() as { n: number }).n)
    );
  }

  updateSandbox(
    id: string,
    change: (current: SandboxRecord) => SandboxRecord | undefined,
  ): Promise<SandboxRecord | undefined> {
    return this.#write(() => {
      const row = this.#db.prepare("SELECT resource, secrets FROM sandboxes WHERE id = ?").get(id);
      if (!row) return undefined;
      const current = toRecord(row as unknown as SandboxRow);
      const next = change(current);
      if (!next) return current;
      if (next.sandbox.id !== id) {
        throw new Error("updateSandbox: the id of a sandbox never changes");
      }
      this.#db.prepare(
        `UPDATE sandboxes SET name = ?, updated_at_ms = ?, resource = ?, secrets = ? WHERE id = ?`,
      ).run(
        next.sandbox.name,
        this.#now(),
        JSON.stringify(next.sandbox),
        JSON.stringify(next.secrets),
        id,
      );
      return next;
    });
  }

  deleteSandbox(id: string): Promise<boolean> {
    return this.#write(() => {
      this.#db.prepare("DELETE FROM ssh_sessions WHERE sandbox_id = ?").run(id);
      this.#db.prepare("DELETE FROM policy_revisions WHERE sandbox_id = ?").run(id);
      const res = this.#db.prepare("DELETE FROM sandboxes WHERE id = ?").run(id);
      return Number(res.changes) > 0;
    });
  }

  addPolicyRevision(
    sandboxId: string,
    revision: NewPolicyRevision,
  ): Promise<PolicyRevisionRecord> {
    return this.#write(() => {
      if (!this.#db.prepare("SELECT 1 FROM sandboxes WHERE id = ?").get(sandboxId)) {
        throw new StatusError(Code.NOT_FOUND, `sandbox ${sandboxId} not found`);
      }
      const top = this.#db.prepare(
        "SELECT MAX(version) AS v FROM policy_revisions WHERE sandbox_id = ?",
      ).get(sandboxId) as { v: number | null };
      const version = Number(top.v ?? 0) + 1;
      this.#db.prepare(
        "UPDATE policy_revisions SET status = 'POLICY_STATUS_SUPERSEDED' WHERE sandbox_id = ? AND status = ?",
      ).run(sandboxId, PENDING);
      this.#db.prepare(
        `INSERT INTO policy_revisions
           (sandbox_id, version, policy_hash, status, created_at_ms, policy)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ).run(
        sandboxId,
        version,
        revision.hash,
        PENDING,
        revision.createdAtMs,
        JSON.stringify(revision.policy),
      );
      // Bounded history: the oldest go, but never the one enforced now.
      this.#db.prepare(
        `DELETE FROM policy_revisions WHERE sandbox_id = ? AND version <= ? AND version !=
           (SELECT COALESCE(MAX(version), 0) FROM policy_revisions WHERE sandbox_id = ? AND status = ?)`,
      ).run(sandboxId, version - MAX_POLICY_REVISIONS, sandboxId, LOADED);
      return {
        sandboxId,
        version,
        hash: revision.hash,
        status: PENDING,
        loadError: "",
        createdAtMs: revision.createdAtMs,
        loadedAtMs: 0,
        policy: revision.policy,
      };
    });
  }

  getPolicyRevision(sandboxId: string, version: number): Promise<PolicyRevisionRecord | undefined> {
    return this.#read(() => {
      const row = version > 0
        ? this.#db.prepare("SELECT * FROM policy_revisions WHERE sandbox_id = ? AND version = ?")
          .get(sandboxId, version)
        : this.#db.prepare(
          "SELECT * FROM policy_revisions WHERE sandbox_id = ? ORDER BY version DESC LIMIT 1",
        ).get(sandboxId);
      return row ? toRevision(row as unknown as RevisionRow) : undefined;
    });
  }

  listPolicyRevisions(sandboxId: string, options: ListOptions): Promise<PolicyRevisionRecord[]> {
    return this.#read(() =>
      (this.#db.prepare(
        `SELECT * FROM policy_revisions WHERE sandbox_id = ?
         ORDER BY version DESC LIMIT ? OFFSET ?`,
      ).all(sandboxId, options.limit, options.offset) as unknown as RevisionRow[]).map(toRevision)
    );
  }

  markPolicyLoaded(sandboxId: string, version: number, loadedAtMs: number): Promise<boolean> {
    return this.#write(() => {
      const row = this.#db.prepare(
        "SELECT status FROM policy_revisions WHERE sandbox_id = ? AND version = ?",
      ).get(sandboxId, version) as { status: string } | undefined;
      if (!row) return false;
      if (row.status === PENDING) {
        this.#db.prepare(
          `UPDATE policy_revisions SET status = ?, load_error = '', loaded_at_ms = ?
           WHERE sandbox_id = ? AND version = ?`,
        ).run(LOADED, loadedAtMs, sandboxId, version);
      }
      const sandbox = this.#db.prepare("SELECT resource FROM sandboxes WHERE id = ?").get(
        sandboxId,
      ) as { resource: string } | undefined;
      if (sandbox) {
        const resource = JSON.parse(sandbox.resource) as Sandbox;
        if ((resource.current_policy_version ?? 0) < version) {
          resource.current_policy_version = version;
          this.#db.prepare("UPDATE sandboxes SET resource = ?, updated_at_ms = ? WHERE id = ?")
            .run(JSON.stringify(resource), this.#now(), sandboxId);
        }
      }
      return true;
    });
  }

  markPolicyFailed(sandboxId: string, version: number, error: string): Promise<boolean> {
    return this.#write(() => {
      const res = this.#db.prepare(
        `UPDATE policy_revisions SET status = 'POLICY_STATUS_FAILED', load_error = ?
         WHERE sandbox_id = ? AND version = ? AND status = ?`,
      ).run(error, sandboxId, version, PENDING);
      return Number(res.changes) > 0;
    });
  }

  policiesToApply(sandboxId?: string): Promise<PolicyRevisionRecord[]> {
    return this.#read(() =>
      (this.#db.prepare(
        `SELECT r.* FROM policy_revisions r
         WHERE r.status IN (?, ?) AND (? IS NULL OR r.sandbox_id = ?) AND r.version = (
           SELECT MAX(version) FROM policy_revisions
           WHERE sandbox_id = r.sandbox_id AND status IN (?, ?))
         ORDER BY r.sandbox_id`,
      ).all(
        PENDING,
        LOADED,
        sandboxId ?? null,
        sandboxId ?? null,
        PENDING,
        LOADED,
      ) as unknown as RevisionRow[])
        .map(toRevision)
    );
  }

  createSshSession(session: SshSession): Promise<void> {
    return this.#write(() => {
      try {
        this.#db.prepare(
          `INSERT INTO ssh_sessions (token, sandbox_id, name, created_at_ms, expires_at_ms, revoked)
           VALUES (?, ?, ?, ?, ?, ?)`,
        ).run(
          hashToken(session.token),
          session.sandbox_id,
          session.name,
          session.created_at_ms,
          session.expires_at_ms,
          session.revoked ? 1 : 0,
        );
      } catch (err) {
        if (/FOREIGN KEY constraint failed/.test(String(err))) {
          throw new StatusError(Code.NOT_FOUND, `sandbox ${session.sandbox_id} not found`);
        }
        throw err;
      }
    });
  }

  getSshSession(token: string): Promise<SshSession | undefined> {
    return this.#read(() => {
      const row = this.#db.prepare("SELECT * FROM ssh_sessions WHERE token = ?").get(
        hashToken(token),
      );
      return row ? toSession(row as unknown as SessionRow) : undefined;
    });
  }

  revokeSshSession(token: string): Promise<boolean> {
    return this.#write(() => {
      const res = this.#db.prepare("UPDATE ssh_sessions SET revoked = 1 WHERE token = ?").run(
        hashToken(token),
      );
      return Number(res.changes) > 0;
    });
  }

  pruneSshSessions(nowMs: number): Promise<number> {
    return this.#write(() => {
      const res = this.#db.prepare(
        `DELETE FROM ssh_sessions
         WHERE revoked = 1 OR (expires_at_ms > 0 AND expires_at_ms < ?)`,
      ).run(nowMs);
      return Number(res.changes);
    });
  }

  close(): void {
    try {
      this.#db.close();
    } catch {
      // already closed
    }
  }

  #read<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Runs `fn` inside `BEGIN IMMEDIATE … COMMIT`, rolling back on any throw. */
  #write<T>(fn: () => T): Promise<T> {
    try {
      this.#db.exec("BEGIN IMMEDIATE");
      let result: T;
      try {
        result = fn();
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
      this.#db.exec("COMMIT");
      return Promise.resolve(result);
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/** Creates `path` empty with mode 0600 unless it exists. */
function createPrivate(path: string): void {
  try {
    Deno.writeFileSync(path, new Uint8Array(), { mode: 0o600, createNew: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) {
      throw new Error(`cannot create database ${path}: ${(err as Error).message}`);
    }
  }
}

function currentVersion(db: DatabaseSync): number {
  const row = db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as {
    v: number | null;
  };
  return Number(row.v ?? 0);
}

function migrate(db: DatabaseSync, now: () => number): void {
  db.exec(
    `CREATE TABLE IF NOT EXISTS schema_migrations (
       version INTEGER PRIMARY KEY,
       applied_at_ms INTEGER NOT NULL
     )`,
  );
  const from = currentVersion(db);
  if (from > MIGRATIONS.length) {
    throw new Error(
      `database schema version ${from} is newer than this gateway understands (${MIGRATIONS.length})`,
    );
  }
  for (let v = from + 1; v <= MIGRATIONS.length; v++) {
    db.exec("BEGIN IMMEDIATE");
    try {
      const step = MIGRATIONS[v - 1];
      if (typeof step === "string") db.exec(step);
      else step(db);
      db.prepare("INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)").run(
        v,
        now(),
      );
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw new Error(`database migration ${v} failed: ${(err as Error).message}`);
    }
  }
}
