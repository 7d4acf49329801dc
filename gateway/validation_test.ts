import assert from "node:assert/strict";
import type {
  CreateSandboxRequest,
  ExecSandboxRequest,
  SandboxSpec,
  SandboxTemplate,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import {
  DEFAULT_LIST_LIMIT,
  MAX_ENV_ENTRIES,
  MAX_EXEC_ARGS,
  MAX_EXEC_STDIN_BYTES,
  MAX_LIST_LIMIT,
  MAX_NAME_LEN,
  MAX_VALUE_BYTES,
  MAX_WORKDIR_BYTES,
  rejectControlChars,
  validateCreateSandbox,
  validateEnvironment,
  validateExec,
  validateName,
  validatePage,
} from "./validation.ts";

/** Asserts `fn` throws INVALID_ARGUMENT (or `code`) with a message matching `message`. */
function rejects(fn: () => unknown, message: RegExp, code: number = Code.INVALID_ARGUMENT): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof StatusError, `not a StatusError: ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

function spec(over: Partial<SandboxSpec> = {}): SandboxSpec {
  return { log_level: "", environment: {}, template: null, providers: [], gpu: false, ...over };
}

function template(over: Partial<SandboxTemplate> = {}): SandboxTemplate {
  return {
    image: "",
    runtime_class_name: "",
    agent_socket: "",
    labels: {},
    annotations: {},
    environment: {},
    resources: null,
    volume_claim_templates: null,
    ...over,
  };
}

function create(over: Partial<CreateSandboxRequest> = {}): CreateSandboxRequest {
  return { name: "", spec: spec(), ...over };
}

function exec(over: Partial<ExecSandboxRequest> = {}): ExecSandboxRequest {
  return {
    sandbox_id: "sb-1",
    command: ["echo", "hi"],
    workdir: "",
    environment: {},
    timeout_seconds: 0,
    stdin: new Uint8Array(),
    tty: false,
    ...over,
  };
}

// ---- names ---------------------------------------------------------------------

Deno.test("validateName: DNS-label names pass and are returned", () => {
  for (const n of ["a", "alpha", "a-b-c", "x1", "0abc", "a".repeat(MAX_NAME_LEN)]) {
    assert.equal(validateName(n), n);
  }
});

Deno.test("validateName: bad names name the field", () => {
  for (const n of ["", "Alpha", "-a", "a-", "a_b", "a.b", "a b", "é", "a\nb"]) {
    rejects(() => validateName(n), /^name: .* is not a valid sandbox name/);
  }
  rejects(() => validateName("a".repeat(MAX_NAME_LEN + 1)), /^name: longer than 63 characters/);
  rejects(() => validateName("Bad", "sandbox_name"), /^sandbox_name: "Bad"/);
});

Deno.test("validation messages stay on one line whatever the input holds", () => {
  const cases: (() => unknown)[] = [
    () => validateName("a\nb"),
    () => validateEnvironment({ "A\nB": "" }, "env"),
    () => validateEnvironment({ "OPENSHELL_PROVISION_\r\n": "" }, "env"),
    () => validateCreateSandbox(create({ spec: spec({ log_level: "info\nERROR fake" }) })),
  ];
  for (const fn of cases) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof StatusError);
      assert.doesNotMatch(e.message, /[\r\n]/);
      return true;
    });
  }
  rejects(() => validateName("a\nb"), /^name: "a\\nb" is not a valid sandbox name/);
});

// ---- environment ---------------------------------------------------------------

Deno.test("validateEnvironment: valid keys and values pass", () => {
  validateEnvironment({ A: "1", _x: "", LONG_NAME_2: "v".repeat(MAX_VALUE_BYTES) }, "env");
  validateEnvironment({ OPENSHELL_LOG: "debug" }, "env"); // only OPENSHELL_PROVISION_* is reserved
});

Deno.test("validateEnvironment: bad keys, reserved names, sizes and control chars", () => {
  rejects(
    () => validateEnvironment({ "1A": "x" }, "spec.environment"),
    /^spec\.environment: "1A" is not a valid variable name/,
  );
  rejects(() => validateEnvironment({ "A-B": "x" }, "env"), /^env: "A-B" is not a valid/);
  rejects(() => validateEnvironment({ "": "x" }, "env"), /^env: "" is not a valid/);
  rejects(
    () => validateEnvironment({ OPENSHELL_PROVISION_SSH_HOST_KEY: "k" }, "spec.environment"),
    /^spec\.environment: "OPENSHELL_PROVISION_SSH_HOST_KEY" is reserved/,
  );
  rejects(
    () => validateEnvironment({ OPENSHELL_PROVISION_ANYTHING: "k" }, "env"),
    /"OPENSHELL_PROVISION_ANYTHING" is reserved/,
  );
  rejects(
    () => validateEnvironment({ BIG: "v".repeat(MAX_VALUE_BYTES + 1) }, "env"),
    /^env\.BIG: longer than 32768 bytes/,
  );
  // size is counted in bytes, not characters
  rejects(
    () => validateEnvironment({ BIG: "é".repeat(MAX_VALUE_BYTES / 2 + 1) }, "env"),
    /^env\.BIG: longer than/,
  );
  rejects(() => validateEnvironment({ A: "x\0y" }, "env"), /^env\.A: contains a NUL byte/);
  rejects(() => validateEnvironment({ A: "x\ny" }, "env"), /^env\.A: contains a newline/);
  rejects(
    () => validateEnvironment({ A: "x\ry" }, "env"),
    /^env\.A: contains a newline or carriage return/,
  );
  const many = Object.fromEntries(
    Array.from({ length: MAX_ENV_ENTRIES + 1 }, (_, i) => [`K${i}`, ""]),
  );
  rejects(() => validateEnvironment(many, "env"), /^env: more than 256 entries/);
  const enough = Object.fromEntries(
    Array.from({ length: MAX_ENV_ENTRIES }, (_, i) => [`K${i}`, ""]),
  );
  validateEnvironment(enough, "env");
});

Deno.test("rejectControlChars: tabs are fine, NUL/CR/LF are not", () => {
  rejectControlChars("a\tb", "f");
  rejects(() => rejectControlChars("\0", "workdir"), /^workdir: contains a NUL byte/);
  rejects(() => rejectControlChars("\r", "workdir"), /^workdir: contains a newline/);
});

// ---- CreateSandbox ---------------------------------------------------------------

Deno.test("validateCreateSandbox: trims the name; empty means generate; null spec gets defaults", () => {
  assert.deepEqual(validateCreateSandbox(create({ name: "  alpha  " })).name, "alpha");
  assert.equal(validateCreateSandbox(create({ name: "" })).name, "");
  const { spec: s } = validateCreateSandbox(create({ spec: null }));
  assert.deepEqual(s, spec());
});

Deno.test("validateCreateSandbox: every field error names its field", () => {
  rejects(() => validateCreateSandbox(create({ name: "Bad_Name" })), /^name: /);
  rejects(
    () => validateCreateSandbox(create({ spec: spec({ log_level: "loud" }) })),
    /^spec\.log_level: "loud" is not one of error, warn, info, debug, trace/,
  );
  assert.doesNotThrow(() => validateCreateSandbox(create({ spec: spec({ log_level: "DEBUG" }) })));
  rejects(
    () => validateCreateSandbox(create({ spec: spec({ environment: { "BAD-KEY": "" } }) })),
    /^spec\.environment: "BAD-KEY"/,
  );
  rejects(
    () =>
      validateCreateSandbox(
        create({ spec: spec({ environment: { OPENSHELL_PROVISION_SUPERVISOR_TOKEN: "t" } }) }),
      ),
    /^spec\.environment: "OPENSHELL_PROVISION_SUPERVISOR_TOKEN" is reserved/,
  );
  rejects(
    () => validateCreateSandbox(create({ spec: spec({ providers: ["github"] }) })),
    /^spec\.providers: /,
    Code.FAILED_PRECONDITION,
  );
});

Deno.test("validateCreateSandbox: template fields are checked", () => {
  assert.doesNotThrow(() =>
    validateCreateSandbox(create({
      spec: spec({ template: template({ image: "img:1", labels: { a: "b" } }) }),
    }))
  );
  rejects(
    () => validateCreateSandbox(create({ spec: spec({ template: template({ image: "a\nb" }) }) })),
    /^spec\.template\.image: contains a newline/,
  );
  rejects(
    () =>
      validateCreateSandbox(
        create({ spec: spec({ template: template({ agent_socket: "x".repeat(1025) }) }) }),
      ),
    /^spec\.template\.agent_socket: longer than 1024 bytes/,
  );
  rejects(
    () =>
      validateCreateSandbox(
        create({
          spec: spec({ template: template({ environment: { OPENSHELL_PROVISION_X: "" } }) }),
        }),
      ),
    /^spec\.template\.environment: "OPENSHELL_PROVISION_X" is reserved/,
  );
  rejects(
    () =>
      validateCreateSandbox(
        create({ spec: spec({ template: template({ labels: { k: "v".repeat(4097) } }) }) }),
      ),
    /^spec\.template\.labels\.k: too long/,
  );
  rejects(
    () =>
      validateCreateSandbox(
        create({ spec: spec({ template: template({ annotations: { ["k".repeat(257)]: "" } }) }) }),
      ),
    /^spec\.template\.annotations\./,
  );
});

// ---- ExecSandbox -----------------------------------------------------------------

Deno.test("validateExec: a plain request passes", () => {
  validateExec(exec());
  validateExec(exec({
    workdir: "/tmp",
    environment: { A: "1" },
    stdin: new Uint8Array(MAX_EXEC_STDIN_BYTES),
    command: Array.from({ length: MAX_EXEC_ARGS }, () => "x"),
  }));
});

Deno.test("validateExec: each bad field is named", () => {
  rejects(() => validateExec(exec({ sandbox_id: "" })), /^sandbox_id is required/);
  rejects(() => validateExec(exec({ command: [] })), /^command is required/);
  rejects(
    () => validateExec(exec({ command: Array.from({ length: MAX_EXEC_ARGS + 1 }, () => "x") })),
    /^command: more than 1024 arguments/,
  );
  rejects(
    () => validateExec(exec({ command: ["echo", "a".repeat(MAX_VALUE_BYTES + 1)] })),
    /^command\[1\]: longer than 32768 bytes/,
  );
  rejects(() => validateExec(exec({ command: ["echo", "a\0"] })), /^command\[1\]: contains a NUL/);
  rejects(() => validateExec(exec({ command: ["a\nb"] })), /^command\[0\]: contains a newline/);
  rejects(() => validateExec(exec({ environment: { "X Y": "1" } })), /^environment: "X Y"/);
  rejects(() => validateExec(exec({ environment: { X: "a\rb" } })), /^environment\.X: contains/);
  rejects(
    () => validateExec(exec({ environment: { OPENSHELL_PROVISION_SSH_HOST_KEY: "" } })),
    /^environment: "OPENSHELL_PROVISION_SSH_HOST_KEY" is reserved/,
  );
  rejects(
    () => validateExec(exec({ workdir: "/" + "d".repeat(MAX_WORKDIR_BYTES) })),
    /^workdir: longer than 4096 bytes/,
  );
  rejects(() => validateExec(exec({ workdir: "/tmp\n" })), /^workdir: contains a newline/);
  rejects(
    () => validateExec(exec({ stdin: new Uint8Array(MAX_EXEC_STDIN_BYTES + 1) })),
    /^stdin: larger than 4194304 bytes/,
  );
});

// ---- paging ------------------------------------------------------------------------

Deno.test("validatePage: 0 is the default page, the maximum is enforced", () => {
  assert.deepEqual(validatePage(0, 0), { limit: DEFAULT_LIST_LIMIT, offset: 0 });
  assert.deepEqual(validatePage(5, 10), { limit: 5, offset: 10 });
  assert.deepEqual(validatePage(MAX_LIST_LIMIT, 0), { limit: MAX_LIST_LIMIT, offset: 0 });
  rejects(() => validatePage(MAX_LIST_LIMIT + 1, 0), /^limit: at most 1000/);
});
