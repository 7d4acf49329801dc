import assert from "node:assert/strict";
import { parseHeader } from "./guest.ts";

Deno.test("parseHeader: exactly tag, sandbox id and kind", () => {
  assert.deepEqual(parseHeader("OPENSHELL-EGRESS/1 sb-1.a_b http"), {
    sandboxId: "sb-1.a_b",
    kind: "http",
  });
  assert.deepEqual(parseHeader("OPENSHELL-EGRESS/1 x dns"), { sandboxId: "x", kind: "dns" });
  for (
    const bad of [
      "",
      "OPENSHELL-EGRESS/1 x",
      "OPENSHELL-EGRESS/1  x http",
      "OPENSHELL-EGRESS/1 x http ",
      "OPENSHELL-EGRESS/1 x http\r",
      "openshell-egress/1 x http",
      "OPENSHELL-EGRESS/1 -x http",
      "OPENSHELL-EGRESS/1 a/b http",
      `OPENSHELL-EGRESS/1 ${"a".repeat(129)} http`,
      "OPENSHELL-EGRESS/1 x HTTP",
    ]
  ) {
    assert.equal(parseHeader(bad), undefined, JSON.stringify(bad));
  }
});
