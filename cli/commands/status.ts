/**
 * `openshell status`: the gateway in use, its version, and whether it answers.
 *
 * @module
 */
import type { Context } from "../context.ts";

/** Runs `status`; exit 1 when the gateway does not answer. */
export async function statusCommand(ctx: Context): Promise<number> {
  const gw = await ctx.gateway();
  const s = ctx.style;
  await ctx.out(`Gateway:  ${gw.name ?? "-"}\n`);
  await ctx.out(`Server:   ${gw.endpoint.url}\n`);
  const client = await ctx.client();
  try {
    const health = await client.health();
    const degraded = health.status !== "SERVICE_STATUS_HEALTHY";
    await ctx.out(`Version:  ${health.version || "unknown"}\n`);
    await ctx.out(
      `Status:   ${
        degraded
          ? s.yellow(`Connected (${health.status.replace(/^SERVICE_STATUS_/, "").toLowerCase()})`)
          : s.green("Connected")
      }\n`,
    );
    return 0;
  } catch (e) {
    await ctx.out(`Status:   ${s.red(`Disconnected: ${(e as Error).message}`)}\n`);
    return 1;
  }
}
