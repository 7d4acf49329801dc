/**
 * Running OpenSSH against a sandbox: a fresh `CreateSshSession`, the
 * `ssh-proxy` ProxyCommand (which pins the host key fingerprint), and the
 * `ssh` child process itself. The token never appears in an argv: ssh and
 * its ProxyCommand get it in their environment ({@link SSH_TOKEN_ENV}), and it
 * is revoked as soon as ssh exits.
 *
 * @module
 */
import { hostPort } from "../../core/endpoint.ts";
import type { Sandbox } from "../../core/protocol.ts";
import { Code } from "../../core/status.ts";
import { GatewayError } from "../client.ts";
import type { Context } from "../context.ts";
import { SSH_TOKEN_ENV } from "../args.ts";
import { CliError } from "../errors.ts";
import { netGrantsFor, selfCommand } from "../self.ts";
import { type SshAccess, sshArgs } from "../ssh.ts";
import { tunnelTargetOf, validateTarget } from "../ssh_tunnel_client.ts";
import { notReadyMessage } from "./common.ts";

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]+=*$/;

/** ssh settings for one session (token mode) and the token they need. */
export interface SessionAccess {
  /** The ssh settings (no token in them). */
  access: SshAccess;
  /** The session token: for ssh's environment, revoked when ssh exits. */
  token: string;
}

/** Creates an SSH session for `sandbox` and the ssh settings that use it (token mode). */
export async function sessionAccess(ctx: Context, sandbox: Sandbox): Promise<SessionAccess> {
  const client = await ctx.client();
  const gw = await ctx.gateway();
  let session;
  try {
    session = await client.createSshSession(sandbox.id);
  } catch (e) {
    if (e instanceof GatewayError && e.code === Code.FAILED_PRECONDITION) {
      const current = await client.getSandbox(sandbox.name).catch(() => sandbox);
      throw new CliError(notReadyMessage(current, e.message));
    }
    throw e;
  }
  const target = tunnelTargetOf(session, gw.endpoint);
  validateTarget(target);
  const fp = session.host_key_fingerprint;
  if (fp && !FINGERPRINT.test(fp)) {
    throw new CliError(`the gateway sent an invalid host key fingerprint "${fp.slice(0, 80)}"`);
  }
  const args = [
    "ssh-proxy",
    "--gateway-url",
    `${target.scheme}://${hostPort(target.host, target.port)}${target.path}`,
    "--sandbox-id",
    target.sandboxId,
    ...(fp ? ["--host-key-fingerprint", fp] : []),
    ...(gw.name ? ["--gateway", gw.name] : []),
    "--config-dir",
    ctx.store.root,
  ];
  try {
    await ctx.store.ensureRoot();
  } catch (e) {
    await revokeToken(ctx, session.token);
    throw e;
  }
  return {
    access: {
      sandboxName: sandbox.name,
      sandboxId: sandbox.id,
      proxyCommand: selfCommand(args, {
        configDir: ctx.store.root,
        gateways: netGrantsFor(target.host, target.port),
      }),
      knownHostsFile: ctx.store.knownHostsPath,
    },
    token: session.token,
  };
}

/** Revokes a session token; a failure is reported and costs only its remaining lifetime. */
export async function revokeToken(ctx: Context, token: string): Promise<void> {
  try {
    const client = await ctx.client();
    await client.revokeSshSession(token, 5_000);
  } catch (e) {
    ctx.err(
      `warning: could not revoke the SSH session token (it expires on its own): ${
        (e as Error).message
      }\n`,
    );
  }
}

/** The ssh settings of `sandbox ssh-config` (name mode: a fresh session per connection). */
export async function configAccess(ctx: Context, sandbox: Sandbox): Promise<SshAccess> {
  const gw = await ctx.gateway();
  const args = [
    "ssh-proxy",
    "--name",
    sandbox.name,
    "--sandbox-id",
    sandbox.id,
    "--gateway-endpoint",
    gw.endpoint.url,
    ...(gw.name ? ["--gateway", gw.name] : []),
    "--config-dir",
    ctx.store.root,
  ];
  await ctx.store.ensureRoot();
  return {
    sandboxName: sandbox.name,
    sandboxId: sandbox.id,
    proxyCommand: selfCommand(args, {
      configDir: ctx.store.root,
      gateways: netGrantsFor(gw.endpoint.host, gw.endpoint.port),
    }),
    knownHostsFile: ctx.store.knownHostsPath,
  };
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** Options of {@link runSsh}. */
export interface RunSshOptions {
  /** Remote argv; none = a shell. */
  command?: readonly string[];
  /** Request a pseudo-terminal. */
  tty: boolean;
}

/**
 * Runs `ssh` with the terminal attached and returns its exit status (the
 * remote command's, or 255 when ssh itself failed), then revokes the
 * session's token. Ctrl-C reaches ssh; SIGTERM and SIGHUP end ssh, and the
 * token is still revoked.
 */
export async function runSsh(
  ctx: Context,
  session: SessionAccess,
  options: RunSshOptions,
): Promise<number> {
  ctx.handleInterrupts();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("ssh", {
      args: sshArgs(session.access, options),
      env: { [SSH_TOKEN_ENV]: session.token },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (e) {
    await revokeToken(ctx, session.token);
    if (e instanceof Deno.errors.NotFound) {
      throw new CliError("ssh not found: install the OpenSSH client");
    }
    if (e instanceof Deno.errors.NotCapable) throw new CliError("not permitted to run ssh");
    throw e;
  }
  const send = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  };
  const forward = send("SIGINT");
  const ends: [Deno.Signal, () => void][] = [["SIGTERM", send("SIGTERM")], [
    "SIGHUP",
    send("SIGHUP"),
  ]];
  ctx.interrupt.addEventListener("abort", forward, { once: true });
  for (const [signal, handler] of ends) Deno.addSignalListener(signal, handler);
  try {
    const status = await child.status;
    return status.signal ? 128 + (SIGNALS[status.signal] ?? 1) : status.code;
  } finally {
    ctx.interrupt.removeEventListener("abort", forward);
    for (const [signal, handler] of ends) Deno.removeSignalListener(signal, handler);
    await revokeToken(ctx, session.token);
  }
}
