/**
 * `openshell gateway add|select|list|remove`: the registry of named gateways.
 *
 * @module
 */
import { outputOption } from "../args.ts";
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

/** `gateway add NAME URL [--ca F --cert F --key F] [--force]`. */
export async function gatewayAddCommand(ctx: Context): Promise<number> {
  const [name, url] = ctx.invocation.positionals;
  const [ca, cert, key] = await Promise.all([
    readPem("ca", ctx.str("ca")),
    readPem("cert", ctx.str("cert")),
    readPem("key", ctx.str("key")),
  ]);
  const meta = await ctx.store.addGateway({
    name,
    endpoint: url,
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    force: ctx.flag("force"),
  });
  const active = (await ctx.store.activeGateway()) === name;
  await ctx.out(
    `Added gateway ${ctx.style.cyan(name)} (${meta.gateway_endpoint})${
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
  const format = outputOption(ctx.str("output"), ["table", "json"] as const);
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
