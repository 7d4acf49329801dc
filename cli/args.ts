/**
 * The command line of `openshell`: every command and option in one table,
 * parsing (with `node:util` `parseArgs`) into an {@link Invocation}, and the
 * `--help` text of every command. Bad input is a {@link UsageError} with a
 * one-line message.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { shellJoin } from "../core/shell.ts";

/** One option of a command. */
export interface OptionSpec {
  /** `boolean` flags take no value. */
  type: "string" | "boolean";
  /** One-letter alias. */
  short?: string;
  /** May be given several times (values collected in order). */
  multiple?: boolean;
  /** Placeholder for the value in help (`NAME`, `S`, …). */
  value?: string;
  /** One-line description. */
  help: string;
}

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
  /** Its own options (global ones are added). */
  options?: Readonly<Record<string, OptionSpec>>;
  /** Example invocations for help. */
  examples?: readonly string[];
  /** Left out of command lists (internal plumbing such as `ssh-proxy`). */
  hidden?: boolean;
}

/** Options every command accepts. */
export const GLOBAL_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  "gateway-endpoint": {
    type: "string",
    value: "URL",
    help: "Gateway URL, http:// or https:// (env OPENSHELL_GATEWAY_ENDPOINT)",
  },
  "gateway": {
    type: "string",
    short: "g",
    value: "NAME",
    help: "Registered gateway to use (env OPENSHELL_GATEWAY; default: the active one)",
  },
  "debug": { type: "boolean", help: "Show stack traces on errors" },
  "help": { type: "boolean", short: "h", help: "Show help" },
};

const OUTPUT_OPTION: OptionSpec = {
  type: "string",
  short: "o",
  value: "FORMAT",
  help: "table (default) or json",
};

/** The options that describe a network policy (`sandbox create`, `policy set`). */
const POLICY_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  policy: {
    type: "string",
    value: "FILE",
    help: "Network policy file (YAML: network_policies: {NAME: {endpoints: [{host, port}]}})",
  },
  allow: {
    type: "string",
    multiple: true,
    value: "HOST[:PORT]",
    help: "Allow connections to HOST (a *.glob too) on PORT, default 443 (repeatable)",
  },
  preset: {
    type: "string",
    multiple: true,
    value: "NAME",
    help: "Allow a preset's hosts: pypi, npm, debian, github (repeatable)",
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
        type: "string",
        value: "DIR",
        help: "Client bundle to import: DIR/ca.crt, DIR/client.crt, DIR/client.key",
      },
      ca: { type: "string", value: "FILE", help: "CA certificate (PEM) to trust for https://" },
      cert: { type: "string", value: "FILE", help: "Client certificate (PEM) for mTLS" },
      key: { type: "string", value: "FILE", help: "Client private key (PEM) for mTLS" },
      force: { type: "boolean", help: "Replace an existing gateway of that name" },
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
    options: { output: OUTPUT_OPTION },
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
        type: "string",
        value: "KIND",
        help: "vm (default) or none (no VMs: bring-your-own supervisors only)",
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
      follow: { type: "boolean", short: "f", help: "Keep printing new lines until Ctrl-C" },
      lines: { type: "string", short: "n", value: "N", help: "Last N lines (default 100)" },
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
        type: "string",
        short: "n",
        value: "NAME",
        help: "Sandbox name (default: generated)",
      },
      "no-keep": { type: "boolean", help: "Delete the sandbox when CMD or the shell ends" },
      timeout: {
        type: "string",
        value: "S",
        help: "Seconds to wait until ready (env OPENSHELL_PROVISION_TIMEOUT; default 300)",
      },
      env: {
        type: "string",
        short: "e",
        multiple: true,
        value: "K=V",
        help: "Environment variable for the sandbox (repeatable)",
      },
      cpus: {
        type: "string",
        value: "N",
        help: "CPUs of the sandbox's VM: 2, or millicores such as 1500m (default: the driver's)",
      },
      memory: {
        type: "string",
        value: "SIZE",
        help: "Memory of the sandbox's VM, e.g. 2Gi or 1536Mi (default: the driver's)",
      },
      "disk-gib": {
        type: "string",
        value: "N",
        help: "Size of the sandbox's disk in GiB (sparse; kept until the sandbox is deleted; " +
          "default: the driver's, 8)",
      },
      image: {
        type: "string",
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
    options: { output: { ...OUTPUT_OPTION, help: "text (default) or json" } },
    examples: ["openshell sandbox get dev", "openshell sandbox get dev --output json"],
  },
  {
    id: "sandbox list",
    summary: "List sandboxes",
    options: {
      names: { type: "boolean", help: "Print only names, one per line" },
      ids: { type: "boolean", help: "Print only ids, one per line" },
      output: OUTPUT_OPTION,
      limit: { type: "string", value: "N", help: "At most N sandboxes (default: all)" },
      offset: { type: "string", value: "N", help: "Skip the first N sandboxes" },
    },
    examples: ["openshell sandbox list", "openshell sandbox list --names"],
  },
  {
    id: "sandbox delete",
    summary: "Delete sandboxes",
    positionals: [{ name: "NAME", optional: true, variadic: true }],
    options: { all: { type: "boolean", help: "Delete every sandbox" } },
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
      "no-wait": { type: "boolean", help: "Return once the VM is starting" },
      timeout: {
        type: "string",
        value: "S",
        help: "Seconds to wait until ready (default 300)",
      },
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
      workdir: { type: "string", short: "w", value: "DIR", help: "Working directory" },
      env: {
        type: "string",
        short: "e",
        multiple: true,
        value: "K=V",
        help: "Environment variable for CMD (repeatable)",
      },
      tty: { type: "boolean", short: "t", help: "Run CMD on a pseudo-terminal" },
      timeout: { type: "string", value: "S", help: "Stop CMD after S seconds (0: no limit)" },
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
      follow: { type: "boolean", short: "f", help: "Keep printing new lines until Ctrl-C" },
      lines: { type: "string", short: "n", value: "N", help: "Last N lines (default 200)" },
      since: {
        type: "string",
        value: "WHEN",
        help: "Only lines since a time (2026-01-02T15:04:05Z) or for a while (90s, 10m, 1h, 2d)",
      },
      level: {
        type: "string",
        value: "LEVEL",
        help: "Only lines at LEVEL or more severe: error, warn, info, debug, trace",
      },
      source: {
        type: "string",
        multiple: true,
        value: "SRC",
        help:
          "Only lines from gateway, console, sandbox or egress (repeatable, or comma-separated)",
      },
      output: { ...OUTPUT_OPTION, help: "text (default) or json (one object per line)" },
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
      out: { type: "string", value: "DIR", help: "Directory to write the credentials into" },
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
      wait: { type: "boolean", help: "Wait until the egress proxy has loaded it (or refused it)" },
      timeout: {
        type: "string",
        value: "S",
        help: "Seconds --wait waits at most (default 30)",
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
      version: { type: "string", value: "N", help: "This version (default: the latest)" },
      full: { type: "boolean", help: "Print the policy as YAML too" },
      output: { ...OUTPUT_OPTION, help: "text (default) or json" },
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
      output: OUTPUT_OPTION,
      limit: { type: "string", value: "N", help: "At most N versions (default 100)" },
    },
    examples: ["openshell policy list dev"],
  },
  {
    id: "image list",
    summary: "List guest images",
    description: "List the guest images sandboxes can boot (`sandbox create --image NAME`): " +
      "`default`, the built-in Debian image, and those built or imported. Images with the " +
      "same content share one id and one file.",
    options: { output: OUTPUT_OPTION },
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
        type: "string",
        multiple: true,
        value: "A,B",
        help: "Extra Debian packages (comma-separated, repeatable)",
      },
      script: { type: "string", value: "FILE", help: "Shell script run once as root at build" },
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
      "stdin/stdout through it; used as an ssh ProxyCommand. Token mode: --gateway URL " +
      "--sandbox-id ID with the session token in the OPENSHELL_SSH_TOKEN environment " +
      "variable (never on the command line, where ps shows it). Name mode: --name SANDBOX " +
      "with the gateway from --gateway-endpoint, --gateway NAME or the active one; it " +
      "creates its own session and revokes the token once the tunnel is open.",
    hidden: true,
    options: {
      "gateway-name": { type: "string", value: "NAME", help: "Registered gateway (TLS files)" },
      "sandbox-id": { type: "string", value: "ID", help: "Sandbox id (token mode)" },
      token: {
        type: "string",
        value: "TOKEN",
        help: "Refused: a token in argv is visible to every user; use OPENSHELL_SSH_TOKEN",
      },
      "host-key-fingerprint": {
        type: "string",
        value: "FP",
        help: "SHA256 fingerprint the sandbox's host key must have",
      },
      name: { type: "string", value: "SANDBOX", help: "Sandbox name (name mode)" },
      "config-dir": {
        type: "string",
        value: "DIR",
        help: "Config directory (default: $XDG_CONFIG_HOME/openshell)",
      },
    },
  },
];

/** Command groups and their summaries. */
export const GROUPS: Readonly<Record<string, string>> = {
  sandbox: "Create, use and delete sandboxes",
  policy: "Set and inspect sandboxes' network policies",
  image: "Build, import, list and delete guest images",
  gateway: "Start a local gateway; register and choose gateways",
};

/** Values of parsed options: strings, booleans, or string lists for repeatable ones. */
export type OptionValues = Record<string, string | boolean | string[] | undefined>;

/** A parsed command line that names a command to run. */
export interface Invocation {
  /** The command. */
  spec: CommandSpec;
  /** Option values (global and command options), by long name. */
  values: OptionValues;
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

function optionLabel(name: string, spec: OptionSpec): string {
  const long = `--${name}${spec.type === "string" ? ` ${spec.value ?? "VALUE"}` : ""}`;
  return spec.short ? `-${spec.short}, ${long}` : `    ${long}`;
}

function optionLines(options: Readonly<Record<string, OptionSpec>>): string[] {
  const entries = Object.entries(options).map(([n, s]) => [optionLabel(n, s), s.help]);
  const width = Math.max(...entries.map(([l]) => l.length));
  return entries.map(([l, h]) => `  ${l.padEnd(width)}  ${h}`);
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

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/** The `--help` text of one command. */
export function commandHelp(spec: CommandSpec): string {
  const lines = [...wrap(spec.description ?? spec.summary, 78), "", `Usage: ${usageLine(spec)}`];
  if (spec.options && Object.keys(spec.options).length) {
    lines.push("", "Options:", ...optionLines(spec.options));
  }
  lines.push("", "Global options:", ...optionLines(GLOBAL_OPTIONS));
  if (spec.examples?.length) {
    lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  }
  return lines.join("\n") + "\n";
}

function commandList(specs: readonly CommandSpec[], prefix: string): string[] {
  const visible = specs.filter((s) => !s.hidden);
  const width = Math.max(...visible.map((s) => s.id.length - prefix.length));
  return visible.map((s) => `  ${s.id.slice(prefix.length).padEnd(width)}  ${s.summary}`);
}

/** The help of a command group (`openshell sandbox --help`). */
export function groupHelp(group: string): string {
  const specs = COMMANDS.filter((c) => c.id.startsWith(`${group} `));
  return [
    GROUPS[group],
    "",
    `Usage: openshell ${group} COMMAND [OPTIONS]`,
    "",
    "Commands:",
    ...commandList(specs, `${group} `),
    "",
    `Run 'openshell ${group} COMMAND --help' for a command's options.`,
  ].join("\n") + "\n";
}

/** The top-level help (`openshell --help`). */
export function topHelp(): string {
  const top = COMMANDS.filter((c) => !c.id.includes(" "));
  const groups = Object.entries(GROUPS).map(([g, s]) => ({ id: g, summary: s }));
  return [
    "openshell: create and use OpenShell sandboxes through a gateway",
    "",
    "Usage: openshell [GLOBAL OPTIONS] COMMAND [OPTIONS]",
    "",
    "Commands:",
    ...commandList([...top, ...groups], ""),
    "",
    "Global options:",
    ...optionLines({ ...GLOBAL_OPTIONS, version: { type: "boolean", help: "Print the version" } }),
    "",
    "Run 'openshell COMMAND --help' for a command's options.",
  ].join("\n") + "\n";
}

function globalOptionTakesValue(arg: string): boolean {
  const name = arg.startsWith("--") ? arg.slice(2) : undefined;
  if (name !== undefined) return GLOBAL_OPTIONS[name]?.type === "string";
  const short = arg.slice(1);
  return Object.values(GLOBAL_OPTIONS).some((o) => o.short === short && o.type === "string");
}

function isKnownGlobal(arg: string): boolean {
  if (arg.startsWith("--")) return arg.slice(2).split("=")[0] in GLOBAL_OPTIONS;
  const short = arg.slice(1, 2);
  return arg.length >= 2 && Object.values(GLOBAL_OPTIONS).some((o) => o.short === short);
}

/**
 * Parses `argv` (without the program name). Global options may come before
 * the command or among its own options; `--` ends option parsing.
 */
export function parseCommandLine(argv: readonly string[]): ParseResult {
  const leading: string[] = [];
  const words: string[] = [];
  let i = 0;
  let spec: CommandSpec | undefined;
  for (; i < argv.length && !spec; i++) {
    const arg = argv[i];
    if (arg === "--") break;
    if (arg.startsWith("-") && arg !== "-") {
      if (words.length === 0 && arg === "--version") return { kind: "version" };
      if (!isKnownGlobal(arg)) {
        const where = words.length ? `openshell ${words.join(" ")}` : "openshell";
        throw new UsageError(`unknown option "${arg}" for '${where}'`, words.join(" "));
      }
      leading.push(arg);
      if (!arg.includes("=") && globalOptionTakesValue(arg)) {
        if (i + 1 >= argv.length) throw new UsageError(`option "${arg}" needs a value`);
        leading.push(argv[++i]);
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
  return { kind: "run", invocation: parseCommandArgs(spec, [...leading, ...argv.slice(i)]) };
}

function helpForWords(words: string[]): ParseResult {
  if (words.length === 0) return { kind: "help", text: topHelp() };
  const id = words.join(" ");
  const spec = findCommand(id);
  if (spec) return { kind: "help", text: commandHelp(spec) };
  if (id in GROUPS) return { kind: "help", text: groupHelp(id) };
  throw new UsageError(`unknown command '${id}'`);
}

/** Parses the arguments of one command (global options included). */
export function parseCommandArgs(spec: CommandSpec, args: readonly string[]): Invocation {
  const options = { ...GLOBAL_OPTIONS, ...(spec.options ?? {}) };
  const config: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> =
    {};
  for (const [name, o] of Object.entries(options)) {
    config[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), multiple: !!o.multiple };
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: config,
      strict: false,
      allowPositionals: true,
      tokens: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message, spec.id);
  }
  const values: OptionValues = {};
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
  for (const token of parsed.tokens ?? []) {
    if (token.kind === "option-terminator") {
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
    const o = options[token.name];
    if (!o) throw mistake(`unknown option "${token.rawName}" for 'openshell ${spec.id}'`);
    if (o.type === "boolean") {
      if (token.inlineValue) throw mistake(`option "--${token.name}" takes no value`);
      values[token.name] = true;
      continue;
    }
    if (token.value === undefined) throw mistake(`option "${token.rawName}" needs a value`);
    if (o.multiple) {
      values[token.name] = [...((values[token.name] as string[] | undefined) ?? []), token.value];
    } else {
      values[token.name] = token.value;
    }
  }
  if (values.help) return { spec, values, positionals, trailing: trailing ?? [] };

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
  return { spec, values, positionals, trailing: trailing ?? [] };
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

/** Options of {@link integerOption}. */
export interface IntegerOptionOptions {
  /** Smallest accepted value; default 0. */
  min?: number;
  /** Largest accepted value; default 2^31-1. */
  max?: number;
  /** What the number counts, for the error message (e.g. `seconds`). */
  unit?: string;
}

/** Parses a whole-number option value; `undefined` stays `undefined`. */
export function integerOption(
  name: string,
  value: string | undefined,
  options: IntegerOptionOptions = {},
): number | undefined {
  if (value === undefined) return undefined;
  const min = options.min ?? 0;
  const max = options.max ?? 2 ** 31 - 1;
  const n = /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const unit = options.unit ? ` of ${options.unit}` : "";
    throw new UsageError(
      `--${name} needs a whole number${unit} between ${min} and ${max}, not "${value}"`,
    );
  }
  return n;
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
    `--${name} needs a duration (90s, 10m, 1h, 2d) or a time (2026-01-02T15:04:05Z), not "${value}"`,
  );
}

/** Log levels `--level` accepts, most severe first (the gateway's names, lower case). */
export const LEVELS = ["error", "warn", "info", "debug", "trace"] as const;

/** Parses `--level`: one of {@link LEVELS}, any case. */
export function levelOption(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if ((LEVELS as readonly string[]).includes(v)) return v;
  throw new UsageError(`--${name} must be one of ${LEVELS.join(", ")}, not "${value}"`);
}

/** Parses repeated, comma-separated choices (`--source gateway,console`), each one of `allowed`. */
export function choicesOption(
  name: string,
  values: readonly string[],
  allowed: readonly string[],
): string[] {
  const out: string[] = [];
  for (const v of values.flatMap((x) => x.split(",")).map((x) => x.trim()).filter(Boolean)) {
    if (!allowed.includes(v)) {
      throw new UsageError(`--${name} must be ${allowed.join(", ")}, not "${v}"`);
    }
    if (!out.includes(v)) out.push(v);
  }
  return out;
}

/** Parses repeated `K=V` values into a record; keys must be shell variable names. */
export function envOption(
  name: string,
  values: readonly string[] | undefined,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf("=");
    const key = eq < 0 ? v : v.slice(0, eq);
    if (eq < 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new UsageError(`--${name} needs KEY=VALUE with KEY a variable name, not "${v}"`);
    }
    env[key] = v.slice(eq + 1);
  }
  return env;
}

/** Parses `--output`: one of `allowed` (the first is the default). */
export function outputOption<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
): T {
  if (value === undefined) return allowed[0];
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`--output must be ${allowed.join(" or ")}, not "${value}"`);
}
