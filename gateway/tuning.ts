/**
 * Relay tuning knobs read from the environment once at start. They exist so
 * the flow-control "before and after" figures in `docs/benchmarks.md` can be
 * reproduced against a real gateway process (`e2e/bench_gateway.ts windows`);
 * production leaves both unset.
 *
 * - `OPENSHELL_H2_DEFAULT_WINDOWS=1` keeps HTTP/2's default 64 KiB
 *   flow-control windows instead of raising them to
 *   `H2_STREAM_WINDOW`/`H2_CONNECTION_WINDOW` (gateway/server.ts).
 * - `OPENSHELL_RELAY_CHUNK_BYTES=N` sets the largest payload of one relay
 *   `data` frame the gateway sends (default `RELAY_CHUNK_BYTES`,
 *   core/bridge.ts). It is applied once per relay, so it costs the hot path
 *   nothing.
 *
 * @module
 */
import { RELAY_CHUNK_BYTES } from "../core/bridge.ts";
import { type EnvReader, FlagError } from "../core/flags.ts";

/** Environment name: keep HTTP/2 default windows when `1`/`true`. */
export const ENV_H2_DEFAULT_WINDOWS = "OPENSHELL_H2_DEFAULT_WINDOWS";
/** Environment name: largest relay frame payload the gateway sends, in bytes. */
export const ENV_RELAY_CHUNK_BYTES = "OPENSHELL_RELAY_CHUNK_BYTES";
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
}

/** Reads {@link RelayTuning} from `env`; throws a {@link FlagError} on a bad value. */
export function readRelayTuning(env: EnvReader): RelayTuning {
  const rawWindows = env(ENV_H2_DEFAULT_WINDOWS)?.trim().toLowerCase() ?? "";
  let defaultH2Windows: boolean;
  if (["1", "true", "yes", "on"].includes(rawWindows)) defaultH2Windows = true;
  else if (["", "0", "false", "no", "off"].includes(rawWindows)) defaultH2Windows = false;
  else {
    throw new FlagError(
      `${ENV_H2_DEFAULT_WINDOWS}: expected true or false, got "${env(ENV_H2_DEFAULT_WINDOWS)}"`,
    );
  }
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
  return { defaultH2Windows, relayChunkBytes };
}
