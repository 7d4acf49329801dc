/**
 * A writer for `newc` cpio archives, the format the Linux kernel unpacks as
 * an initramfs. Written here (instead of calling `cpio`) so the archive is a
 * pure function of its entries: same inputs, same bytes.
 *
 * @module
 */

/** One archive member. Paths are relative, without a leading `/`. */
export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "char"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const encoder = new TextEncoder();

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  nameSize: number;
}): string {
  return "070701" + [
    fields.ino,
    fields.mode,
    0, // uid
    0, // gid
    fields.nlink,
    0, // mtime: fixed, so archives are reproducible
    fields.size,
    0, // devmajor
    0, // devminor
    fields.rdevMajor,
    fields.rdevMinor,
    fields.nameSize,
    0, // check
  ].map(hex8).join("");
}

/** Checks a member path: relative, no `..`, no empty components. */
function checkPath(path: string): void {
  if (path.startsWith("/") || path === "" || path.split("/").some((p) => p === "" || p === "..")) {
    throw new Error(`invalid cpio member path: ${JSON.stringify(path)}`);
  }
}

/** Encodes `entries` (in order) plus the trailer as one newc archive. */
export function writeCpio(entries: readonly CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  let ino = 1;
  const push = (
    name: string,
    mode: number,
    data: Uint8Array,
    rdev: [number, number] = [0, 0],
  ) => {
    const nameBytes = encoder.encode(name + "\0");
    const head = encoder.encode(header({
      ino: ino++,
      mode,
      nlink: (mode & S_IFDIR) === S_IFDIR ? 2 : 1,
      size: data.length,
      rdevMajor: rdev[0],
      rdevMinor: rdev[1],
      nameSize: nameBytes.length,
    }));
    chunks.push(head, nameBytes, new Uint8Array(pad4(head.length + nameBytes.length)));
    if (data.length > 0) chunks.push(data, new Uint8Array(pad4(data.length)));
  };
  for (const e of entries) {
    checkPath(e.path);
    switch (e.kind) {
      case "dir":
        push(e.path, S_IFDIR | (e.mode ?? 0o755), new Uint8Array());
        break;
      case "file":
        push(e.path, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case "symlink":
        push(e.path, S_IFLNK | 0o777, encoder.encode(e.target));
        break;
      case "char":
        push(e.path, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(), [e.major, e.minor]);
        break;
    }
  }
  push("TRAILER!!!", 0, new Uint8Array());
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total + pad4(total));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
