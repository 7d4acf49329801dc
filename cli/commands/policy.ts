/**
 * `openshell policy set|get|list`: a sandbox's network policy, changed
 * live (`UpdateConfig`) and inspected (`GetSandboxPolicyStatus`,
 * `ListSandboxPolicies`); and {@link policyFromFlags}, the policy that
 * `--policy`, `--preset` and `--allow` describe (also used by
 * `sandbox create`).
 *
 * @module
 */
import type { SandboxPolicy, SandboxPolicyRevision, Wire } from "../../core/protocol.ts";
import { stripControls } from "../../core/text.ts";
import { UsageError } from "../args.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { formatAge, renderTable, type Style, toJson } from "../output.ts";
import {
  composePolicy,
  PolicyInputError,
  readPolicyFile,
  renderPolicyYaml,
} from "../policy_file.ts";

/** Default seconds `policy set --wait` waits. */
export const DEFAULT_WAIT_S = 30;
/** How often `--wait` asks for the status. */
const WAIT_POLL_MS = 200;

/**
 * The policy of `--policy FILE`, `--preset NAME`… and `--allow HOST[:PORT]`…
 * together; undefined when none of them is given. A bad flag value is a
 * usage error, a bad file a one-line error naming it.
 */
export async function policyFromFlags(ctx: Context): Promise<Wire<SandboxPolicy> | undefined> {
  const command = ctx.invocation.spec.id;
  try {
    const path = ctx.str("policy");
    return composePolicy({
      file: path === undefined ? undefined : await readPolicyFile(path),
      presets: ctx.list("preset"),
      allow: ctx.list("allow"),
    });
  } catch (err) {
    if (!(err instanceof PolicyInputError)) throw err;
    if (/^--(allow|preset) /.test(err.message)) throw new UsageError(err.message, command);
    throw new CliError(err.message);
  }
}

/** `Loaded`, `Pending`… */
export function statusLabel(status: string): string {
  const s = status.replace(/^POLICY_STATUS_/, "").toLowerCase();
  return s ? s[0].toUpperCase() + s.slice(1) : "Unknown";
}

function styledStatus(status: string, style: Style): string {
  const label = statusLabel(status);
  if (status === "POLICY_STATUS_LOADED") return style.green(label);
  if (status === "POLICY_STATUS_FAILED") return style.red(label);
  if (status === "POLICY_STATUS_PENDING") return style.yellow(label);
  return style.dim(label);
}

function ruleCount(policy: Wire<SandboxPolicy> | null | undefined): number {
  return Object.keys(policy?.network_policies ?? {}).length;
}

/** `policy set NAME (--policy FILE | --preset NAME… | --allow HOST[:PORT]…) [--wait] [--timeout S]`. */
export async function policySetCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  const timeoutS = ctx.num("timeout") ?? DEFAULT_WAIT_S;
  const policy = await policyFromFlags(ctx);
  if (!policy) {
    throw new UsageError(
      "policy set needs --policy FILE, --preset NAME or --allow HOST[:PORT] (a file with " +
        "`network_policies: {}` denies everything)",
      "policy set",
    );
  }
  const client = await ctx.client();
  const res = await client.updatePolicy(name, policy);
  ctx.err(
    `Policy version ${res.version} set for sandbox ${ctx.errStyle.cyan(name)} ` +
      `(${ruleCount(policy)} rules, sha256 ${res.policy_hash.slice(0, 12)})\n`,
  );
  if (!ctx.flag("wait")) return 0;
  ctx.handleInterrupts();
  const deadline = Date.now() + timeoutS * 1000;
  while (true) {
    const { revision } = await client.getSandboxPolicyStatus(name, res.version);
    const status = revision?.status ?? "POLICY_STATUS_UNSPECIFIED";
    if (status === "POLICY_STATUS_LOADED") {
      ctx.err(`Policy version ${res.version} is loaded: new connections follow it\n`);
      return 0;
    }
    if (status === "POLICY_STATUS_FAILED") {
      throw new CliError(
        `policy version ${res.version} was refused by the egress proxy: ` +
          `${stripControls(revision?.load_error ?? "") || "no reason given"}; the previous ` +
          "version stays enforced",
      );
    }
    if (status === "POLICY_STATUS_SUPERSEDED") {
      throw new CliError(
        `policy version ${res.version} was superseded by a newer one before it loaded ` +
          `(see 'openshell policy list ${name}')`,
      );
    }
    if (ctx.interrupt.aborted) throw new CliError("cancelled while waiting", 130);
    if (Date.now() >= deadline) {
      throw new CliError(
        `policy version ${res.version} is still pending after ${timeoutS} s: the gateway's ` +
          `egress proxy has not loaded it (see 'openshell gateway logs'); it will apply once ` +
          "the proxy is back",
      );
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, WAIT_POLL_MS);
      function done() {
        clearTimeout(timer);
        ctx.interrupt.removeEventListener("abort", done);
        resolve();
      }
      ctx.interrupt.addEventListener("abort", done, { once: true });
    });
  }
}

/** The text of one revision (`policy get`). */
export function revisionDetails(
  rev: SandboxPolicyRevision,
  activeVersion: number,
  nowMs: number,
  style: Style,
): string {
  const time = (ms: number) =>
    ms ? `${new Date(ms).toISOString()} (${formatAge(ms, nowMs)} ago)` : "-";
  const rows: [string, string][] = [
    ["Version", `${rev.version}${rev.version === activeVersion ? " (enforced now)" : ""}`],
    ["Status", styledStatus(rev.status, style)],
    ["Hash", `sha256:${stripControls(rev.policy_hash)}`],
    ["Created", time(rev.created_at_ms)],
    ["Loaded", time(rev.loaded_at_ms)],
    ["Enforced", activeVersion ? `version ${activeVersion}` : "none yet (no network)"],
  ];
  if (rev.load_error) rows.push(["Error", stripControls(rev.load_error)]);
  if (rev.policy) rows.push(["Rules", String(ruleCount(rev.policy))]);
  return rows.map(([k, v]) => `${`${k}:`.padEnd(10)}${v}\n`).join("");
}

/** `policy get NAME [--version N] [--full] [-o text|json]`. */
export async function policyGetCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  const format = ctx.str("output");
  const version = ctx.num("version") ?? 0;
  const full = ctx.flag("full");
  const client = await ctx.client();
  const res = await client.getSandboxPolicyStatus(name, version);
  const rev = res.revision;
  if (!rev) throw new CliError(`the gateway returned no policy revision for sandbox "${name}"`);
  if (format === "json") {
    await ctx.out(toJson({
      ...res,
      revision: full ? rev : { ...rev, policy: undefined },
    }));
    return 0;
  }
  await ctx.out(revisionDetails(rev, res.active_version, Date.now(), ctx.style));
  if (full) await ctx.out(`\n${renderPolicyYaml(rev.policy)}`);
  return 0;
}

/** `policy list NAME [--limit N] [-o table|json]`. */
export async function policyListCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  const format = ctx.str("output");
  const limit = ctx.num("limit") ?? 100;
  const client = await ctx.client();
  const revisions = await client.listSandboxPolicies(name, limit);
  if (format === "json") {
    await ctx.out(toJson(revisions));
    return 0;
  }
  const now = Date.now();
  await ctx.out(renderTable(
    ["VERSION", "STATUS", "HASH", "CREATED", "LOADED", "ERROR"],
    revisions.map((r) => [
      String(r.version),
      styledStatus(r.status, ctx.style),
      stripControls(r.policy_hash.slice(0, 12)),
      r.created_at_ms ? `${formatAge(r.created_at_ms, now)} ago` : "-",
      r.loaded_at_ms ? `${formatAge(r.loaded_at_ms, now)} ago` : "-",
      stripControls(r.load_error).slice(0, 80) || "-",
    ]),
    ctx.style,
  ));
  return 0;
}
