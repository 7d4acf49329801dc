/**
 * POSIX shell quoting, for command lines that a remote shell parses
 * (`ExecSandbox` over SSH, `ssh … CMD` from the CLI, `ProxyCommand`).
 *
 * @module
 */

const SAFE = /^[A-Za-z0-9./_@%+=:,-]+$/;

/** Quotes one word so `sh` reads it back unchanged. */
export function shellQuote(word: string): string {
  if (word === "") return "''";
  if (SAFE.test(word)) return word;
  return `'${word.replaceAll("'", `'"'"'`)}'`;
}

/** Quotes each word and joins them with spaces. */
export function shellJoin(words: readonly string[]): string {
  return words.map(shellQuote).join(" ");
}

/** What {@link buildRemoteCommand} turns into one shell command line. */
export interface RemoteCommand {
  /** argv of the command. */
  command: readonly string[];
  /** Directory to run in (`cd DIR && …`). */
  workdir?: string;
  /** Variables set for the command (`KEY=value …`, sorted by key). */
  environment?: Readonly<Record<string, string>>;
}

/**
 * `[cd DIR && ]K1=v1 K2=v2 argv…` with every piece quoted. Variable names
 * are not quoted: callers validate them against `^[A-Za-z_][A-Za-z0-9_]*$`.
 */
export function buildRemoteCommand(spec: RemoteCommand): string {
  const env = Object.entries(spec.environment ?? {})
    .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    .map(([k, v]) => `${k}=${shellQuote(v)}`);
  const line = [...env, ...spec.command.map(shellQuote)].join(" ");
  return spec.workdir ? `cd ${shellQuote(spec.workdir)} && ${line}` : line;
}
