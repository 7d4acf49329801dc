/**
 * The command table: which function runs each command id of `args.ts`.
 *
 * @module
 */
import type { Context } from "../context.ts";
import { sandboxConnectCommand, sandboxSshConfigCommand } from "./connect.ts";
import { sandboxCreateCommand } from "./create.ts";
import { sandboxCredentialsCommand } from "./credentials.ts";
import { sandboxExecCommand } from "./exec.ts";
import {
  gatewayAddCommand,
  gatewayListCommand,
  gatewayRemoveCommand,
  gatewaySelectCommand,
} from "./gateway.ts";
import {
  gatewayLogsCommand,
  gatewayStartCommand,
  gatewayStatusCommand,
  gatewayStopCommand,
} from "./local_gateway.ts";
import {
  sandboxDeleteCommand,
  sandboxGetCommand,
  sandboxListCommand,
  sandboxLogsCommand,
} from "./sandbox.ts";
import { sshProxyCommand } from "./ssh_proxy.ts";
import { statusCommand } from "./status.ts";

/** A command implementation: returns the exit status. */
export type CommandHandler = (ctx: Context) => Promise<number>;

/** Every command id and its implementation. */
export const HANDLERS: Readonly<Record<string, CommandHandler>> = {
  "status": statusCommand,
  "gateway add": gatewayAddCommand,
  "gateway select": gatewaySelectCommand,
  "gateway list": gatewayListCommand,
  "gateway remove": gatewayRemoveCommand,
  "gateway start": gatewayStartCommand,
  "gateway stop": gatewayStopCommand,
  "gateway status": gatewayStatusCommand,
  "gateway logs": gatewayLogsCommand,
  "sandbox create": sandboxCreateCommand,
  "sandbox get": sandboxGetCommand,
  "sandbox list": sandboxListCommand,
  "sandbox delete": sandboxDeleteCommand,
  "sandbox connect": sandboxConnectCommand,
  "sandbox exec": sandboxExecCommand,
  "sandbox logs": sandboxLogsCommand,
  "sandbox ssh-config": sandboxSshConfigCommand,
  "sandbox credentials": sandboxCredentialsCommand,
  "ssh-proxy": sshProxyCommand,
};
