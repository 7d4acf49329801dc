import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { DENO_CACHE_FILES, warmDenoCache } from "./deno_cache.ts";

const FLAGS = ["--no-config", "--quiet", "--no-lock"];

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "osdc" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function specifiers(path: string, table: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return (db.prepare(`SELECT specifier FROM ${table}`).all() as { specifier: string }[])
      .map((r) => r.specifier);
  } finally {
    db.close();
  }
}

Deno.test("deno_cache: the module's entries carry its guest specifier, nothing of the build's paths", async () => {
  await withDir(async (dir) => {
    const module = `${dir}/supervisor.js`;
    // A Node module too, as the bundle pulls in: its code is cached under its own name.
    await Deno.writeTextFile(
      module,
      'import path from "node:path";\nexport const joined = path.join("a", "b");\n' +
        "if (import.meta.main) throw new Error('must not run as main');\n",
    );
    const out = `${dir}/out`;
    const result = await warmDenoCache({
      deno: Deno.execPath(),
      module,
      guestSpecifier: "file:///opt/openshell/supervisor.js",
      out,
      runFlags: FLAGS,
    });
    assert.ok(result.entries >= 1 && result.bytes > 0, JSON.stringify(result));
    const names = (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name).sort();
    assert.deepEqual(names, DENO_CACHE_FILES.map((f) => f.file).sort(), "one file per cache");
    for (const { file, table } of DENO_CACHE_FILES) {
      const all = specifiers(`${out}/${file}`, table);
      assert.ok(all.includes("file:///opt/openshell/supervisor.js"), `${file}: ${all}`);
      assert.deepEqual(
        all.filter((s) => s.startsWith("file:") && !s.startsWith("file:///opt/")),
        [],
      );
    }
  });
});

Deno.test("deno_cache: a module Deno cannot load is an error", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/broken.js`, "export const = ;\n");
    await assert.rejects(
      warmDenoCache({
        deno: Deno.execPath(),
        module: `${dir}/broken.js`,
        guestSpecifier: "file:///opt/openshell/broken.js",
        out: `${dir}/out`,
        runFlags: FLAGS,
      }),
      /failed with status/,
    );
  });
});
