/**
 * `openshell gateway add|select|list|remove`: the registry of named gateways.
 *
 * @module
 */
import { UsageError } from "../args.ts";
import {
  BUNDLE_FILES,
  type GatewayMetadata,
  parseGatewayUrl,
  type TlsMaterial,
} from "../config.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";
import { renderTable, toJson } from "../output.ts";

async function readPem(option: string, path: string | undefined): Promise<Uint8Array | undefined> {
  if (path === undefined) return undefined;
  try {
    return await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.NotCapable
      ? "not permitted"
      : (e as Error).message;
    throw new CliError(`cannot read --${option} ${path}: ${why}`);
  }
}

async function readBundleFile(dir: string, file: string): Promise<Uint8Array> {
  const path = `${dir.replace(/\/+$/, "")}/${file}`;
  try {
    return await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.NotCapable
      ? "not permitted"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (e as Error).message;
    throw new CliError(
      `cannot read ${path}: ${why} (--mtls-dir names a directory holding ${
        Object.values(BUNDLE_FILES).join(", ")
      }, as a gateway writes them into its <state-dir>/pki)`,
    );
  }
}

/** Reads a gateway's client bundle (`ca.crt`, `client.crt`, `client.key` in `dir`). */
export async function readMtlsBundle(dir: string): Promise<TlsMaterial> {
  const clean = dir.replace(/\/+$/, "") || "/";
  const [ca, cert, key] = await Promise.all(
    [BUNDLE_FILES.ca, BUNDLE_FILES.cert, BUNDLE_FILES.key].map((f) => readBundleFile(clean, f)),
  );
  return {
    ca,
    cert,
    key,
    files: {
      ca: `${clean}/${BUNDLE_FILES.ca}`,
      cert: `${clean}/${BUNDLE_FILES.cert}`,
      key: `${clean}/${BUNDLE_FILES.key}`,
    },
  };
}

/**
 * Registers gateway `name` at `url` with the client bundle in `dir` (what
 * `gateway add NAME URL --mtls-dir DIR` does; `gateway start` uses it for
 * `local`).
 */
export async function importMtlsBundle(
  ctx: Context,
  o: { name: string; url: string; dir: string; force: boolean },
): Promise<GatewayMetadata> {
  return await ctx.store.addGateway({
    name: o.name,
    endpoint: o.url,
    ...(await readMtlsBundle(o.dir)),
    force: o.force,
  });
}

/** `gateway add NAME URL [--mtls-dir DIR | --ca F --cert F --key F] [--force]`. */
export async function gatewayAddCommand(ctx: Context): Promise<number> {
  const [name, url] = ctx.invocation.positionals;
  const dir = ctx.str("mtls-dir");
  let material: TlsMaterial;
  if (dir !== undefined) {
    if (ctx.str("ca") ?? ctx.str("cert") ?? ctx.str("key")) {
      throw new UsageError("give --mtls-dir or --ca/--cert/--key, not both", "gateway add");
    }
    if (parseGatewayUrl(url).scheme !== "https") {
      throw new UsageError(
        "--mtls-dir only applies to https:// gateways (a plaintext gateway has no certificates)",
        "gateway add",
      );
    }
    material = await readMtlsBundle(dir);
  } else {
    const [ca, cert, key] = await Promise.all([
      readPem("ca", ctx.str("ca")),
      readPem("cert", ctx.str("cert")),
      readPem("key", ctx.str("key")),
    ]);
    material = {
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
      files: {
        ...(ctx.str("ca") ? { ca: ctx.str("ca") } : {}),
        ...(ctx.str("cert") ? { cert: ctx.str("cert") } : {}),
        ...(ctx.str("key") ? { key: ctx.str("key") } : {}),
      },
    };
  }
  const meta = await ctx.store.addGateway({
    name,
    endpoint: url,
    ...material,
    force: ctx.flag("force"),
  });
  const active = (await ctx.store.activeGateway()) === name;
  const auth = meta.auth_mode === "mtls" ? ", client certificate" : "";
  await ctx.out(
    `Added gateway ${ctx.style.cyan(name)} (${meta.gateway_endpoint}${auth})${
      active ? ", now active" : ""
    }\n`,
  );
  return 0;
}

/** `gateway select NAME`. */
export async function gatewaySelectCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  await ctx.store.setActiveGateway(name);
  await ctx.out(`Active gateway: ${ctx.style.cyan(name)}\n`);
  return 0;
}

/** `gateway remove NAME`. */
export async function gatewayRemoveCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  await ctx.store.removeGateway(name);
  await ctx.out(`Removed gateway ${name}\n`);
  return 0;
}

/** `gateway list [--output table|json]`. */
export async function gatewayListCommand(ctx: Context): Promise<number> {
  const format = ctx.str("output");
  const [entries, active] = await Promise.all([
    ctx.store.listGateways(),
    ctx.store.activeGateway(),
  ]);
  if (format === "json") {
    await ctx.out(toJson(entries.map((e) => ({
      name: e.name,
      endpoint: e.metadata?.gateway_endpoint ?? null,
      auth_mode: e.metadata?.auth_mode ?? null,
      tls_files: e.tlsFiles,
      active: e.name === active,
      ...(e.error ? { error: e.error } : {}),
    }))));
    return 0;
  }
  if (entries.length === 0) {
    ctx.err("No gateways registered; add one with 'openshell gateway add NAME URL'.\n");
    return 0;
  }
  const s = ctx.style;
  await ctx.out(renderTable(
    ["", "NAME", "ENDPOINT", "TLS"],
    entries.map((e) => [
      e.name === active ? s.green("*") : "",
      s.cyan(e.name),
      e.metadata?.gateway_endpoint ?? s.red(e.error ?? "?"),
      e.tlsFiles.includes("tls.crt") ? "mtls" : e.tlsFiles.includes("ca.crt") ? "ca" : "-",
    ]),
    s,
  ));
  return 0;
}
