/**
 * Private directories and secret files: the checks every role makes before
 * it trusts a directory with keys, tokens, sockets or a database.
 *
 * A private directory is a real directory (not a symlink) owned by this
 * process's user that no other user can write. Secret files are written
 * atomically (temp file + rename) with mode 0600.
 *
 * @module
 */
import { errorMessage } from "./log.ts";

/** A directory or file that cannot be trusted; the message is one line. */
export class UnsafePathError extends Error {
  /** Creates an error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "UnsafePathError";
  }
}

/** `lstat`, or null when nothing is there. */
export async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** Our effective uid, learnt from a file created in `dir` (no `--allow-sys` needed). */
export async function ownUid(dir: string): Promise<number> {
  const probe = await Deno.makeTempFile({ dir, prefix: ".uid-" });
  try {
    return (await Deno.lstat(probe)).uid ?? -1;
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/** Options of {@link checkPrivateDir}. */
export interface PrivateDirOptions {
  /** Create the directory (and its parents) with mode 0700 when missing. */
  create?: boolean;
  /** Set the mode to exactly 0700 (default: only refuse group/other write). */
  exact0700?: boolean;
  /** What the directory is, for messages (e.g. "state dir"). */
  what: string;
}

/**
 * Checks (and optionally creates) a private directory; throws
 * {@link UnsafePathError} for a symlink, a non-directory, another owner, or
 * a directory that group or others can write.
 */
export async function checkPrivateDir(dir: string, options: PrivateDirOptions): Promise<void> {
  const what = options.what;
  let info = await lstatOrNull(dir);
  if (info === null) {
    if (!options.create) throw new UnsafePathError(`${what} ${dir} does not exist`);
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new UnsafePathError(`cannot create ${what} ${dir}: ${errorMessage(err)}`);
    }
    info = await Deno.lstat(dir);
  }
  if (info.isSymlink) {
    throw new UnsafePathError(`${what} ${dir} is a symlink; refusing (use the real path)`);
  }
  if (!info.isDirectory) throw new UnsafePathError(`${what} ${dir} is not a directory`);
  const uid = await ownUid(dir);
  if (info.uid !== null && info.uid !== uid) {
    throw new UnsafePathError(
      `${what} ${dir} is owned by uid ${info.uid}, not by this process (uid ${uid}); refusing`,
    );
  }
  const mode = (info.mode ?? 0) & 0o7777;
  if (options.exact0700) {
    if (mode !== 0o700) await Deno.chmod(dir, 0o700);
  } else if (mode & 0o022) {
    throw new UnsafePathError(
      `${what} ${dir} can be written by other users (mode ${
        mode.toString(8).padStart(4, "0")
      }); run \`chmod go-w ${dir}\``,
    );
  }
}

/** Options of {@link writeSecretFile}. */
export interface SecretFileOptions {
  /** File mode; default 0600. */
  mode?: number;
}

/** Writes `data` to `path` atomically (temp file + rename) with mode 0600 (or `mode`). */
export async function writeSecretFile(
  path: string,
  data: string | Uint8Array,
  options: SecretFileOptions = {},
): Promise<void> {
  const mode = options.mode ?? 0o600;
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    if (typeof data === "string") {
      await Deno.writeTextFile(tmp, data, { mode, createNew: true });
    } else {
      await Deno.writeFile(tmp, data, { mode, createNew: true });
    }
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}
