/**
 * `openshell ssh-proxy`: the ProxyCommand ssh runs. Token mode uses a
 * session the caller created; name mode creates a fresh one on every run
 * (what `sandbox ssh-config` writes). The host key is checked against the
 * gateway's fingerprint when it reports one.
 *
 * @module
 */
import { Backoff, sleep } from "../../core/backoff.ts";
import type { CreateSshSessionResponse } from "../../core/protocol.ts";
import { Code } from "../../core/status.ts";
import { UsageError } from "../args.ts";
import { GatewayClient, GatewayError } from "../client.ts";
import { parseEndpoint, resolveGateway } from "../config.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { HostKeyVerifier } from "../ssh_hostkey.ts";
import {
  DEFAULT_CONNECT_PATH,
  DEFAULT_MAX_WAIT_MS,
  openTunnel,
  pumpTunnel,
  type TunnelTarget,
  tunnelTargetOf,
} from "../ssh_proxy.ts";

/** CreateSshSession, retrying while the sandbox is not ready (up to 60 s). */
async function createSessionWhenReady(
  client: GatewayClient,
  sandboxId: string,
  onWait: () => void,
): Promise<CreateSshSessionResponse> {
  const started = Date.now();
  const backoff = new Backoff({ initialMs: 1000, maxMs: 8000 });
  while (true) {
    try {
      return await client.createSshSession(sandboxId);
    } catch (e) {
      const delay = backoff.next();
      const retry = e instanceof GatewayError && e.code === Code.FAILED_PRECONDITION &&
        Date.now() - started + delay <= DEFAULT_MAX_WAIT_MS;
      if (!retry) throw e;
      if (backoff.attempts === 1) onWait();
      await sleep(delay);
    }
  }
}

async function tokenTarget(ctx: Context, token: string): Promise<TunnelTarget> {
  const url = ctx.str("gateway");
  const sandboxId = ctx.str("sandbox-id");
  if (!url || !url.includes("://") || !sandboxId) {
    throw new UsageError("token mode needs --gateway URL and --sandbox-id ID", "ssh-proxy");
  }
  const ep = parseEndpoint(url, { allowPath: true });
  const name = ctx.str("gateway-name");
  const tls = ep.scheme === "https" && name ? await ctx.store.readTls(name) : undefined;
  return {
    scheme: ep.scheme,
    host: ep.host,
    port: ep.port,
    path: ep.path || DEFAULT_CONNECT_PATH,
    sandboxId,
    token,
    ...(tls ? { tls } : {}),
  };
}

async function nameTarget(
  ctx: Context,
  name: string,
): Promise<{ target: TunnelTarget; fingerprint: string }> {
  const gatewayArg = ctx.str("gateway-name") ?? ctx.str("gateway");
  if (gatewayArg?.includes("://")) {
    throw new UsageError("name mode takes --gateway NAME or --gateway-endpoint URL", "ssh-proxy");
  }
  const gw = await resolveGateway(ctx.store, {
    endpointFlag: ctx.str("gateway-endpoint"),
    gatewayFlag: gatewayArg,
    env: ctx.env,
  });
  const client = new GatewayClient({ endpoint: gw.endpoint, ...(gw.tls ? { tls: gw.tls } : {}) });
  try {
    let sandbox;
    try {
      sandbox = await client.getSandbox(name);
    } catch (e) {
      if (e instanceof GatewayError && e.code === Code.NOT_FOUND) {
        throw new CliError(`sandbox "${name}" not found on ${gw.name ?? gw.endpoint.url}`);
      }
      throw e;
    }
    const expected = ctx.str("sandbox-id");
    if (expected && sandbox.id !== expected) {
      throw new CliError(
        `sandbox "${name}" was recreated (id ${sandbox.id}, expected ${expected}); ` +
          `run 'openshell sandbox ssh-config ${name}' again`,
      );
    }
    const session = await createSessionWhenReady(client, sandbox.id, () => {
      ctx.err(`openshell: sandbox ${name} is not ready yet; waiting up to 60 s\n`);
    });
    return {
      target: tunnelTargetOf(session, gw.endpoint, gw.tls),
      fingerprint: session.host_key_fingerprint,
    };
  } finally {
    client.close();
  }
}

/** Runs `ssh-proxy`: pumps stdin/stdout through the tunnel until the sandbox side ends. */
export async function sshProxyCommand(ctx: Context): Promise<number> {
  ctx.handleInterrupts();
  const token = ctx.str("token");
  const name = ctx.str("name");
  if (token && name) throw new UsageError("give --token or --name, not both", "ssh-proxy");
  let target: TunnelTarget;
  let fingerprint = ctx.str("host-key-fingerprint") ?? "";
  if (token) {
    target = await tokenTarget(ctx, token);
  } else if (name) {
    const found = await nameTarget(ctx, name);
    target = found.target;
    fingerprint ||= found.fingerprint;
  } else {
    throw new UsageError(
      "ssh-proxy needs --token (with --gateway URL and --sandbox-id) or --name",
      "ssh-proxy",
    );
  }
  const verifier = fingerprint ? new HostKeyVerifier(fingerprint) : undefined;
  let warned = false;
  const tunnel = await openTunnel(target, {
    signal: ctx.interrupt,
    onRetry: () => {
      if (!warned) ctx.err("openshell: the sandbox is not ready yet; waiting up to 60 s\n");
      warned = true;
    },
  });
  try {
    await pumpTunnel(tunnel, { input: ctx.streams.stdin, output: ctx.streams.stdout, verifier });
  } finally {
    try {
      tunnel.conn.close();
    } catch {
      // already closed
    }
  }
  return 0;
}
