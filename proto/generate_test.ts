import assert from "node:assert/strict";
import { renderDescriptorModule, renderTypesModule } from "./generate.ts";

const dir = new URL(".", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("proto/descriptors.ts is in sync with the .proto files (run `deno task proto`)", async () => {
  const committed = await Deno.readTextFile(`${dir}/descriptors.ts`);
  assert.ok(
    committed === renderDescriptorModule(dir),
    "proto/descriptors.ts is stale: run `deno task proto` and commit the result",
  );
});

Deno.test("proto/types.ts is in sync with the .proto files and LOADER_OPTIONS (run `deno task proto`)", async () => {
  const committed = await Deno.readTextFile(`${dir}/types.ts`);
  assert.ok(
    committed === renderTypesModule(dir),
    "proto/types.ts is stale: run `deno task proto` and commit the result",
  );
});
