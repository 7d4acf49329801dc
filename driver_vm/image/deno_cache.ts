/**
 * Deno's caches for the guest's supervisor, made at runtime build time so
 * that no boot pays for them.
 *
 * Deno keeps V8's compiled code of every module it loads — the bundle and
 * the Node compatibility modules it pulls in (`node:http2`, `node:tls`, …) —
 * in `$DENO_DIR/v8_code_cache_v2`, and its analysis of the bundle's imports
 * in `dep_analysis_cache_v2`, both SQLite files keyed by module specifier
 * and a hash of the source. The guest's `DENO_DIR` is a fresh tmpfs at every
 * boot, so every boot compiled everything again: under TCG about 2–3 s of
 * the supervisor's start (docs/vm.md, boot stages).
 *
 * {@link warmDenoCache} loads the bundle once on the build host with the
 * same Deno binary and flags as the guest (importing it from a small entry
 * module, so its top level runs without starting the supervisor and the
 * module finishes evaluating: Deno stores a module's code cache only then),
 * renames the bundle's entries to the specifier it has in the guest, drops
 * the entry module's, and writes the two files into `out`. The runner
 * copies them into the guest's `DENO_DIR` before Deno starts
 * (`init.ts`). V8 checks each entry against the source and its own version
 * and flags and simply compiles anew when one does not match.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { runOk } from "./host.ts";

/** The cache files copied into the guest (names as Deno writes them in `DENO_DIR`). */
export const DENO_CACHE_FILES: readonly { file: string; table: string }[] = [
  { file: "v8_code_cache_v2", table: "codecache" },
  { file: "dep_analysis_cache_v2", table: "moduleinfocache" },
];

/** Options of {@link warmDenoCache}. */
export interface WarmOptions {
  /** The Deno binary the guest runs. */
  deno: string;
  /** The module the guest runs (the supervisor bundle). */
  module: string;
  /** Its specifier in the guest, e.g. `file:///opt/openshell/supervisor.js`. */
  guestSpecifier: string;
  /** Directory to write the cache files into (created). */
  out: string;
  /** `deno run` flags the guest uses that matter to the caches (e.g. `--no-config`). */
  runFlags: readonly string[];
}

/** What {@link warmDenoCache} stored. */
export interface WarmResult {
  /** Code cache entries (the bundle's and the Node modules'). */
  entries: number;
  /** Bytes of cached code. */
  bytes: number;
}

/**
 * Fills `out` with Deno's caches of `module` as the guest will look it up
 * (see the module docs). Throws when Deno fails or stored nothing for the
 * module.
 */
export async function warmDenoCache(options: WarmOptions): Promise<WarmResult> {
  const tmp = await Deno.makeTempDir({ prefix: "openshell-deno-cache-" });
  try {
    const module = `${tmp}/${options.module.slice(options.module.lastIndexOf("/") + 1)}`;
    await Deno.copyFile(options.module, module);
    const entry = `${tmp}/warm-entry.js`;
    await Deno.writeTextFile(
      entry,
      `await import(${JSON.stringify(`./${module.slice(tmp.length + 1)}`)});\n`,
    );
    const denoDir = `${tmp}/deno-dir`;
    await runOk(options.deno, [
      "run",
      ...options.runFlags,
      `--allow-read=${tmp}`,
      "--ignore-env",
      "--no-prompt",
      entry,
    ], {
      env: {
        DENO_DIR: denoDir,
        NO_COLOR: "1",
        DENO_NO_UPDATE_CHECK: "1",
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        HOME: tmp,
      },
    });
    const hostSpecifier = new URL(`file://${module}`).href;
    const entrySpecifier = new URL(`file://${entry}`).href;
    await Deno.mkdir(options.out, { recursive: true });
    let result: WarmResult = { entries: 0, bytes: 0 };
    for (const { file, table } of DENO_CACHE_FILES) {
      const db = new DatabaseSync(`${denoDir}/${file}`);
      try {
        const moved = db.prepare(`UPDATE ${table} SET specifier = ? WHERE specifier = ?`)
          .run(options.guestSpecifier, hostSpecifier);
        if (Number(moved.changes) !== 1) {
          throw new Error(`deno stored no ${table} entry for ${options.module}`);
        }
        db.prepare(`DELETE FROM ${table} WHERE specifier = ?`).run(entrySpecifier);
        if (table === "codecache") {
          const row = db.prepare("SELECT count(*) AS n, sum(length(data)) AS bytes FROM codecache")
            .get() as { n: number; bytes: number };
          result = { entries: Number(row.n), bytes: Number(row.bytes) };
        }
        // Everything into the main file: the guest gets one file per cache.
        db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      } finally {
        db.close();
      }
      await Deno.copyFile(`${denoDir}/${file}`, `${options.out}/${file}`);
    }
    return result;
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
