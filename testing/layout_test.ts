import assert from "node:assert/strict";
import { REPO_ROOT } from "../core/launcher.ts";
import {
  checkLayout,
  type Edge,
  findCycles,
  isTestFile,
  repositoryGraph,
  resolveImport,
  scanImports,
} from "./layout.ts";

const graph = (o: Record<string, Edge[]>) => new Map(Object.entries(o));

Deno.test("the repository keeps its import rules (docs/architecture.md)", async () => {
  const { graph, unresolved } = await repositoryGraph({ root: REPO_ROOT });
  // The scanner found real files: every relative import it saw exists.
  assert.deepEqual(unresolved, []);
  assert.ok(graph.size > 100, `only ${graph.size} files scanned`);
  assert.ok(
    graph.get("gateway/main.ts")?.some((e) =>
      typeof e !== "string" && e.to === "gateway/server.ts"
    ),
    "the scanner sees gateway/main.ts import ./server.ts",
  );
  assert.deepEqual(checkLayout(graph), []);
});

Deno.test("scanImports: static, re-export, side-effect, dynamic and type-only imports", () => {
  const src = [
    `import assert from "node:assert/strict";`,
    `import { a, type B } from "./a.ts";`,
    `import type { C } from '../core/c.ts';`,
    `import * as ns from "./ns.ts";`,
    `import "./side.ts";`,
    `export { d } from "./d.ts";`,
    `export * from "./star.ts";`,
    `export type { E } from "./e.ts";`,
    `const m = await import("./dyn.ts");`,
    `type T = typeof import("./typeof.ts");`,
    `import {`,
    `  f,`,
    `  g as h,`,
    `} from "./multi.ts";`,
  ].join("\n");
  assert.deepEqual(scanImports(src), [
    { specifier: "node:assert/strict", typeOnly: false, dynamic: false },
    { specifier: "./a.ts", typeOnly: false, dynamic: false },
    { specifier: "../core/c.ts", typeOnly: true, dynamic: false },
    { specifier: "./ns.ts", typeOnly: false, dynamic: false },
    { specifier: "./side.ts", typeOnly: false, dynamic: false },
    { specifier: "./d.ts", typeOnly: false, dynamic: false },
    { specifier: "./star.ts", typeOnly: false, dynamic: false },
    { specifier: "./e.ts", typeOnly: true, dynamic: false },
    { specifier: "./dyn.ts", typeOnly: false, dynamic: true },
    { specifier: "./typeof.ts", typeOnly: false, dynamic: true },
    { specifier: "./multi.ts", typeOnly: false, dynamic: false },
  ]);
});

Deno.test("scanImports: comments, strings, templates and regexes hold no imports", () => {
  const src = [
    `// import x from "./comment.ts";`,
    `/** \`import y from "./jsdoc.ts"\` */`,
    `const s = 'import z from "./string.ts"';`,
    'const t = `import w from "./template.ts" ${\'}\'} ${`import v from "./nested.ts"`}`;',
    `const r = /import u from "\\.\\/regex.ts"'/;`,
    `const q = x / 2; const p = "import o from './after-division.ts'";`,
    `const url = import.meta.url;`,
    `export const k = 1;`,
    `export type K = { from: "x" };`,
    `const dynamic = import(name);`,
    `import { real } from "./real.ts";`,
  ].join("\n");
  assert.deepEqual(scanImports(src).map((r) => r.specifier), ["./real.ts"]);
});

Deno.test("resolveImport and isTestFile", () => {
  assert.equal(resolveImport("gateway/server.ts", "../core/log.ts"), "core/log.ts");
  assert.equal(resolveImport("cli/commands/x.ts", "../../core/a.ts"), "core/a.ts");
  assert.equal(resolveImport("cli/commands/x.ts", "./y.ts"), "cli/commands/y.ts");
  assert.equal(resolveImport("cli/x.ts", "npm:foo"), undefined);
  assert.equal(resolveImport("cli/x.ts", "node:fs"), undefined);
  for (
    const f of ["gateway/a_test.ts", "cli/testing.ts", "cli/cli_suite.ts", "gateway/x_bench.ts"]
  ) {
    assert.ok(isTestFile(f), f);
  }
  for (const f of ["testing/gateway.ts", "e2e/vm.ts", "supervisor/testdata/probe.ts"]) {
    assert.ok(isTestFile(f), f);
  }
  for (const f of ["gateway/server.ts", "core/log.ts", "cli/commands/testing_x.ts"]) {
    assert.ok(!isTestFile(f), f);
  }
});

Deno.test("checkLayout: a clean graph passes", () => {
  assert.deepEqual(
    checkLayout(graph({
      "core/a.ts": ["proto/p.ts"],
      "proto/p.ts": [],
      "gateway/server.ts": ["core/a.ts", "gateway/util.ts"],
      "gateway/util.ts": [],
      "gateway/server_test.ts": ["gateway/server.ts", "testing/gateway.ts"],
      "cli/testing.ts": ["testing/gateway.ts"],
      "testing/gateway.ts": ["gateway/server.ts", "supervisor/x.ts", "driver_vm/main.ts"],
      "e2e/vm.ts": ["testing/gateway.ts", "cli/main.ts"],
      "supervisor/x.ts": [],
      "driver_vm/main.ts": [],
      "cli/main.ts": [],
    })),
    [],
  );
});

Deno.test("checkLayout: each broken rule is one line naming both files", () => {
  const cases: [Record<string, Edge[]>, RegExp][] = [
    [{ "gateway/a.ts": ["supervisor/b.ts"] }, /gateway\/a\.ts imports supervisor\/b\.ts: a role/],
    [{ "cli/a_test.ts": ["gateway/b.ts"] }, /a role \(cli\/\) never imports another role/],
    [{ "egress/a.ts": ["driver_vm/b.ts"] }, /a role \(egress\/\) never imports/],
    [{ "core/a.ts": ["gateway/b.ts"] }, /core\/a\.ts imports gateway\/b\.ts: core\/ imports no/],
    [{ "proto/a.ts": ["cli/b.ts"] }, /proto\/ imports no role/],
    [{ "core/a_test.ts": ["testing/b.ts"] }, /core\/ imports no role and no test room/],
    [{ "gateway/a.ts": ["testing/b.ts"] }, /production code never imports testing\//],
    [{ "supervisor/a.ts": ["e2e/b.ts"] }, /production code never imports e2e\//],
    [{ "testing/a.ts": ["e2e/b.ts"] }, /testing\/ never imports e2e\//],
  ];
  for (const [g, expected] of cases) {
    const found = checkLayout(graph(g));
    assert.equal(found.length, 1, JSON.stringify(g));
    assert.match(found[0], expected);
  }
});

Deno.test("checkLayout / findCycles: cycles, self-imports, and a long ring", () => {
  assert.deepEqual(
    checkLayout(graph({ "core/a.ts": ["core/b.ts"], "core/b.ts": ["core/a.ts"] })),
    ["import cycle: core/a.ts → core/b.ts → core/a.ts"],
  );
  assert.deepEqual(findCycles(graph({ "core/a.ts": ["core/a.ts"] })), [["core/a.ts", "core/a.ts"]]);
  // A three-file cycle beside an acyclic tail is reported once, through its members only.
  const cycles = findCycles(graph({
    "cli/a.ts": ["cli/b.ts", "cli/tail.ts"],
    "cli/b.ts": ["cli/c.ts"],
    "cli/c.ts": ["cli/a.ts"],
    "cli/tail.ts": [],
  }));
  assert.deepEqual(cycles, [["cli/a.ts", "cli/b.ts", "cli/c.ts", "cli/a.ts"]]);
  // Deep chains do not overflow the stack (the search is iterative).
  const ring: Record<string, string[]> = {};
  for (let i = 0; i < 20_000; i++) ring[`core/m${i}.ts`] = [`core/m${(i + 1) % 20_000}.ts`];
  const big = findCycles(graph(ring));
  assert.equal(big.length, 1);
  assert.equal(big[0].length, 20_001);
  // A cycle through a type-only import is erased before anything runs: allowed.
  assert.deepEqual(
    checkLayout(graph({
      "core/a.ts": ["core/b.ts"],
      "core/b.ts": [{ to: "core/a.ts", typeOnly: true }],
    })),
    [],
  );
  assert.equal(
    checkLayout(graph({
      "core/a.ts": ["core/b.ts"],
      "core/b.ts": [{ to: "core/a.ts", typeOnly: false }],
    })).length,
    1,
  );
  // Imports of files outside the graph (packages resolved away) are ignored.
  assert.deepEqual(findCycles(graph({ "core/a.ts": ["core/missing.ts"] })), []);
});
