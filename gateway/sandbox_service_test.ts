import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { SandboxLogLine } from "../core/protocol.ts";
import { logLineMatches, publicSandbox } from "./sandbox_service.ts";
import { hashToken, newToken, tokenMatches } from "./tokens.ts";

function line(over: Partial<SandboxLogLine> = {}): SandboxLogLine {
  return {
    sandbox_id: "sb-1",
    timestamp_ms: 1_000,
    level: "INFO",
    target: "openshell_gateway",
    message: "m",
    source: "gateway",
    fields: {},
    ...over,
  };
}

const ALL = { sinceMs: 0, sources: [] as string[], minLevel: "" };

Deno.test("logLineMatches: no filter passes everything", () => {
  assert.equal(logLineMatches(line(), ALL), true);
  assert.equal(logLineMatches(line({ level: "TRACE", source: "console" }), ALL), true);
});

Deno.test("logLineMatches: since_ms keeps lines at or after it", () => {
  const f = { ...ALL, sinceMs: 1_000 };
  assert.equal(logLineMatches(line({ timestamp_ms: 999 }), f), false);
  assert.equal(logLineMatches(line({ timestamp_ms: 1_000 }), f), true);
  assert.equal(logLineMatches(line({ timestamp_ms: 1_001 }), f), true);
});

Deno.test("logLineMatches: sources; an empty source counts as gateway", () => {
  const consoleOnly = { ...ALL, sources: ["console"] };
  assert.equal(logLineMatches(line({ source: "console" }), consoleOnly), true);
  assert.equal(logLineMatches(line({ source: "gateway" }), consoleOnly), false);
  assert.equal(logLineMatches(line({ source: "" }), consoleOnly), false);
  const gatewayOnly = { ...ALL, sources: ["gateway"] };
  assert.equal(logLineMatches(line({ source: "" }), gatewayOnly), true);
  assert.equal(
    logLineMatches(line({ source: "console" }), { ...ALL, sources: ["gateway", "console"] }),
    true,
  );
});

Deno.test("logLineMatches: min_level keeps that level and more severe ones", () => {
  const warn = { ...ALL, minLevel: "warn" };
  assert.equal(logLineMatches(line({ level: "ERROR" }), warn), true);
  assert.equal(logLineMatches(line({ level: "WARN" }), warn), true);
  assert.equal(logLineMatches(line({ level: "warn" }), warn), true, "case-insensitive");
  assert.equal(logLineMatches(line({ level: "INFO" }), warn), false);
  assert.equal(logLineMatches(line({ level: "DEBUG" }), warn), false);
  assert.equal(logLineMatches(line({ level: "TRACE" }), { ...ALL, minLevel: "TRACE" }), true);
  assert.equal(logLineMatches(line({ level: "DEBUG" }), { ...ALL, minLevel: "INFO" }), false);
  // an unknown line level ranks as INFO
  assert.equal(logLineMatches(line({ level: "NOTICE" }), { ...ALL, minLevel: "info" }), true);
  assert.equal(logLineMatches(line({ level: "NOTICE" }), warn), false);
  // an unknown minimum filters nothing
  assert.equal(logLineMatches(line({ level: "TRACE" }), { ...ALL, minLevel: "verbose" }), true);
});

Deno.test("logLineMatches: all filters apply together", () => {
  const f = { sinceMs: 500, sources: ["console"], minLevel: "info" };
  assert.equal(logLineMatches(line({ source: "console", timestamp_ms: 600 }), f), true);
  assert.equal(logLineMatches(line({ source: "console", timestamp_ms: 400 }), f), false);
  assert.equal(logLineMatches(line({ source: "gateway", timestamp_ms: 600 }), f), false);
  assert.equal(
    logLineMatches(line({ source: "console", timestamp_ms: 600, level: "DEBUG" }), f),
    false,
  );
});

Deno.test("tokens: 32 random bytes as base64url, never repeated; matched by hash only", () => {
  const tokens = new Set(Array.from({ length: 100 }, newToken));
  assert.equal(tokens.size, 100);
  for (const t of tokens as Set<string>) {
    assert.match(t, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(t, "base64url").length, 32);
  }
  const [a, b] = [...tokens];
  assert.match(hashToken(a), /^[0-9a-f]{64}$/);
  assert.ok(tokenMatches(a, hashToken(a)));
  assert.ok(!tokenMatches(b, hashToken(a)));
  assert.ok(!tokenMatches("", hashToken(a)));
  assert.ok(!tokenMatches(undefined, hashToken(a)));
});

Deno.test("publicSandbox: environment values are write-only, names stay", () => {
  const s = {
    id: "i",
    name: "n",
    namespace: "default",
    spec: {
      log_level: "",
      environment: { OPENAI_API_KEY: "sk-secret", B: "2" },
      gpu: false,
      template: { image: "", environment: { TEMPLATE_SECRET: "tpl-secret" } },
    },
    status: null,
    phase: "SANDBOX_PHASE_READY",
    created_at_ms: 1,
    current_policy_version: 0,
  } as unknown as Parameters<typeof publicSandbox>[0];
  const shown = publicSandbox(s);
  assert.deepEqual(shown.spec?.environment, { OPENAI_API_KEY: "", B: "" });
  assert.ok(!JSON.stringify(shown).includes("sk-secret"));
  assert.ok(!JSON.stringify(shown).includes("tpl-secret"), "template environment values too");
  assert.deepEqual(shown.spec?.template?.environment, { TEMPLATE_SECRET: "" });
  assert.equal(s.spec?.environment.OPENAI_API_KEY, "sk-secret");
});
