/**
 * Relay tuning knobs read from the environment once at start. They exist so
 * the flow-control "before and after" figures in `docs/benchmarks.md` can be
 * reproduced against a real gateway process (`e2e/bench_gateway.ts windows`,
 * `hop`); production leaves them unset.
 *
 * - `OPENSHELL_H2_DEFAULT_WINDOWS=1` keeps HTTP/2's default 64 KiB
 *   flow-control windows instead of raising them to
 *   `H2_STREAM_WINDOW`/`H2_CONNECTION_WINDOW` (gateway/server.ts).
 * - `OPENSHELL_RELAY_CHUNK_BYTES=N` sets the largest payload of one relay
 *   `data` frame the gateway sends (default `RELAY_CHUNK_BYTES`,
 *   core/bridge.ts). It is applied once per relay, so it costs the hot path
 *   nothing.
 * - `OPENSHELL_H2_UNIX_HOP=1` makes the listeners forward every HTTP/2
 *   connection to grpc-js through the internal Unix sockets, as before
 *   issue 15, instead of handing it over in process (core/h2_forward.ts
 *   `injectH2`, the default: one fd per connection instead of three, and
 *   no second socket per relayed byte).
 *
 * @module
 */
import { RELAY_CHUNK_BYTES } from "../core/bridge.ts";
import { type EnvReader, FlagError } from "../core/flags.ts";

/** Environment name: keep HTTP/2 default windows when `1`/`true`. */
export const ENV_H2_DEFAULT_WINDOWS = "OPENSHELL_H2_DEFAULT_WINDOWS";
/** Environment name: largest relay frame payload the gateway sends, in bytes. */
export const ENV_RELAY_CHUNK_BYTES = "OPENSHELL_RELAY_CHUNK_BYTES";
/** Environment name: forward HTTP/2 through the internal Unix sockets when `1`/`true` (not default). */
export const ENV_H2_UNIX_HOP = "OPENSHELL_H2_UNIX_HOP";
/** Smallest accepted {@link ENV_RELAY_CHUNK_BYTES}. */
export const MIN_RELAY_CHUNK_BYTES = 1024;
/** Largest accepted {@link ENV_RELAY_CHUNK_BYTES} (well below the supervisor's 4 MiB message cap). */
export const MAX_RELAY_CHUNK_BYTES = 1024 * 1024;

/** The relay tuning in effect. */
export interface RelayTuning {
  /** Keep HTTP/2 default flow-control windows (benchmark baseline only). */
  defaultH2Windows: boolean;
  /** Largest relay `data` frame payload the gateway sends. */
  relayChunkBytes: number;
  /** Forward HTTP/2 through the internal Unix sockets (benchmark baseline; default in process). */
  unixHop: boolean;
}

function readBool(env: EnvReader, name: string): boolean {
  const raw = env(name)?.trim().toLowerCase() ?? "";
  if (["1", "true", "yes", "on"].includes(raw)) return true;
  if (["", "0", "false", "no", "off"].includes(raw)) return false;
  throw new FlagError(`${name}: expected true or false, got "${env(name)}"`);
}

/** Reads {@link RelayTuning} from `env`; throws a {@link FlagError} on a bad value. */
export function readRelayTuning(env: EnvReader): RelayTuning {
  const defaultH2Windows = readBool(env, ENV_H2_DEFAULT_WINDOWS);
  const unixHop = readBool(env, ENV_H2_UNIX_HOP);
  const rawChunk = env(ENV_RELAY_CHUNK_BYTES)?.trim() ?? "";
  let relayChunkBytes = RELAY_CHUNK_BYTES;
  if (rawChunk !== "") {
    const n = /^\d+$/.test(rawChunk) ? Number(rawChunk) : NaN;
    if (!(n >= MIN_RELAY_CHUNK_BYTES && n <= MAX_RELAY_CHUNK_BYTES)) {
      throw new FlagError(
        `${ENV_RELAY_CHUNK_BYTES}: expected a whole number of bytes from ${MIN_RELAY_CHUNK_BYTES} to ${MAX_RELAY_CHUNK_BYTES}, got "${rawChunk}"`,
      );
    }
    relayChunkBytes = n;
  }
  return { defaultH2Windows, relayChunkBytes, unixHop };
}
