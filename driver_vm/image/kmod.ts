/**
 * Kernel module dependencies read straight from the `.ko` files (Debian's
 * kernel package ships no `modules.dep`; it is generated at install time,
 * and we never install the package).
 *
 * @module
 */

const decoder = new TextDecoder("latin1");

/** The `depends=` list recorded in a module's `.modinfo` section. */
export function moduleDepends(ko: Uint8Array): string[] {
  const text = decoder.decode(ko);
  const m = /\0depends=([^\0]*)\0/.exec(text);
  if (!m) return [];
  return m[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** Module name of a `.ko` path (`drivers/net/virtio_net.ko` → `virtio_net`). */
export function moduleName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1).replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll(
    "-",
    "_",
  );
}

/**
 * Orders `wanted` modules and everything they depend on so each module comes
 * after its dependencies (the order `insmod` needs). `depsOf` returns the
 * direct dependencies of a module name. Throws on an unknown module or a cycle.
 */
export function loadOrder(
  wanted: readonly string[],
  depsOf: (name: string) => readonly string[] | undefined,
): string[] {
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string, chain: string[]) => {
    const s = state.get(name);
    if (s === "done") return;
    if (s === "visiting") {
      throw new Error(`module dependency cycle: ${[...chain, name].join(" → ")}`);
    }
    const deps = depsOf(name);
    if (deps === undefined) throw new Error(`kernel module not found: ${name}`);
    state.set(name, "visiting");
    for (const d of deps) visit(d, [...chain, name]);
    state.set(name, "done");
    order.push(name);
  };
  for (const w of wanted) visit(w, []);
  return order;
}
