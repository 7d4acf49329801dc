/**
 * The command line of `openshell`: every command and option in one table
 * (options declared with the one options layer, `core/flags.ts`: kinds,
 * env twins, defaults, bounds), parsing into an {@link Invocation} with
 * typed, validated values, and the `--help` text of every command in the
 * layout every role shares. Bad input is a {@link UsageError} with a
 * one-line message.
 *
 * @module
 */
import {
  type EnvReader,
  FlagError,
  type FlagSource,
  type FlagSpec,
  type FlagTable,
  type FlagValue,
  NO_ENV,
  resolveFlags,
  tokenize,
  tokenProblem,
} from "../core/flags.ts";
import { type HelpSection, renderHelp } from "../core/flags_help.ts";
import { LOG_LEVELS } from "../core/log.ts";
import { DEFAULT_DISK_GIB, DISK_GIB } from "../core/shared_flags.ts";
import { shellJoin } from "../core/shell.ts";

/** One positional argument of a command. */
export interface PositionalSpec {
  /** Placeholder, e.g. `NAME`. */
  name: string;
  /** Whether it may be left out. */
  optional?: boolean;
  /** Takes every remaining positional (must be last). */
  variadic?: boolean;
}

/** One runnable command. */
export interface CommandSpec {
  /** Words that select it, e.g. `sandbox create`. */
  id: string;
  /** One-line summary (command lists). */
  summary: string;
  /** Longer description (its own help); defaults to the summary. */
  description?: string;
  /** Positional arguments in order. */
  positionals?: readonly PositionalSpec[];
  /** A command line after `--`: required, optional or not accepted (absent). */
  trailing?: "required" | "optional";
  /** Its own options (global ones are added), declared as in `core/flags.ts`. */
  options?: FlagTable;
  /** Example invocations for help. */
  examples?: readonly string[];
  /** Left out of command lists (internal plumbing such as `ssh-proxy`). */
  hidden?: boolean;
}

/** Options every command accepts. */
export const GLOBAL_OPTIONS: FlagTable = {
  "gateway-endpoint": {
    kind: "string",
    env: "OPENSHELL_GATEWAY_ENDPOINT",
    value: "URL",
    help: "Gateway URL, http:// or https://",
  },
  "gateway": {
    kind: "string",
    short: "g",
    env: "OPENSHELL_GATEWAY",
    value: "NAME",
    help: "Registered gateway to use (default: the active one)",
  },
  "debug": { kind: "bool", help: "Show stack traces on errors" },
  "help": { kind: "bool", short: "h", help: "Show help" },
};

const TABLE_OUTPUT: FlagSpec = {
  kind: "choice",
  short: "o",
  choices: ["table", "json"],
  default: "table",
  help: "Output format",
};

const TEXT_OUTPUT: FlagSpec = { ...TABLE_OUTPUT, choices: ["text", "json"], default: "text" };

const LINES: FlagSpec = { kind: "int", short: "n", min: 1, max: 100_000, help: "Last N lines" };

const READY_TIMEOUT: FlagSpec = {
  kind: "duration",
  min: 1,
  default: 300,
  help: "How long to wait until ready",
};

/** Whether `K=V` names a shell variable. */
function envPairProblem(pair: string | number): string | undefined {
  const v = String(pair);
  const eq = v.indexOf("=");
  return eq > 0 && /^[A-Za-z_][A-Za-z0-9_]*$/.test(v.slice(0, eq))
    ? undefined
    : `needs KEY=VALUE with KEY a variable name, got ${JSON.stringify(v)}`;
}

const ENV_OPTION: FlagSpec = {
  kind: "string",
  short: "e",
  repeatable: true,
  value: "K=V",
  help: "Environment variable",
  check: envPairProblem,
};

/** The environment variable that carries `ssh-proxy`'s SSH session token (token mode). */
export const SSH_TOKEN_ENV = "OPENSHELL_SSH_TOKEN";

/** Where sandbox log lines come from (`SandboxLogLine.source`). */
export const LOG_SOURCES = ["gateway", "console", "sandbox", "egress"] as const;

/** The options that describe a network policy (`sandbox create`, `policy set`). */
const POLICY_OPTIONS: FlagTable = {
  policy: {
    kind: "string",
    value: "FILE",
    help: "Network policy file (YAML: network_policies: {NAME: {endpoints: [{host, port}]}})",
  },
  allow: {
    kind: "string",
    repeatable: true,
    value: "HOST[:PORT]",
    help: "Allow connections to HOST (a *.glob too) on PORT, default 443",
  },
  preset: {
    kind: "string",
    repeatable: true,
    value: "NAME",
    help: "Allow a preset's hosts: pypi, npm, debian, github",
  },
};

/** Every command of the CLI. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    id: "status",
    summary: "Show the gateway in use and whether it answers",
    description: "Show the gateway in use, its server version and whether it answers. " +
      "Exits non-zero when the gateway cannot be reached.",
    examples: ["openshell status", "openshell --gateway-endpoint http://127.0.0.1:8080 status"],
  },
  {
    id: "gateway add",
    summary: "Register a gateway under a name",
    description: "Register a gateway under a name; the first one registered becomes active. " +
      "For an https:// gateway, --mtls-dir imports the client bundle the gateway writes into " +
      "its <state-dir>/pki (ca.crt, client.crt, client.key): the CLI then trusts only that CA " +
      "and presents that certificate on every call. --ca, --cert and --key name the files " +
      "one by one instead. The files are checked and copied into the config directory.",
    positionals: [{ name: "NAME" }, { name: "URL" }],
    options: {
      "mtls-dir": {
        kind: "string",
        value: "DIR",
        help: "Client bundle to import: DIR/ca.crt, DIR/client.crt, DIR/client.key",
      },
      ca: { kind: "string", value: "FILE", help: "CA certificate (PEM) to trust for https://" },
      cert: { kind: "string", value: "FILE", help: "Client certificate (PEM) for mTLS" },
      key: { kind: "string", value: "FILE", help: "Client private key (PEM) for mTLS" },
      force: { kind: "bool", help: "Replace an existing gateway of that name" },
    },
    examples: [
      "openshell gateway add local https://127.0.0.1:8080 --mtls-dir /var/lib/openshell/gateway/pki",
      "openshell gateway add dev http://127.0.0.1:8080",
      "openshell gateway add prod https://gw.example.com:8080 --ca ca.crt --cert tls.crt --key tls.key",
    ],
  },
  {
    id: "gateway select",
    summary: "Make a registered gateway the active one",
    positionals: [{ name: "NAME" }],
    examples: ["openshell gateway select prod"],
  },
  {
    id: "gateway list",
    summary: "List registered gateways",
    options: { output: TABLE_OUTPUT },
  },
  {
    id: "gateway remove",
    summary: "Forget a registered gateway and its certificates",
    positionals: [{ name: "NAME" }],
  },
  {
    id: "gateway start",
    summary: "Start the installed gateway with the VM driver in the background",
    description: "Start the gateway that 'deno task install' installed, in the background: " +
      "build the guest image when it is missing or stale (progress on stderr), start the " +
      "gateway with the VM driver and its own PKI (TLS, client certificates), register it as " +
      "'local' with its client bundle and make it the active gateway, wait until it answers, " +
      "and print where its state and logs are. Flags after -- go to openshell-gateway. " +
      "Refused while it runs.",
    trailing: "optional",
    options: {
      drivers: {
        kind: "choice",
        choices: ["vm", "none"],
        default: "vm",
        help: "Compute driver (none: no VMs, bring-your-own supervisors only)",
      },
    },
    examples: [
      "openshell gateway start && openshell sandbox create -- echo hi",
      "openshell gateway start -- --log-level debug --vm-accel tcg",
    ],
  },
  {
    id: "gateway stop",
    summary: "Stop the local gateway and every VM it runs",
    description: "Stop the gateway 'openshell gateway start' started: SIGTERM (it stops its " +
      "driver, which stops every VM), then check that no gateway, driver, qemu or forwarder " +
      "process of its state dirs is left (SIGKILL for any that is). Sandbox records are kept.",
  },
  {
    id: "gateway status",
    summary: "Say whether the local gateway runs and answers",
    description: "Say whether the gateway 'openshell gateway start' started runs and answers, " +
      "and where its state and logs are. Exits 0 when it runs and answers, else 1.",
  },
  {
    id: "gateway logs",
    summary: "Show the local gateway's log",
    options: {
      follow: { kind: "bool", short: "f", help: "Keep printing new lines until Ctrl-C" },
      lines: { ...LINES, default: 100 },
    },
    examples: ["openshell gateway logs -n 20", "openshell gateway logs --follow"],
  },
  {
    id: "sandbox create",
    summary: "Create a sandbox and run a command or a shell in it",
    description: "Create a sandbox and follow its progress until it is ready, then run CMD " +
      "in it over SSH and exit with CMD's exit code, or open an interactive shell when no " +
      "CMD is given. The sandbox is kept unless --no-keep is given. Ctrl-C while it " +
      "provisions cancels (and deletes it with --no-keep).",
    trailing: "optional",
    options: {
      name: {
        kind: "string",
        short: "n",
        value: "NAME",
        help: "Sandbox name (default: generated)",
      },
      "no-keep": { kind: "bool", help: "Delete the sandbox when CMD or the shell ends" },
      timeout: { ...READY_TIMEOUT, env: "OPENSHELL_PROVISION_TIMEOUT" },
      env: { ...ENV_OPTION, help: "Environment variable for the sandbox" },
      cpus: {
        kind: "string",
        value: "N",
        help: "CPUs of the sandbox's VM: 2, or millicores such as 1500m (default: the driver's)",
      },
      memory: {
        kind: "string",
        value: "SIZE",
        help: "Memory of the sandbox's VM, e.g. 2Gi or 1536Mi (default: the driver's)",
      },
      "disk-gib": {
        ...DISK_GIB,
        help: "Size of the sandbox's disk (sparse; kept until the sandbox is deleted; " +
          `default: the driver's, ${DEFAULT_DISK_GIB})`,
      },
      image: {
        kind: "string",
        value: "NAME",
        help: "Guest image to boot (`openshell image list`; default: the built-in one)",
      },
      ...POLICY_OPTIONS,
    },
    examples: [
      "openshell sandbox create -- echo hello",
      "openshell sandbox create --preset pypi -- pip download requests",
      "openshell sandbox create --policy policy.yaml --allow api.example.com",
      "openshell sandbox create --name dev",
      "openshell sandbox create --no-keep -- make test",
      "openshell sandbox create --name big --cpus 4 --memory 8Gi --disk-gib 50",
      "openshell sandbox create --image py -- python3 -V",
    ],
  },
  {
    id: "sandbox get",
    summary: "Show one sandbox",
    positionals: [{ name: "NAME", optional: true }],
    options: { output: TEXT_OUTPUT },
    examples: ["openshell sandbox get dev", "openshell sandbox get dev --output json"],
  },
  {
    id: "sandbox list",
    summary: "List sandboxes",
    options: {
      names: { kind: "bool", help: "Print only names, one per line" },
      ids: { kind: "bool", help: "Print only ids, one per line" },
      output: TABLE_OUTPUT,
      limit: { kind: "int", min: 1, max: 2 ** 31 - 1, help: "At most N sandboxes (default: all)" },
      offset: {
        kind: "int",
        min: 0,
        max: 2 ** 31 - 1,
        default: 0,
        help: "Skip the first N sandboxes",
      },
    },
    examples: ["openshell sandbox list", "openshell sandbox list --names"],
  },
  {
    id: "sandbox delete",
    summary: "Delete sandboxes",
    positionals: [{ name: "NAME", optional: true, variadic: true }],
    options: { all: { kind: "bool", help: "Delete every sandbox" } },
    examples: ["openshell sandbox delete dev", "openshell sandbox delete --all"],
  },
  {
    id: "sandbox stop",
    summary: "Stop sandboxes, keeping their disks",
    description: "Shut each sandbox's VM down cleanly (the guest powers off; it is killed " +
      "if it has not after about 30 s). Its disk, files and SSH host key are kept and its " +
      "phase shows Stopped until `sandbox start` boots it again.",
    positionals: [{ name: "NAME", variadic: true }],
    examples: ["openshell sandbox stop dev"],
  },
  {
    id: "sandbox start",
    summary: "Start stopped sandboxes again",
    description: "Boot each stopped (or failed) sandbox's VM again from its disk and follow " +
      "it until it is ready, unless --no-wait is given. Starting a running sandbox does nothing.",
    positionals: [{ name: "NAME", variadic: true }],
    options: {
      "no-wait": { kind: "bool", help: "Return once the VM is starting" },
      timeout: READY_TIMEOUT,
    },
    examples: ["openshell sandbox start dev", "openshell sandbox start dev --no-wait"],
  },
  {
    id: "sandbox connect",
    summary: "Open an interactive shell in a sandbox",
    description: "Open an interactive shell in a sandbox over SSH. Without NAME, the " +
      "sandbox last created or connected to on this gateway.",
    positionals: [{ name: "NAME", optional: true }],
    examples: ["openshell sandbox connect dev"],
  },
  {
    id: "sandbox exec",
    summary: "Run a command in a sandbox and stream its output",
    description: "Run CMD in a sandbox through the gateway (ExecSandbox), stream its stdout " +
      "and stderr, pass piped stdin to it, and exit with its exit code (124 on --timeout).",
    positionals: [{ name: "NAME", optional: true }],
    trailing: "required",
    options: {
      workdir: { kind: "string", short: "w", value: "DIR", help: "Working directory" },
      env: { ...ENV_OPTION, help: "Environment variable for CMD" },
      tty: { kind: "bool", short: "t", help: "Run CMD on a pseudo-terminal" },
      timeout: {
        kind: "duration",
        min: 0,
        default: 0,
        help: "Stop CMD after this long (0: no limit)",
      },
    },
    examples: [
      "openshell sandbox exec dev -- uname -a",
      "echo data | openshell sandbox exec dev --workdir /tmp -- sh -c 'cat > f'",
    ],
  },
  {
    id: "sandbox logs",
    summary: "Show a sandbox's logs",
    positionals: [{ name: "NAME", optional: true }],
    description: "Show a sandbox's logs, one line per event: the gateway's own lines about " +
      "the sandbox, and its VM's console (kernel, init, the supervisor's log lines and its " +
      "OCSF events, shown by their message; -o json gives each line as a JSON object, an " +
      "OCSF event whole in its `ocsf` field).",
    options: {
      follow: { kind: "bool", short: "f", help: "Keep printing new lines until Ctrl-C" },
      lines: { ...LINES, default: 200 },
      since: {
        kind: "string",
        value: "WHEN",
        help: "Only lines since a time (2026-01-02T15:04:05Z) or for a while (90s, 10m, 1h, 2d)",
      },
      level: {
        kind: "choice",
        choices: LOG_LEVELS,
        value: "LEVEL",
        help: "Only lines at LEVEL or more severe",
      },
      source: {
        kind: "list",
        repeatable: true,
        choices: LOG_SOURCES,
        value: "SRC",
        help: "Only lines from these sources (comma-separated)",
      },
      output: { ...TEXT_OUTPUT, help: "Output format (json: one object per line)" },
    },
    examples: [
      "openshell sandbox logs dev",
      "openshell sandbox logs dev --follow",
      "openshell sandbox logs dev --since 10m --level warn",
      "openshell sandbox logs dev --source console -o json",
      "openshell sandbox logs dev --source egress --since 10m",
    ],
  },
  {
    id: "sandbox ssh-config",
    summary: "Print an OpenSSH config block for a sandbox",
    description: "Print a `Host openshell-NAME` block for ~/.ssh/config (or ssh -F) that " +
      "lets plain ssh, scp, rsync and editors reach the sandbox; each connection gets a " +
      "fresh token, and the sandbox's host key is pinned.",
    positionals: [{ name: "NAME" }],
    examples: [
      "openshell sandbox ssh-config dev >> ~/.ssh/config && ssh openshell-dev",
    ],
  },
  {
    id: "sandbox credentials",
    summary: "Issue a bring-your-own host's supervisor credentials",
    description: "For a gateway started with --drivers none: issue a new supervisor token for " +
      "the sandbox (the previous one stops working) and write what its supervisor needs into " +
      "DIR (created 0700): token (0600), ca.crt (the supervisor plane's CA) and " +
      "supervisor.env; then print the command that starts the supervisor.",
    positionals: [{ name: "NAME" }],
    options: {
      out: { kind: "string", value: "DIR", help: "Directory to write the credentials into" },
    },
    examples: ["openshell sandbox credentials dev --out /etc/openshell/dev"],
  },
  {
    id: "policy set",
    summary: "Replace a sandbox's network policy, live",
    description: "Replace the sandbox's whole network policy with what --policy, --preset and " +
      "--allow describe together (at least one of them; a file with `network_policies: {}` " +
      "denies everything). The gateway stores it as a new version and its egress proxy " +
      "enforces it for new connections at once; --wait waits until it is loaded (or refused).",
    positionals: [{ name: "NAME" }],
    options: {
      ...POLICY_OPTIONS,
      wait: { kind: "bool", help: "Wait until the egress proxy has loaded it (or refused it)" },
      timeout: {
        kind: "duration",
        min: 1,
        default: 30,
        help: "How long --wait waits at most",
      },
    },
    examples: [
      "openshell policy set dev --preset pypi --preset github --wait",
      "openshell policy set dev --policy policy.yaml",
      "openshell policy set dev --allow api.example.com --allow mirror.example:8080",
    ],
  },
  {
    id: "policy get",
    summary: "Show a sandbox's policy version and its load status",
    description: "Show one version of the sandbox's network policy (default: the latest): " +
      "its status (pending, loaded, failed with the reason, superseded), hash and times, and " +
      "which version the egress proxy enforces now. --full prints the policy itself as YAML, " +
      "ready for `policy set --policy`.",
    positionals: [{ name: "NAME" }],
    options: {
      version: { kind: "int", min: 1, value: "N", help: "This version (default: the latest)" },
      full: { kind: "bool", help: "Print the policy as YAML too" },
      output: TEXT_OUTPUT,
    },
    examples: [
      "openshell policy get dev",
      "openshell policy get dev --full > policy.yaml",
      "openshell policy get dev --version 1 -o json",
    ],
  },
  {
    id: "policy list",
    summary: "List a sandbox's policy versions, newest first",
    positionals: [{ name: "NAME" }],
    options: {
      output: TABLE_OUTPUT,
      limit: {
        kind: "int",
        min: 1,
        max: 100,
        default: 100,
        value: "N",
        help: "At most N versions",
      },
    },
    examples: ["openshell policy list dev"],
  },
  {
    id: "image list",
    summary: "List guest images",
    description: "List the guest images sandboxes can boot (`sandbox create --image NAME`): " +
      "`default`, the built-in Debian image, and those built or imported. Images with the " +
      "same content share one id and one file.",
    options: { output: TABLE_OUTPUT },
    examples: ["openshell image list", "openshell image list -o json"],
  },
  {
    id: "image build",
    summary: "Build a guest image from Debian packages and a setup script",
    description: "Build an image: the default image's Debian 12 packages plus --packages, " +
      "then --script run once as root inside it. It runs on the gateway's host (debootstrap " +
      "and apt, a few minutes; progress on stderr); the same packages and script give the " +
      "same image at once.",
    positionals: [{ name: "NAME" }],
    options: {
      packages: {
        kind: "list",
        repeatable: true,
        value: "A,B",
        help: "Extra Debian packages (comma-separated)",
      },
      script: { kind: "string", value: "FILE", help: "Shell script run once as root at build" },
    },
    examples: [
      "openshell image build py --packages python3-numpy,python3-pandas",
      "openshell image build tools --packages build-essential --script setup.sh",
    ],
  },
  {
    id: "image import",
    summary: "Import a root file system tarball as a guest image",
    description: "Upload ROOTFS.tar (e.g. `docker export $(docker create IMAGE)`) and make " +
      "it an image. It must contain OpenSSH's server (/usr/sbin/sshd); the sandbox's init, " +
      "Deno and supervisor come from the VM runtime, so any distribution boots.",
    positionals: [{ name: "NAME" }, { name: "ROOTFS.tar" }],
    examples: [
      "docker export $(docker create my-image) > rootfs.tar && openshell image import mine rootfs.tar",
    ],
  },
  {
    id: "image delete",
    summary: "Delete guest images",
    description: "Delete images by name; an image a sandbox's disk is made from stays until " +
      "those sandboxes are deleted.",
    positionals: [{ name: "NAME", variadic: true }],
    examples: ["openshell image delete py"],
  },
  {
    id: "ssh-proxy",
    summary: "Tunnel stdin/stdout to a sandbox's SSH server (ssh ProxyCommand)",
    description: "Open the gateway's CONNECT tunnel to a sandbox's SSH server and pump " +
      "stdin/stdout through it; used as an ssh ProxyCommand. Token mode: --gateway-url URL " +
      "--sandbox-id ID with the session token in the OPENSHELL_SSH_TOKEN environment " +
      "variable (never on the command line, where ps shows it); --gateway NAME (or " +
      "--gateway-name NAME) names the registered gateway whose TLS files to use. Name mode: " +
      "--name SANDBOX with the gateway from --gateway-endpoint, --gateway NAME or the active " +
      "one; it creates its own session and revokes the token once the tunnel is open. As in " +
      "upstream's ssh-proxy, --gateway with a URL (it holds ://) is taken as --gateway-url.",
    hidden: true,
    options: {
      "gateway-url": {
        kind: "string",
        value: "URL",
        help: "The gateway's SSH tunnel URL, e.g. https://HOST:PORT/connect/ssh (token mode)",
      },
      "gateway-name": {
        kind: "string",
        value: "NAME",
        help: "Registered gateway whose TLS files to use (upstream's spelling of --gateway NAME)",
      },
      "sandbox-id": { kind: "string", value: "ID", help: "Sandbox id" },
      token: {
        kind: "string",
        env: SSH_TOKEN_ENV,
        envOnly: true,
        secret: true,
        value: "TOKEN",
        help: "The SSH session token (token mode)",
      },
      "host-key-fingerprint": {
        kind: "string",
        value: "FP",
        help: "SHA256 fingerprint the sandbox's host key must have",
      },
      name: { kind: "string", value: "SANDBOX", help: "Sandbox name (name mode)" },
      "config-dir": {
        kind: "string",
        value: "DIR",
        help: "Config directory (default: $XDG_CONFIG_HOME/openshell)",
      },
    },
  },
];

/** What `ssh-proxy`'s gateway options name. */
export interface SshProxyGateway {
  /** The tunnel URL (token mode). */
  url?: string;
  /** The registered gateway (its TLS files; name mode: the gateway itself). */
  name?: string;
}

/**
 * The rules of `ssh-proxy`'s gateway options, from the values given on the
 * command line: `--gateway-url URL` is the tunnel URL, and `--gateway` with
 * a URL (it holds `://`, upstream's form) counts as it when `--gateway-url`
 * is absent; otherwise `--gateway NAME` names a registered gateway, as for
 * every command, and so does `--gateway-name NAME` (upstream's spelling),
 * which wins.
 */
export function sshProxyGateway(given: (name: string) => string | undefined): SshProxyGateway {
  const gateway = given("gateway");
  const isUrl = gateway?.includes("://") ?? false;
  const url = given("gateway-url") ?? (isUrl ? gateway : undefined);
  const name = given("gateway-name") ?? (isUrl ? undefined : gateway);
  return { ...(url ? { url } : {}), ...(name ? { name } : {}) };
}

/** Command groups and their summaries. */
export const GROUPS: Readonly<Record<string, string>> = {
  sandbox: "Create, use and delete sandboxes",
  policy: "Set and inspect sandboxes' network policies",
  image: "Build, import, list and delete guest images",
  gateway: "Start a local gateway; register and choose gateways",
};

/** Values of parsed options by long name: typed by each option's kind. */
export type OptionValues = Record<string, FlagValue | undefined>;

/** A parsed command line that names a command to run. */
export interface Invocation {
  /** The command. */
  spec: CommandSpec;
  /** Option values (global and command options, env twins and defaults applied). */
  values: OptionValues;
  /** Where each value came from (the command line, an env twin, the default). */
  from: Record<string, FlagSource>;
  /** Positional arguments before `--`. */
  positionals: string[];
  /** The words after `--` (commands with a trailing command line). */
  trailing: string[];
}

/** What the command line asks for. */
export type ParseResult =
  | { kind: "run"; invocation: Invocation }
  | { kind: "help"; text: string }
  | { kind: "version" };

/** Options of {@link UsageError}. */
export interface UsageErrorOptions {
  /**
   * Whether the report points at the command's `--help` (default true);
   * false when the message already shows the corrected command line.
   */
  seeHelp?: boolean;
}

/** A mistake on the command line (exit status 2). */
export class UsageError extends Error {
  /** The command whose help would help ("" for the top level, or unknown yet). */
  readonly command: string;
  /** Whether the report points at the command's `--help`. */
  readonly seeHelp: boolean;

  /** Creates the error; `command` names the help to point at. */
  constructor(message: string, command = "", options: UsageErrorOptions = {}) {
    super(message);
    this.name = "UsageError";
    this.command = command;
    this.seeHelp = options.seeHelp ?? true;
  }
}

function findCommand(id: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.id === id);
}

function usageLine(spec: CommandSpec): string {
  const parts = [`openshell ${spec.id}`];
  if (spec.options && Object.keys(spec.options).length) parts.push("[OPTIONS]");
  for (const p of spec.positionals ?? []) {
    const name = p.variadic ? `${p.name}...` : p.name;
    parts.push(p.optional ? `[${name}]` : name);
  }
  if (spec.trailing === "required") parts.push("-- CMD...");
  if (spec.trailing === "optional") parts.push("[-- CMD...]");
  return parts.join(" ");
}

/** The `--help` text of one command. */
export function commandHelp(spec: CommandSpec): string {
  return renderHelp({
    about: spec.description ?? spec.summary,
    usage: usageLine(spec),
    sections: [
      { title: "Options", flags: spec.options ?? {} },
      { title: "Global options", flags: GLOBAL_OPTIONS },
    ],
    examples: spec.examples,
  });
}

function commandRows(specs: readonly CommandSpec[], prefix: string): HelpSection["rows"] {
  return specs.filter((s) => !s.hidden).map((s) => [s.id.slice(prefix.length), s.summary]);
}

/** The help of a command group (`openshell sandbox --help`). */
export function groupHelp(group: string): string {
  const specs = COMMANDS.filter((c) => c.id.startsWith(`${group} `));
  return renderHelp({
    about: GROUPS[group],
    usage: `openshell ${group} COMMAND [OPTIONS]`,
    sections: [{ title: "Commands", rows: commandRows(specs, `${group} `) }],
    footer: `Run 'openshell ${group} COMMAND --help' for a command's options.`,
  });
}

/** The top-level help (`openshell --help`). */
export function topHelp(): string {
  const top = COMMANDS.filter((c) => !c.id.includes(" "));
  const groups = Object.entries(GROUPS).map(([g, s]) => ({ id: g, summary: s }));
  return renderHelp({
    about: "openshell: create and use OpenShell sandboxes through a gateway",
    usage: "openshell [GLOBAL OPTIONS] COMMAND [OPTIONS]",
    sections: [
      { title: "Commands", rows: commandRows([...top, ...groups], "") },
      {
        title: "Global options",
        flags: { ...GLOBAL_OPTIONS, version: { kind: "bool", help: "Print the version" } },
      },
    ],
    footer: "Run 'openshell COMMAND --help' for a command's options.",
  });
}

/**
 * Parses `argv` (without the program name); `env` gives the options' env
 * twins (none by default). Global options may come before the command or
 * among its own options; `--` ends option parsing.
 */
export function parseCommandLine(argv: readonly string[], env: EnvReader = NO_ENV): ParseResult {
  const leading: string[] = [];
  const words: string[] = [];
  let i = 0;
  let spec: CommandSpec | undefined;
  for (; i < argv.length && !spec; i++) {
    const arg = argv[i];
    if (arg === "--") break;
    if (arg.startsWith("-") && arg !== "-") {
      if (words.length === 0 && arg === "--version") return { kind: "version" };
      // One word, or an option and its value: what the global options make of it.
      const [token] = tokenize(GLOBAL_OPTIONS, argv.slice(i, i + 2));
      const problem = tokenProblem(GLOBAL_OPTIONS, token);
      if (token.kind === "unknown") {
        const where = words.length ? `openshell ${words.join(" ")}` : "openshell";
        throw new UsageError(`${problem} for '${where}'`, words.join(" "));
      }
      if (problem) throw new UsageError(problem, words.join(" "));
      leading.push(arg);
      if (token.kind === "option" && token.value !== undefined && !token.inline) {
        if (arg.startsWith("--") || arg.length === 2) leading.push(argv[++i]);
      }
      continue;
    }
    if (words.length === 0 && arg === "help") {
      return helpForWords(argv.slice(i + 1).filter((a) => !a.startsWith("-")));
    }
    words.push(arg);
    const id = words.join(" ");
    spec = findCommand(id);
    if (!spec && !(id in GROUPS)) {
      const group = words.length > 1 ? words[0] : "";
      throw new UsageError(
        group
          ? `unknown command '${id}' (see 'openshell ${group} --help')`
          : `unknown command '${id}'`,
        group,
      );
    }
  }
  const wantsHelp = leading.some((a) => a === "--help" || a === "-h");
  if (!spec) {
    if (words.length === 1) {
      if (wantsHelp) return { kind: "help", text: groupHelp(words[0]) };
      throw new UsageError(`'openshell ${words[0]}' needs a command`, words[0]);
    }
    if (wantsHelp) return { kind: "help", text: topHelp() };
    throw new UsageError("missing command");
  }
  return {
    kind: "run",
    invocation: parseCommandArgs(spec, [...leading, ...argv.slice(i)], env),
  };
}

function helpForWords(words: string[]): ParseResult {
  if (words.length === 0) return { kind: "help", text: topHelp() };
  const id = words.join(" ");
  const spec = findCommand(id);
  if (spec) return { kind: "help", text: commandHelp(spec) };
  if (id in GROUPS) return { kind: "help", text: groupHelp(id) };
  throw new UsageError(`unknown command '${id}'`);
}

/**
 * Parses the arguments of one command (global options included); `env`
 * gives the options' env twins (none by default).
 */
export function parseCommandArgs(
  spec: CommandSpec,
  args: readonly string[],
  env: EnvReader = NO_ENV,
): Invocation {
  const options: FlagTable = { ...GLOBAL_OPTIONS, ...(spec.options ?? {}) };
  const tokens = tokenize(options, args);
  const positionals: string[] = [];
  const declared = spec.positionals ?? [];
  const variadic = declared.some((p) => p.variadic);
  let trailing: string[] | undefined;
  /** Where the first word beyond the positionals is: the start of a command that lacks `--`. */
  let commandAt: number | undefined;
  /** A mistake after such a word: show the command line with `--` in its place. */
  const mistake = (message: string) =>
    commandAt === undefined
      ? new UsageError(message, spec.id)
      : new UsageError(`${message}: ${withSeparator(spec, args, commandAt)}`, spec.id, {
        seeHelp: false,
      });
  for (const token of tokens) {
    if (token.kind === "terminator") {
      trailing = args.slice(token.index + 1);
      break;
    }
    if (token.kind === "positional") {
      if (spec.trailing && !variadic && positionals.length === declared.length) {
        commandAt ??= token.index;
      }
      positionals.push(token.value);
      continue;
    }
    const problem = tokenProblem(options, token);
    if (token.kind === "unknown") throw mistake(`${problem} for 'openshell ${spec.id}'`);
    if (problem) throw mistake(problem);
  }
  const help = tokens.some((t) => t.kind === "option" && t.name === "help" && !t.negated);
  if (help) {
    return { spec, values: { help: true }, from: {}, positionals, trailing: trailing ?? [] };
  }

  if (trailing !== undefined && !spec.trailing) {
    positionals.push(...trailing);
    trailing = undefined;
  }
  const required = declared.filter((p) => !p.optional).length;
  if (positionals.length < required) {
    const missing = declared[positionals.length].name;
    throw new UsageError(`missing ${missing} (usage: ${usageLine(spec)})`, spec.id);
  }
  if (!variadic && positionals.length > declared.length) {
    throw mistake(`unexpected argument "${positionals[declared.length]}"`);
  }
  if (spec.trailing === "required" && (trailing === undefined || trailing.length === 0)) {
    throw new UsageError(`missing command after '--' (usage: ${usageLine(spec)})`, spec.id);
  }
  let resolved;
  try {
    resolved = resolveFlags(options, tokens, env);
  } catch (e) {
    if (e instanceof FlagError) throw new UsageError(e.message, spec.id);
    throw e;
  }
  return {
    spec,
    values: resolved.values as OptionValues,
    from: resolved.from,
    positionals,
    trailing: trailing ?? [],
  };
}

/**
 * `put the command after '--': openshell CMD …`: the command line the user
 * typed with `--` in front of the word at `commandAt` (the first one beyond
 * the command's positionals), shell-quoted.
 */
function withSeparator(spec: CommandSpec, args: readonly string[], commandAt: number): string {
  const rest = [...args.slice(commandAt)];
  const dashes = rest.indexOf("--");
  if (dashes >= 0) rest.splice(dashes, 1);
  return `put the command after '--': openshell ${spec.id} ${
    shellJoin([...args.slice(0, commandAt), "--", ...rest])
  }`;
}

const DURATION_UNITS: Readonly<Record<string, number>> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Parses `--since`: a duration back from `nowMs` (`90s`, `10m`, `1h`,
 * `2d`) or an RFC 3339 time (`2026-01-02T15:04:05Z`, an offset or
 * fractional seconds allowed); returns epoch milliseconds.
 */
export function sinceOption(
  name: string,
  value: string | undefined,
  nowMs: number,
): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  const d = /^(\d{1,9})([smhd])$/.exec(v);
  if (d) return nowMs - Number(d[1]) * DURATION_UNITS[d[2]];
  if (/^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$/.test(v)) {
    const t = Date.parse(v.replace(" ", "T"));
    if (!Number.isNaN(t)) return t;
  }
  throw new UsageError(
    `--${name} must be a duration (90s, 10m, 1h, 2d) or a time (2026-01-02T15:04:05Z), got "${value}"`,
  );
}

/** Repeated `K=V` values (checked by the option's declaration) as a record. */
export function envOption(values: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    env[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return env;
}
