/**
 * Validation of API requests. Pure: every function returns the cleaned
 * value or throws a `StatusError(INVALID_ARGUMENT)` naming the field.
 *
 * @module
 */
import {
  type CreateSandboxRequest,
  type ExecSandboxRequest,
  OpenShellClient,
  type SandboxPolicy,
  type SandboxSpec,
  type SandboxTemplate,
  type UpdateConfigRequest,
  type Wire,
} from "../core/protocol.ts";
import { validatePolicy } from "../core/policy.ts";
import { isReservedVariable } from "../core/provisioning.ts";
import { buildRemoteCommand } from "../core/shell.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho, utf8Length } from "../core/text.ts";

/** Longest sandbox name (a DNS label). */
export const MAX_NAME_LEN = 63;
/** Most environment entries. */
export const MAX_ENV_ENTRIES = 256;
/** Longest environment variable name. */
export const MAX_ENV_KEY_BYTES = 256;
/** Longest environment value and exec argument. */
export const MAX_VALUE_BYTES = 32 * 1024;
/**
 * Largest sandbox spec, protobuf-encoded (environment, template, resources
 * and all). With {@link MAX_LIST_LIMIT} it bounds a `ListSandboxes` page:
 * 100 × (64 KiB + a few KiB of status) ≈ 6.6 MiB, under half the 16 MiB
 * message limit (gateway/server.ts `MAX_GRPC_MESSAGE`).
 */
export const MAX_SPEC_BYTES = 64 * 1024;
/** Longest exec command line (environment, `cd`, quoted argv), as upstream. */
export const MAX_EXEC_COMMAND_BYTES = 256 * 1024;
/** Most exec arguments. */
export const MAX_EXEC_ARGS = 1024;
/** Longest exec working directory. */
export const MAX_WORKDIR_BYTES = 4096;
/** Largest exec stdin payload. */
export const MAX_EXEC_STDIN_BYTES = 4 * 1024 * 1024;
/** Largest page of ListSandboxes (see {@link MAX_SPEC_BYTES}). */
export const MAX_LIST_LIMIT = 100;
/** Page size when the request says 0. */
export const DEFAULT_LIST_LIMIT = 100;
/**
 * Largest policy, protobuf-encoded: the same budget as a whole sandbox
 * spec (a create-time policy counts against {@link MAX_SPEC_BYTES}).
 */
export const MAX_POLICY_BYTES = MAX_SPEC_BYTES;

const NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LOG_LEVELS = ["", "error", "warn", "info", "debug", "trace"];

function invalid(message: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, message);
}

function bytes(s: string): number {
  return utf8Length(s);
}

/** A sandbox name: lower-case letters, digits and '-', 1..63, not starting or ending with '-'. */
export function validateName(name: string, field = "name"): string {
  if (bytes(name) > MAX_NAME_LEN) {
    throw invalid(`${field}: longer than ${MAX_NAME_LEN} characters`);
  }
  if (!NAME.test(name)) {
    const quoted = JSON.stringify(truncateForEcho(name)); // escapes control characters: one line
    throw invalid(
      `${field}: ${quoted} is not a valid sandbox name (lower-case letters, digits and '-', starting and ending with a letter or digit)`,
    );
  }
  return name;
}

/** Rejects NUL, CR and LF. */
export function rejectControlChars(value: string, field: string): void {
  if (value.includes("\0")) throw invalid(`${field}: contains a NUL byte`);
  if (/[\r\n]/.test(value)) throw invalid(`${field}: contains a newline or carriage return`);
}

/** An environment map: keys like shell variables, bounded values without NUL/CR/LF. */
export function validateEnvironment(env: Record<string, string>, field: string): void {
  const keys = Object.keys(env);
  if (keys.length > MAX_ENV_ENTRIES) {
    throw invalid(`${field}: more than ${MAX_ENV_ENTRIES} entries`);
  }
  for (const k of keys) {
    if (bytes(k) > MAX_ENV_KEY_BYTES) {
      throw invalid(
        `${field}: ${JSON.stringify(truncateForEcho(k))} is longer than ${MAX_ENV_KEY_BYTES} bytes`,
      );
    }
    if (!ENV_KEY.test(k)) {
      throw invalid(
        `${field}: ${JSON.stringify(k)} is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$)`,
      );
    }
    if (isReservedVariable(k)) throw invalid(`${field}: ${JSON.stringify(k)} is reserved`);
    if (bytes(env[k]) > MAX_VALUE_BYTES) {
      throw invalid(`${field}.${k}: longer than ${MAX_VALUE_BYTES} bytes`);
    }
    rejectControlChars(env[k], `${field}.${k}`);
  }
}

function validateTemplate(t: SandboxTemplate): void {
  for (
    const [field, value] of [["image", t.image], ["runtime_class_name", t.runtime_class_name], [
      "agent_socket",
      t.agent_socket,
    ]] as const
  ) {
    if (bytes(value) > 1024) throw invalid(`spec.template.${field}: longer than 1024 bytes`);
    rejectControlChars(value, `spec.template.${field}`);
  }
  validateEnvironment(t.environment ?? {}, "spec.template.environment");
  for (const [field, map] of [["labels", t.labels], ["annotations", t.annotations]] as const) {
    const entries = Object.entries(map ?? {});
    if (entries.length > MAX_ENV_ENTRIES) {
      throw invalid(`spec.template.${field}: more than ${MAX_ENV_ENTRIES} entries`);
    }
    for (const [k, v] of entries) {
      if (bytes(k) > 256 || bytes(v) > 4096) {
        throw invalid(
          `spec.template.${field}.${
            JSON.stringify(truncateForEcho(k))
          }: too long (keys up to 256 bytes, values up to 4096)`,
        );
      }
    }
  }
}

const createSandboxMethod = OpenShellClient.service.CreateSandbox;

/** Bytes `spec` takes protobuf-encoded, as the spec field of a `CreateSandboxRequest`. */
export function specBytes(spec: SandboxSpec): number {
  return createSandboxMethod.requestSerialize({ spec }).length;
}

const updateConfigMethod = (OpenShellClient.service as unknown as Record<
  string,
  { requestSerialize(value: unknown): Uint8Array }
>).UpdateConfig;

/** Bytes `policy` takes protobuf-encoded (as the policy field of an `UpdateConfigRequest`). */
export function policyBytes(policy: Wire<SandboxPolicy>): number {
  return updateConfigMethod.requestSerialize({ policy }).length;
}

/**
 * Checks a policy with `validatePolicy` (core/policy.ts): INVALID_ARGUMENT
 * naming the first bad field under `field` (`spec.policy` or `policy`),
 * with how many more problems there are.
 */
export function checkPolicy(policy: Wire<SandboxPolicy> | null | undefined, field: string): void {
  const errors = validatePolicy(policy);
  if (errors.length === 0) return;
  const first = errors[0].replace(/^policy\b/, field);
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more problems)` : "";
  throw invalid(`${first}${more}`);
}

/** Validates an `UpdateConfigRequest`: only a sandbox's policy may be set. */
export function validateUpdateConfig(
  req: UpdateConfigRequest,
): { name: string; policy: Wire<SandboxPolicy> } {
  if (req.global) {
    throw invalid("global: only a sandbox's own policy can be set (name the sandbox, no global)");
  }
  if (req.setting_key) {
    throw invalid(
      `setting_key: settings are not supported by this gateway (${
        JSON.stringify(truncateForEcho(req.setting_key))
      }); send a policy only`,
    );
  }
  if (req.delete_setting) {
    throw invalid("delete_setting: settings are not supported by this gateway; send a policy only");
  }
  if (!req.name) throw invalid("name is required");
  if (!req.policy) {
    throw invalid("policy is required (a policy without network_policies denies everything)");
  }
  const encoded = policyBytes(req.policy);
  if (encoded > MAX_POLICY_BYTES) {
    throw invalid(`policy: ${encoded} bytes encoded, at most ${MAX_POLICY_BYTES}`);
  }
  checkPolicy(req.policy, "policy");
  return { name: req.name, policy: req.policy };
}

/** Validates a `CreateSandboxRequest`; returns the name (empty = generate one) and the spec. */
export function validateCreateSandbox(
  req: CreateSandboxRequest,
): { name: string; spec: SandboxSpec } {
  const name = req.name.trim();
  if (name) validateName(name);
  const spec: SandboxSpec = req.spec ?? {
    log_level: "",
    environment: {},
    template: null,
    policy: null,
    providers: [],
    gpu: false,
  };
  const encoded = specBytes(spec);
  if (encoded > MAX_SPEC_BYTES) {
    throw invalid(
      `spec: ${encoded} bytes encoded, at most ${MAX_SPEC_BYTES} (environment, template and resources together)`,
    );
  }
  if (!LOG_LEVELS.includes(spec.log_level.toLowerCase())) {
    throw invalid(
      `spec.log_level: ${JSON.stringify(truncateForEcho(spec.log_level))} is not one of ${
        LOG_LEVELS.slice(1).join(", ")
      }`,
    );
  }
  validateEnvironment(spec.environment ?? {}, "spec.environment");
  if (spec.providers.length > 0) {
    throw new StatusError(Code.FAILED_PRECONDITION, "spec.providers: providers are not supported");
  }
  if (spec.template) validateTemplate(spec.template);
  checkPolicy(spec.policy, "spec.policy");
  return { name, spec };
}

/** Validates an `ExecSandboxRequest`. */
export function validateExec(req: ExecSandboxRequest): void {
  if (!req.sandbox_id) throw invalid("sandbox_id is required");
  if (req.command.length === 0) throw invalid("command is required");
  if (req.command.length > MAX_EXEC_ARGS) {
    throw invalid(`command: more than ${MAX_EXEC_ARGS} arguments`);
  }
  req.command.forEach((arg, i) => {
    if (bytes(arg) > MAX_VALUE_BYTES) {
      throw invalid(`command[${i}]: longer than ${MAX_VALUE_BYTES} bytes`);
    }
    rejectControlChars(arg, `command[${i}]`);
  });
  validateEnvironment(req.environment ?? {}, "environment");
  if (req.workdir) {
    if (bytes(req.workdir) > MAX_WORKDIR_BYTES) {
      throw invalid(`workdir: longer than ${MAX_WORKDIR_BYTES} bytes`);
    }
    rejectControlChars(req.workdir, "workdir");
  }
  if (req.stdin.length > MAX_EXEC_STDIN_BYTES) {
    throw invalid(`stdin: larger than ${MAX_EXEC_STDIN_BYTES} bytes`);
  }
  const line = bytes(buildRemoteCommand({
    command: req.command,
    workdir: req.workdir || undefined,
    environment: req.environment,
  }));
  if (line > MAX_EXEC_COMMAND_BYTES) {
    throw invalid(
      `command: the command line (environment, workdir and quoted arguments) is ${line} bytes, at most ${MAX_EXEC_COMMAND_BYTES}`,
    );
  }
}

/** Clamps ListSandboxes paging (0 = default page). */
export function validatePage(limit: number, offset: number): { limit: number; offset: number } {
  if (limit > MAX_LIST_LIMIT) {
    throw invalid(`limit: at most ${MAX_LIST_LIMIT} (page through with offset)`);
  }
  return { limit: limit === 0 ? DEFAULT_LIST_LIMIT : limit, offset };
}
