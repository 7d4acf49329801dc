import assert from "node:assert/strict";
import { RELAY_CHUNK_BYTES } from "../core/bridge.ts";
import { FlagError } from "../core/flags.ts";
import { ENV_H2_DEFAULT_WINDOWS, ENV_RELAY_CHUNK_BYTES, readRelayTuning } from "./tuning.ts";

function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

Deno.test("relay tuning: unset means raised windows and the default chunk", () => {
  assert.deepEqual(readRelayTuning(envOf({})), {
    defaultH2Windows: false,
    relayChunkBytes: RELAY_CHUNK_BYTES,
  });
});

Deno.test("relay tuning: both knobs are read", () => {
  assert.deepEqual(
    readRelayTuning(envOf({ [ENV_H2_DEFAULT_WINDOWS]: "1", [ENV_RELAY_CHUNK_BYTES]: "262144" })),
    { defaultH2Windows: true, relayChunkBytes: 262144 },
  );
  assert.equal(readRelayTuning(envOf({ [ENV_H2_DEFAULT_WINDOWS]: "false" })).defaultH2Windows, false);
});

Deno.test("relay tuning: bad values are one-line FlagErrors naming the variable", () => {
  for (const v of ["0", "512", "abc", "1e5", "-65536", "2000000"]) {
    assert.throws(
      () => readRelayTuning(envOf({ [ENV_RELAY_CHUNK_BYTES]: v })),
      (e: Error) =>
        e instanceof FlagError && e.message.startsWith(`${ENV_RELAY_CHUNK_BYTES}: `) &&
        !e.message.includes("\n"),
    );
  }
  assert.throws(
    () => readRelayTuning(envOf({ [ENV_H2_DEFAULT_WINDOWS]: "maybe" })),
    new FlagError(`${ENV_H2_DEFAULT_WINDOWS}: expected true or false, got "maybe"`),
  );
});
