import assert from "node:assert/strict";
import {
  DISK_RESOURCE,
  fromStruct,
  limitsStruct,
  parseBytes,
  parseCpu,
  ResourceError,
  toStruct,
} from "./resources.ts";

Deno.test("resources: CPU quantities in millicores", () => {
  assert.equal(parseCpu("2"), 2000);
  assert.equal(parseCpu(" 1.5 "), 1500);
  assert.equal(parseCpu("500m"), 500);
  assert.equal(parseCpu(".25"), 250);
  assert.equal(parseCpu("0.0001"), 1, "rounded up, never zero");
  for (const bad of ["", "0", "0m", "-1", "2 cores", "1e3", "two", "2Gi", "x".repeat(100)]) {
    assert.throws(() => parseCpu(bad, "--cpus"), ResourceError, bad);
  }
  assert.throws(() => parseCpu("abc", "--cpus"), /^ResourceError: --cpus must be a number of CPUs/);
  // A long value is echoed cut short.
  assert.throws(() => parseCpu("9".repeat(500)), (e: Error) => e.message.length < 150);
});

Deno.test("resources: byte quantities, binary and decimal suffixes", () => {
  assert.equal(parseBytes("2Gi"), 2 * 2 ** 30);
  assert.equal(parseBytes("1536Mi"), 1536 * 2 ** 20);
  assert.equal(parseBytes("1.5Gi"), 1.5 * 2 ** 30);
  assert.equal(parseBytes("2G"), 2e9);
  assert.equal(parseBytes("512k"), 512e3);
  assert.equal(parseBytes("1073741824"), 2 ** 30);
  assert.equal(parseBytes("1Ti"), 2 ** 40);
  for (const bad of ["", "0", "0Gi", "2gb", "2GB", "2 Gi", "-1Gi", "100m", "9999999Pi", "Gi"]) {
    assert.throws(() => parseBytes(bad), ResourceError, bad);
  }
  assert.throws(() => parseBytes("lots", "--memory"), /^ResourceError: --memory must be a size/);
});

Deno.test("resources: Struct round trip as proto-loader carries it", () => {
  const json = { limits: { cpu: "2", memory: "2Gi" }, n: 3, ok: true, none: null, l: ["a", 1] };
  const struct = toStruct(json);
  assert.deepEqual(struct, {
    fields: {
      limits: {
        structValue: {
          fields: { cpu: { stringValue: "2" }, memory: { stringValue: "2Gi" } },
        },
      },
      n: { numberValue: 3 },
      ok: { boolValue: true },
      none: { nullValue: "NULL_VALUE" },
      l: { listValue: { values: [{ stringValue: "a" }, { numberValue: 1 }] } },
    },
  });
  assert.deepEqual(fromStruct(struct), json);
  // Decoded with oneofs, each value also names its kind; the kind wins.
  assert.deepEqual(
    fromStruct({ fields: { a: { stringValue: "x", numberValue: 0, kind: "stringValue" } } }),
    { a: "x" },
  );
  assert.equal(fromStruct(null), undefined);
  assert.equal(fromStruct({}), undefined);
  // Hostile nesting is cut off, not followed.
  let deep: Record<string, unknown> = { fields: {} };
  for (let i = 0; i < 50; i++) deep = { fields: { d: { structValue: deep } } };
  let v: unknown = fromStruct(deep);
  let depth = 0;
  while (v && typeof v === "object") {
    v = (v as Record<string, unknown>).d;
    depth++;
  }
  assert.ok(depth <= 10, `followed ${depth} levels`);
});

Deno.test("resources: the CLI's limits are upstream's Kubernetes shape, the disk as ephemeral-storage", () => {
  assert.equal(limitsStruct({}), undefined);
  assert.deepEqual(fromStruct(limitsStruct({ cpu: "2", memory: "2Gi", disk: "20Gi" })), {
    limits: { cpu: "2", memory: "2Gi", [DISK_RESOURCE]: "20Gi" },
  });
  assert.deepEqual(fromStruct(limitsStruct({ memory: " 1Gi " })), { limits: { memory: "1Gi" } });
  assert.throws(() => limitsStruct({ cpu: "0" }), ResourceError);
  assert.throws(() => limitsStruct({ memory: "lots" }), /memory must be a size/);
  assert.throws(() => limitsStruct({ disk: "20" + "x" }), /disk must be a size/);
});
