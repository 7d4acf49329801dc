import assert from "node:assert/strict";
import {
  type CreateSandboxRequest,
  type ExecSandboxRequest,
  OpenShellClient,
  type Sandbox,
  type SandboxSpec,
  type SandboxTemplate,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { MAX_GRPC_MESSAGE, MAX_GRPC_RECEIVE } from "./server.ts";
import { largestSpec } from "../testing/gateway.ts";
import {
  DEFAULT_LIST_LIMIT,
  MAX_ENV_ENTRIES,
  MAX_ENV_KEY_BYTES,
  MAX_EXEC_ARGS,
  MAX_EXEC_COMMAND_BYTES,
  MAX_EXEC_STDIN_BYTES,
  MAX_LIST_LIMIT,
  MAX_NAME_LEN,
  MAX_SPEC_BYTES,
  MAX_VALUE_BYTES,
  MAX_WORKDIR_BYTES,
  rejectControlChars,
  specBytes,
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
  return {
    log_level: "",
    environment: {},
    template: null,
    policy: null,
    providers: [],
    gpu: false,
    ...over,
  };
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
    /^spec\.template\.labels\."k": too long/,
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

Deno.test("validateExec: the whole command line is at most 256 KiB", () => {
  const args = Array.from({ length: 8 }, () => "a".repeat(MAX_VALUE_BYTES));
  validateExec(exec({ command: args.slice(0, 7) }));
  rejects(
    () => validateExec(exec({ command: [...args, "b"] })),
    /^command: the command line .* is 262153 bytes, at most 262144/,
  );
  // quoting counts: two values of 32 KiB of single quotes quote to 5 bytes each
  const quotes = "'".repeat(MAX_VALUE_BYTES);
  rejects(
    () => validateExec(exec({ command: ["true"], environment: { A: quotes, B: quotes } })),
    /^command: the command line/,
  );
  // the largest valid request fits the receive limit
  const req = exec({
    command: args.slice(0, 7),
    workdir: "/" + "d".repeat(MAX_WORKDIR_BYTES - 1),
    stdin: new Uint8Array(MAX_EXEC_STDIN_BYTES),
  });
  validateExec(req);
  const method = OpenShellClient.service.ExecSandbox;
  const size = method.requestSerialize(req).length;
  assert.ok(size <= MAX_EXEC_STDIN_BYTES + MAX_EXEC_COMMAND_BYTES + 64 * 1024, `${size}`);
  assert.ok(size < MAX_GRPC_RECEIVE, `${size} bytes must fit ${MAX_GRPC_RECEIVE}`);
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
  rejects(() => validatePage(MAX_LIST_LIMIT + 1, 0), /^limit: at most 100 \(page through/);
});

// ---- sizes: echoes, specs and pages ---------------------------------------------------

Deno.test("echoed values are truncated: a 1 MiB value yields a short message", () => {
  const huge = "A".repeat(1024 * 1024);
  const cases: (() => unknown)[] = [
    () => validateName(huge.toLowerCase().slice(0, 64) + "_"),
    () => validateEnvironment({ [huge]: "" }, "env"),
    () => validateEnvironment({ [huge.slice(0, 200) + "-"]: "" }, "env"),
    () => validateCreateSandbox(create({ spec: spec({ log_level: huge.slice(0, 60_000) }) })),
    () =>
      validateCreateSandbox(
        create({ spec: spec({ template: template({ labels: { [huge.slice(0, 5000)]: "" } }) }) }),
      ),
  ];
  for (const fn of cases) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof StatusError);
      assert.ok(e.message.length < 400, `${e.message.length}: ${e.message.slice(0, 120)}`);
      return true;
    });
  }
  rejects(
    () => validateEnvironment({ ["K".repeat(MAX_ENV_KEY_BYTES + 1)]: "" }, "env"),
    /^env: "K{128}…\(257 chars\)" is longer than 256 bytes/,
  );
});

Deno.test("validateCreateSandbox: the whole spec is at most 64 KiB encoded", () => {
  const largest = largestSpec();
  assert.ok(specBytes(largest) <= MAX_SPEC_BYTES);
  assert.ok(specBytes(largest) > MAX_SPEC_BYTES - 64, "the helper really fills the budget");
  validateCreateSandbox(create({ spec: largest }));
  const over = spec({ environment: { ...largest.environment, Z: "z" } });
  rejects(
    () => validateCreateSandbox(create({ spec: over })),
    /^spec: \d+ bytes encoded, at most 65536/,
  );
  // resources and platform_config count too (they were not checked at all before)
  const struct = { fields: { blob: { stringValue: "s".repeat(MAX_SPEC_BYTES) } } };
  rejects(
    () =>
      validateCreateSandbox(
        create({ spec: spec({ template: template({ resources: struct as never }) }) }),
      ),
    /^spec: \d+ bytes encoded/,
  );
});

Deno.test("a full page of the largest sandboxes fits in one message with room to spare", () => {
  const largest = largestSpec();
  const record = (i: number): Sandbox => ({
    id: crypto.randomUUID(),
    name: `s${i}`.padEnd(MAX_NAME_LEN, "x"),
    namespace: "default",
    spec: largest,
    status: {
      sandbox_name: `s${i}`.padEnd(MAX_NAME_LEN, "x"),
      agent_pod: "",
      agent_fd: "",
      sandbox_fd: "",
      // generous: the gateway keeps one Ready condition with a short message
      conditions: Array.from({ length: 4 }, () => ({
        type: "Ready",
        status: "False",
        reason: "r".repeat(64),
        message: "m".repeat(1024),
        last_transition_time: new Date().toISOString(),
      })),
    },
    phase: "SANDBOX_PHASE_READY",
    created_at_ms: Date.now(),
    current_policy_version: 0,
  });
  const method = OpenShellClient.service.ListSandboxes;
  const page = method.responseSerialize({
    sandboxes: Array.from({ length: MAX_LIST_LIMIT }, (_, i) => record(i)),
  }).length;
  assert.ok(
    page <= MAX_GRPC_MESSAGE / 2,
    `a page of ${MAX_LIST_LIMIT} is ${page} bytes; the limit is ${MAX_GRPC_MESSAGE}`,
  );
});
