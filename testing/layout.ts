/**
 * The repository's import rules (docs/architecture.md, "Rooms"), as code:
 * a scanner that finds a module's imports and a pure checker over the
 * import graph. `layout_test.ts` runs both over every `.ts` file.
 *
 * Rooms are the top-level folders: the roles (`gateway/`, `supervisor/`,
 * `driver_vm/`, `cli/`, `egress/`), `core/`, `proto/`, `testing/` (the
 * cross-role fixtures) and `e2e/`. The rules:
 * - a role imports no other role, tests included (shared logic lives in core/);
 * - `core/` and `proto/` import no role, no `testing/`, no `e2e/`;
 * - production code (not a test, not a test helper) imports no `testing/`, no `e2e/`;
 * - `testing/` imports no `e2e/`;
 * - no import cycle among value imports (`import type` is erased before
 *   anything runs, so a cycle through one is harmless).
 *
 * @module
 */

/** One import the scanner found. */
export interface ImportRef {
  /** The specifier as written (`./x.ts`, `npm:foo`, `node:fs`). */
  specifier: string;
  /** `import type …` / `export type … from`. */
  typeOnly: boolean;
  /** `import("…")` (also `typeof import("…")`). */
  dynamic: boolean;
}

/** The role folders: none imports another. */
export const ROLE_FOLDERS: readonly string[] = [
  "gateway",
  "supervisor",
  "driver_vm",
  "cli",
  "egress",
];

/** The folders shared logic lives in: they import no role and no test room. */
export const SHARED: readonly string[] = ["core", "proto"];

/** The test rooms: cross-role fixtures and the end-to-end runs. */
export const TEST_ROOMS: readonly string[] = ["testing", "e2e"];

type Token = { kind: "id" | "str" | "punct" | "other"; value: string };

/** Keywords after which a `/` starts a regular expression. */
const REGEX_AFTER = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await",
]);

/**
 * Splits TypeScript source into the tokens that matter for imports:
 * identifiers, string literals and punctuation; comments, template
 * literals' text and regular expressions are skipped (so an `import` in a
 * comment, a generated-code template or a regex is not one).
 */
function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  /** For each open `${`: the brace depth of the code inside it. */
  const templates: number[] = [];
  let i = 0;
  const n = src.length;
  const regexAllowed = (): boolean => {
    const prev = tokens.at(-1);
    if (!prev) return true;
    if (prev.kind === "punct") return ![")", "]", "}"].includes(prev.value);
    if (prev.kind === "id") return REGEX_AFTER.has(prev.value);
    return false;
  };
  /** Skips template text from `i` (just past a backtick or a closing `}`). */
  const templateText = (): void => {
    while (i < n) {
      const c = src[i];
      if (c === "\\") {
        i += 2;
      } else if (c === "`") {
        i++;
        tokens.push({ kind: "other", value: "`" });
        return;
      } else if (c === "$" && src[i + 1] === "{") {
        i += 2;
        templates.push(0);
        return;
      } else {
        i++;
      }
    }
  };
  while (i < n) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === "/" && src[i + 1] === "/") {
      while (i < n && src[i] !== "\n") i++;
    } else if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      let value = "";
      while (j < n && src[j] !== c && src[j] !== "\n") {
        if (src[j] === "\\") {
          value += src[j + 1] ?? "";
          j += 2;
        } else {
          value += src[j++];
        }
      }
      tokens.push({ kind: "str", value });
      i = j + 1;
    } else if (c === "`") {
      i++;
      templateText();
    } else if (c === "/" && regexAllowed()) {
      let j = i + 1;
      let inClass = false;
      while (j < n && src[j] !== "\n") {
        const d = src[j];
        if (d === "\\") j++;
        else if (d === "[") inClass = true;
        else if (d === "]") inClass = false;
        else if (d === "/" && !inClass) break;
        j++;
      }
      i = j + 1;
      while (i < n && /[a-z]/.test(src[i])) i++;
      tokens.push({ kind: "other", value: "/regex/" });
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w$]/.test(src[j])) j++;
      tokens.push({ kind: "id", value: src.slice(i, j) });
      i = j;
    } else if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w.]/.test(src[j])) j++;
      tokens.push({ kind: "other", value: src.slice(i, j) });
      i = j;
    } else if (templates.length > 0 && (c === "{" || c === "}")) {
      i++;
      if (c === "{") {
        templates[templates.length - 1]++;
        tokens.push({ kind: "punct", value: c });
      } else if (templates[templates.length - 1] === 0) {
        templates.pop();
        templateText();
      } else {
        templates[templates.length - 1]--;
        tokens.push({ kind: "punct", value: c });
      }
    } else {
      tokens.push({ kind: "punct", value: c });
      i++;
    }
  }
  return tokens;
}

/**
 * The imports of a module: `import … from "x"`, `import "x"`,
 * `export … from "x"`, and `import("x")` with a literal specifier (a
 * computed one is not seen). Pure.
 */
export function scanImports(src: string): ImportRef[] {
  const t = tokenize(src);
  const out: ImportRef[] = [];
  const is = (k: number, value: string) => t[k]?.value === value && t[k].kind !== "str";
  /** From `k`, an import/export clause then `from "x"`: the index of the string, or -1. */
  const clauseFrom = (k: number): number => {
    for (let j = k; j < t.length && j < k + 10_000; j++) {
      const tok = t[j];
      if (tok.kind === "id" && tok.value === "from" && t[j + 1]?.kind === "str") return j + 1;
      if (tok.kind === "id") continue;
      if (tok.kind === "punct" && ["{", "}", ",", "*"].includes(tok.value)) continue;
      return -1;
    }
    return -1;
  };
  for (let k = 0; k < t.length; k++) {
    const tok = t[k];
    if (tok.kind !== "id" || (tok.value !== "import" && tok.value !== "export")) continue;
    if (is(k - 1, ".")) continue; // `x.import`
    if (tok.value === "import" && is(k + 1, "(") && t[k + 2]?.kind === "str") {
      if (is(k + 3, ")") || is(k + 3, ",")) {
        out.push({ specifier: t[k + 2].value, typeOnly: false, dynamic: true });
      }
      continue;
    }
    if (tok.value === "import" && t[k + 1]?.kind === "str") {
      out.push({ specifier: t[k + 1].value, typeOnly: false, dynamic: false });
      continue;
    }
    if (tok.value === "export" && !(is(k + 1, "{") || is(k + 1, "*") || is(k + 1, "type"))) {
      continue;
    }
    if (tok.value === "import" && !(t[k + 1]?.kind === "id" || is(k + 1, "{") || is(k + 1, "*"))) {
      continue;
    }
    const at = clauseFrom(k + 1);
    if (at < 0) continue;
    const typeOnly = is(k + 1, "type") && !is(k + 2, "from") && !is(k + 2, ",");
    out.push({ specifier: t[at].value, typeOnly, dynamic: false });
  }
  return out;
}

/** Joins and normalizes `a/b/../c` (POSIX, repository-relative). */
function normalize(path: string): string {
  const parts: string[] = [];
  for (const p of path.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return parts.join("/");
}

/**
 * The repository path `specifier` names from `from` (both repository-
 * relative), or undefined for a package (`npm:`, `node:`, `jsr:`, bare).
 */
export function resolveImport(from: string, specifier: string): string | undefined {
  if (!specifier.startsWith("./") && !specifier.startsWith("../")) return undefined;
  const dir = from.includes("/") ? from.slice(0, from.lastIndexOf("/")) : "";
  return normalize(`${dir}/${specifier}`);
}

/** The room (top-level folder) of a repository path ("" for a root file). */
export function roomOf(path: string): string {
  return path.includes("/") ? path.slice(0, path.indexOf("/")) : "";
}

/**
 * Whether a file is test code: in a test room, a `*_test.ts`, a
 * `*_suite.ts` (tests shared by several `*_test.ts`), a `*_bench.ts`, a
 * room's `testing.ts` helpers, or under a `testdata/` folder.
 */
export function isTestFile(path: string): boolean {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return TEST_ROOMS.includes(roomOf(path)) || base.endsWith("_test.ts") ||
    base.endsWith("_suite.ts") || base.endsWith("_bench.ts") || base === "testing.ts" ||
    path.split("/").includes("testdata");
}

/** An import in the graph: the imported repository path; a bare string is a value import. */
export type Edge = string | { to: string; typeOnly: boolean };

/** Where an edge points. */
function target(e: Edge): string {
  return typeof e === "string" ? e : e.to;
}

/** The graph of value imports only (what runs). */
function valueGraph(graph: ReadonlyMap<string, readonly Edge[]>): Map<string, string[]> {
  return new Map(
    [...graph].map(([from, edges]) => [
      from,
      edges.filter((e) => typeof e === "string" || !e.typeOnly).map(target),
    ]),
  );
}

/** The rule an edge breaks, or undefined. */
function edgeViolation(from: string, to: string): string | undefined {
  const a = roomOf(from);
  const b = roomOf(to);
  if (a === b) return undefined;
  if (ROLE_FOLDERS.includes(a) && ROLE_FOLDERS.includes(b)) {
    return `${from} imports ${to}: a role (${a}/) never imports another role (${b}/); ` +
      "move the shared code to core/";
  }
  if (SHARED.includes(a) && (ROLE_FOLDERS.includes(b) || TEST_ROOMS.includes(b))) {
    return `${from} imports ${to}: ${a}/ imports no role and no test room (${b}/)`;
  }
  if (a === "testing" && b === "e2e") {
    return `${from} imports ${to}: testing/ never imports e2e/ (e2e/ builds on testing/)`;
  }
  if (TEST_ROOMS.includes(b) && !isTestFile(from)) {
    return `${from} imports ${to}: production code never imports ${b}/`;
  }
  return undefined;
}

/**
 * The cycles of value imports in a graph: one path per strongly connected
 * component (Tarjan's algorithm, iterative).
 */
export function findCycles(edges: ReadonlyMap<string, readonly Edge[]>): string[][] {
  const graph = valueGraph(edges);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  let next = 0;
  const visit = (root: string) => {
    // Iterative depth-first search: [node, index of its next edge].
    const work: [string, number][] = [[root, 0]];
    index.set(root, next);
    low.set(root, next++);
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const top = work[work.length - 1];
      const [v, e] = top;
      const edges = graph.get(v) ?? [];
      if (e < edges.length) {
        top[1]++;
        const w = edges[e];
        if (!graph.has(w)) continue;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) {
          low.set(v, Math.min(low.get(v)!, index.get(w)!));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent)!, low.get(v)!));
      }
      if (low.get(v) !== index.get(v)) continue;
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      const selfLoop = (graph.get(v) ?? []).includes(v);
      if (component.length > 1 || selfLoop) cycles.push(cyclePath(graph, new Set(component)));
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return cycles;
}

/** One cycle through a strongly connected component: `a → b → … → a`. */
function cyclePath(graph: ReadonlyMap<string, readonly string[]>, members: Set<string>): string[] {
  const start = [...members].sort()[0];
  // Breadth-first from start back to start, inside the component.
  const prev = new Map<string, string>();
  const queue = [start];
  for (let q = 0; q < queue.length; q++) {
    const v = queue[q];
    for (const w of graph.get(v) ?? []) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let x = v; x !== start; x = prev.get(x)!) path.splice(1, 0, x);
        return [...path, start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

/**
 * Every broken rule of an import graph (repository path → what it imports),
 * one line each, sorted. Pure.
 */
export function checkLayout(graph: ReadonlyMap<string, readonly Edge[]>): string[] {
  const problems: string[] = [];
  for (const [from, edges] of graph) {
    for (const to of new Set(edges.map(target))) {
      const v = edgeViolation(from, to);
      if (v) problems.push(v);
    }
  }
  for (const cycle of findCycles(graph)) {
    problems.push(`import cycle: ${cycle.join(" → ")}`);
  }
  return problems.sort();
}

/** Options of {@link repositoryGraph}. */
export interface RepositoryGraphOptions {
  /** The repository root (absolute). */
  root: string;
  /** Top-level entries skipped besides hidden ones; default node_modules, dist, .state. */
  skip?: readonly string[];
}

/** The repository's `.ts` files and what each imports. */
export interface RepositoryGraph {
  /** Repository path → the repository paths it imports. */
  graph: Map<string, Edge[]>;
  /** `from: specifier` for every relative import whose file does not exist. */
  unresolved: string[];
}

/** Scans every `.ts` file under `root` and resolves its relative imports. */
export async function repositoryGraph(options: RepositoryGraphOptions): Promise<RepositoryGraph> {
  const skip = new Set(options.skip ?? ["node_modules", "dist", ".state"]);
  const files: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(`${options.root}/${dir}`)) {
      if (e.name.startsWith(".") || (dir === "" && skip.has(e.name))) continue;
      const path = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory) await walk(path);
      else if (e.isFile && e.name.endsWith(".ts")) files.push(path);
    }
  };
  await walk("");
  const graph = new Map<string, Edge[]>();
  const unresolved: string[] = [];
  for (const file of files.sort()) {
    const src = await Deno.readTextFile(`${options.root}/${file}`);
    const tos: Edge[] = [];
    for (const ref of scanImports(src)) {
      const to = resolveImport(file, ref.specifier);
      if (to === undefined) continue;
      try {
        await Deno.stat(`${options.root}/${to}`);
      } catch {
        unresolved.push(`${file}: ${ref.specifier}`);
        continue;
      }
      tos.push({ to, typeOnly: ref.typeOnly });
    }
    graph.set(file, tos);
  }
  return { graph, unresolved };
}
