/**
 * `openshell ssh-proxy`: the ProxyCommand ssh runs. Token mode uses a
 * session the caller created, its token read from the environment
 * ({@link SSH_TOKEN_ENV}; never from argv, where `ps` shows it to every user);
 * name mode creates a fresh session on every run (what `sandbox ssh-config`
 * writes) and revokes its token when the tunnel ends (not sooner: the
 * gateway closes a revoked token's tunnels). The host key
 * is checked against the gateway's fingerprint when it reports one.
 *
 * @module
 */
import { retryWhile } from "../../core/backoff.ts";
import type { CreateSshSessionResponse } from "../../core/protocol.ts";
import { Code } from "../../core/status.ts";
import { SSH_TOKEN_ENV, type SshProxyGateway, sshProxyGateway, UsageError } from "../args.ts";
import {
  checkClientTls,
  importBundleCommand,
  parseGatewayUrl,
  type ResolvedGateway,
  resolveGateway,
} from "../config.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { GatewayError } from "../gateway_error.ts";
import { SessionRpc } from "../session_rpc.ts";
import { HostKeyVerifier } from "../ssh_hostkey.ts";
import {
  DEFAULT_CONNECT_PATH,
  DEFAULT_MAX_WAIT_MS,
  openTunnel,
  pumpTunnel,
  type TunnelTarget,
  tunnelTargetOf,
} from "../ssh_tunnel_client.ts";

/** How long revoking a token may take before the proxy gives up on it. */
const REVOKE_DEADLINE_MS = 5_000;

/** CreateSshSession, retrying while the sandbox is not ready (up to 60 s). */
async function createSessionWhenReady(
  client: SessionRpc,
  sandboxId: string,
  onWait: () => void,
): Promise<CreateSshSessionResponse> {
  return await retryWhile(() => client.createSshSession(sandboxId), {
    initialMs: 1000,
    maxMs: 8000,
    maxWaitMs: DEFAULT_MAX_WAIT_MS,
    retryable: (e) => e instanceof GatewayError && e.code === Code.FAILED_PRECONDITION,
    onRetry: (_delay, retry) => {
      if (retry === 1) onWait();
    },
  });
}

/** The gateway options as given on the command line (see {@link sshProxyGateway}). */
function gatewayOf(ctx: Context): SshProxyGateway {
  return sshProxyGateway((name) => ctx.given(name) ? ctx.str(name) : undefined);
}

async function tokenTarget(ctx: Context, token: string): Promise<TunnelTarget> {
  const { url, name } = gatewayOf(ctx);
  const sandboxId = ctx.str("sandbox-id");
  if (!url || !sandboxId) {
    throw new UsageError(
      `token mode needs --gateway-url URL and --sandbox-id ID (the token in ${SSH_TOKEN_ENV})`,
      "ssh-proxy",
    );
  }
  const ep = parseGatewayUrl(url, { allowPath: true });
  const tls = ep.scheme === "https" && name ? await ctx.store.readTls(name) : undefined;
  if (tls) {
    checkClientTls(tls, {
      fix: `import the gateway's current client bundle: ${
        importBundleCommand(name, ep.url)
      }, DIR being the gateway's <state-dir>/pki`,
    });
  }
  return {
    scheme: ep.scheme,
    host: ep.host,
    port: ep.port,
    path: ep.path || DEFAULT_CONNECT_PATH,
    sandboxId,
    token,
    ...(tls ? { tls } : {}),
    ...(name ? { gatewayName: name } : {}),
  };
}

/** A session this proxy created (name mode): its tunnel target and the client to revoke it. */
interface OwnSession {
  target: TunnelTarget;
  fingerprint: string;
  client: SessionRpc;
}

/**
 * The sandbox's id by name through the full gateway client (loaded only
 * here: without `--sandbox-id`, or when the given id is gone), checked
 * against `expected`.
 */
async function sandboxIdByName(
  gw: ResolvedGateway,
  name: string,
  expected: string | undefined,
): Promise<string> {
  const { GatewayClient } = await import("../client.ts");
  const client = new GatewayClient({
    endpoint: gw.endpoint,
    ...(gw.tls ? { tls: gw.tls } : {}),
    ...(gw.name ? { name: gw.name } : {}),
  });
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
    if (expected && sandbox.id !== expected) {
      throw new CliError(
        `sandbox "${name}" was recreated (id ${sandbox.id}, expected ${expected}); ` +
          `run 'openshell sandbox ssh-config ${name}' again`,
      );
    }
    return sandbox.id;
  } finally {
    client.close();
  }
}

async function nameTarget(ctx: Context, name: string): Promise<OwnSession> {
  const given = gatewayOf(ctx);
  if (given.url) {
    throw new UsageError("name mode takes --gateway NAME or --gateway-endpoint URL", "ssh-proxy");
  }
  const gw = await resolveGateway(ctx.store, {
    endpointFlag: ctx.given("gateway-endpoint") ? ctx.str("gateway-endpoint") : undefined,
    gatewayFlag: given.name,
    env: ctx.env,
  });
  const client = new SessionRpc({
    endpoint: gw.endpoint,
    ...(gw.tls ? { tls: gw.tls } : {}),
    ...(gw.name ? { name: gw.name } : {}),
  });
  try {
    // `sandbox ssh-config` writes the id: then one call, CreateSshSession, does it (the
    // gateway answers NOT_FOUND for an id that is gone, and the lookup by name says why).
    const expected = ctx.str("sandbox-id");
    const sandboxId = expected ?? await sandboxIdByName(gw, name, undefined);
    const onWait = () => {
      ctx.err(`openshell: sandbox ${name} is not ready yet; waiting up to 60 s\n`);
    };
    let session: CreateSshSessionResponse;
    try {
      session = await createSessionWhenReady(client, sandboxId, onWait);
    } catch (e) {
      if (!(expected && e instanceof GatewayError && e.code === Code.NOT_FOUND)) throw e;
      await sandboxIdByName(gw, name, expected); // throws: not found, or recreated
      throw e;
    }
    return {
      target: tunnelTargetOf(session, gw.endpoint, gw.tls, gw.name),
      fingerprint: session.host_key_fingerprint,
      client,
    };
  } catch (e) {
    client.close();
    throw e;
  }
}

/** Revokes a token this proxy created; a failure only costs its remaining lifetime. */
async function revokeOwn(ctx: Context, own: OwnSession): Promise<void> {
  try {
    await own.client.revokeSshSession(own.target.token, REVOKE_DEADLINE_MS);
  } catch (e) {
    ctx.err(
      `openshell: could not revoke the SSH session token (it expires on its own): ${
        (e as Error).message
      }\n`,
    );
  } finally {
    own.client.close();
  }
}

/** Runs `ssh-proxy`: pumps stdin/stdout through the tunnel until the sandbox side ends. */
export async function sshProxyCommand(ctx: Context): Promise<number> {
  ctx.handleInterrupts();
  const name = ctx.str("name");
  // `--token` is refused by its declaration: the token comes from SSH_TOKEN_ENV only.
  const token = name === undefined ? ctx.str("token") : undefined;
  let target: TunnelTarget;
  let own: OwnSession | undefined;
  let fingerprint = ctx.str("host-key-fingerprint") ?? "";
  if (name !== undefined) {
    own = await nameTarget(ctx, name);
    target = own.target;
    fingerprint ||= own.fingerprint;
  } else if (token) {
    target = await tokenTarget(ctx, token);
  } else {
    throw new UsageError(
      `ssh-proxy needs --name SANDBOX, or --gateway-url URL and --sandbox-id ID with the token in ${SSH_TOKEN_ENV}`,
      "ssh-proxy",
    );
  }
  // ssh ends its ProxyCommand with SIGHUP when the session is over: revoke the
  // token this proxy created before going (nobody waits for it any more).
  let revoking: Promise<void> | undefined;
  const onHangup = own
    ? () => {
      if (!own) return;
      const session = own;
      own = undefined;
      revoking = revokeOwn(ctx, session).finally(() => Deno.exit(0));
    }
    : undefined;
  if (onHangup) Deno.addSignalListener("SIGHUP", onHangup);
  const verifier = fingerprint ? new HostKeyVerifier(fingerprint) : undefined;
  let warned = false;
  try {
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
  } finally {
    if (onHangup) Deno.removeSignalListener("SIGHUP", onHangup);
    // Only now: revoking a token closes the tunnels opened with it.
    if (own) await revokeOwn(ctx, own);
    else if (revoking) await revoking;
  }
  return 0;
}
