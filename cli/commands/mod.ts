/**
 * The command table: which function runs each command id of `args.ts`.
 *
 * @module
 */
import type { Context } from "../context.ts";

/** A command implementation: returns the exit status. */
export type CommandHandler = (ctx: Context) => Promise<number>;

/**
 * Every command id and how to load its implementation: each command
 * imports only its own module (and what that needs), so `openshell
 * status` never loads ssh2 and `--version` loads no command at all.
 */
export const HANDLERS: Readonly<Record<string, () => Promise<CommandHandler>>> = {
  "status": async () => (await import("./status.ts")).statusCommand,
  "gateway add": async () => (await import("./gateway.ts")).gatewayAddCommand,
  "gateway select": async () => (await import("./gateway.ts")).gatewaySelectCommand,
  "gateway list": async () => (await import("./gateway.ts")).gatewayListCommand,
  "gateway remove": async () => (await import("./gateway.ts")).gatewayRemoveCommand,
  "gateway start": async () => (await import("./local_gateway.ts")).gatewayStartCommand,
  "gateway stop": async () => (await import("./local_gateway.ts")).gatewayStopCommand,
  "gateway status": async () => (await import("./local_gateway.ts")).gatewayStatusCommand,
  "gateway logs": async () => (await import("./local_gateway.ts")).gatewayLogsCommand,
  "sandbox create": async () => (await import("./create.ts")).sandboxCreateCommand,
  "sandbox get": async () => (await import("./sandbox.ts")).sandboxGetCommand,
  "sandbox list": async () => (await import("./sandbox.ts")).sandboxListCommand,
  "sandbox delete": async () => (await import("./sandbox.ts")).sandboxDeleteCommand,
  "sandbox stop": async () => (await import("./lifecycle.ts")).sandboxStopCommand,
  "sandbox start": async () => (await import("./lifecycle.ts")).sandboxStartCommand,
  "sandbox connect": async () => (await import("./connect.ts")).sandboxConnectCommand,
  "sandbox exec": async () => (await import("./exec.ts")).sandboxExecCommand,
  "sandbox logs": async () => (await import("./sandbox.ts")).sandboxLogsCommand,
  "sandbox ssh-config": async () => (await import("./connect.ts")).sandboxSshConfigCommand,
  "sandbox credentials": async () => (await import("./credentials.ts")).sandboxCredentialsCommand,
  "policy set": async () => (await import("./policy.ts")).policySetCommand,
  "policy get": async () => (await import("./policy.ts")).policyGetCommand,
  "policy list": async () => (await import("./policy.ts")).policyListCommand,
  "image list": async () => (await import("./image.ts")).imageListCommand,
  "image build": async () => (await import("./image.ts")).imageBuildCommand,
  "image import": async () => (await import("./image.ts")).imageImportCommand,
  "image delete": async () => (await import("./image.ts")).imageDeleteCommand,
  "ssh-proxy": async () => (await import("./ssh_proxy.ts")).sshProxyCommand,
};
