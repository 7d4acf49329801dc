/**
 * Name resolution and the host's own addresses, the two facts about the
 * outside world the proxy's decisions need. Both are injectable so tests
 * decide what a name resolves to.
 *
 * @module
 */
import { promises as dns } from "node:dns";
import { isIP } from "node:net";

/** Resolves a host name to addresses; `family` 0 = both. Rejects when it cannot. */
export type Resolver = (host: string, family: 0 | 4 | 6) => Promise<string[]>;

/** The host's own interface addresses (always refused as destinations). */
export type HostAddresses = () => readonly string[];

/** How long one resolution may take. */
export const RESOLVE_TIMEOUT_MS = 5000;

/** A resolver failure with one line saying why. */
export class ResolveError extends Error {
  /** The resolver did not answer in time (rather than: the name has no address). */
  readonly timedOut: boolean;

  /** Creates the error. */
  constructor(message: string, options: { timedOut?: boolean } = {}) {
    super(message);
    this.name = "ResolveError";
    this.timedOut = options.timedOut ?? false;
  }
}

/**
 * The system resolver (getaddrinfo through node:dns: /etc/hosts, then the
 * host's DNS), bounded by `timeoutMs`. IP literals resolve to themselves.
 */
export function systemResolver(timeoutMs = RESOLVE_TIMEOUT_MS): Resolver {
  return async (host, family) => {
    if (isIP(host)) return [host];
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ResolveError(`resolving ${host} took longer than ${timeoutMs} ms`, {
              timedOut: true,
            }),
          ),
        timeoutMs,
      );
    });
    try {
      const found = await Promise.race([
        dns.lookup(host, { all: true, family, verbatim: true }),
        timeout,
      ]);
      return found.map((a) => a.address);
    } catch (err) {
      if (err instanceof ResolveError) throw err;
      const code = (err as { code?: string }).code ?? (err as Error).message;
      throw new ResolveError(`cannot resolve ${host} (${code})`);
    } finally {
      clearTimeout(timer);
    }
  };
}

/**
 * The addresses of every interface of this host, read fresh on each call
 * (interfaces come and go); empty when this process may not read them.
 */
export function systemHostAddresses(): readonly string[] {
  try {
    return Deno.networkInterfaces().map((i) => i.address);
  } catch {
    return [];
  }
}
