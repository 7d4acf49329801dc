/**
 * `openshell sandbox credentials NAME --out DIR`: what a bring-your-own
 * host's supervisor needs to serve a sandbox of a `--drivers none` gateway.
 *
 * The token is shown to nobody: it goes into `DIR/token` (0600) and into no
 * command line; the printed command names the file.
 *
 * @module
 */
import { checkPrivateDir, UnsafePathError, writeSecretFile } from "../../core/secure_fs.ts";
import { shellJoin } from "../../core/shell.ts";
import { UsageError } from "../args.ts";
import type { Context } from "../context.ts";
import { CliError } from "../errors.ts";

/** The files written into the `--out` directory. */
export const CREDENTIAL_FILES = {
  token: "token",
  ca: "ca.crt",
  env: "supervisor.env",
  hostKey: "ssh_host_key",
} as const;

/** The supervisor's command line for credentials written into `dir`. */
export function supervisorCommand(
  o: { sandboxId: string; endpoint: string; dir: string; tls: boolean },
): string[] {
  return [
    "openshell-sandbox",
    "--sandbox-id",
    o.sandboxId,
    "--openshell-endpoint",
    o.endpoint,
    ...(o.tls ? ["--tls-ca", `${o.dir}/${CREDENTIAL_FILES.ca}`] : []),
    "--supervisor-token-file",
    `${o.dir}/${CREDENTIAL_FILES.token}`,
    "--ssh-host-key",
    `${o.dir}/${CREDENTIAL_FILES.hostKey}`,
  ];
}

/** `sandbox credentials NAME --out DIR`. */
export async function sandboxCredentialsCommand(ctx: Context): Promise<number> {
  const name = ctx.invocation.positionals[0];
  const out = ctx.str("out");
  if (!out) throw new UsageError("--out DIR is required", "sandbox credentials");
  const dir = out.startsWith("/") ? out.replace(/\/+$/, "") : `${Deno.cwd()}/${out}`;
  try {
    await checkPrivateDir(dir, { create: true, exact0700: true, what: "--out directory" });
  } catch (err) {
    if (err instanceof UnsafePathError) throw new CliError(err.message);
    throw err;
  }
  const client = await ctx.client();
  const creds = await client.issueSupervisorCredentials(name);
  const tls = creds.ca_cert_pem !== "";
  await writeSecretFile(`${dir}/${CREDENTIAL_FILES.token}`, creds.token + "\n");
  if (tls) await writeSecretFile(`${dir}/${CREDENTIAL_FILES.ca}`, creds.ca_cert_pem);
  const env = [
    `OPENSHELL_SANDBOX_ID=${creds.sandbox_id}`,
    `OPENSHELL_ENDPOINT=${creds.endpoint}`,
    ...(tls ? [`OPENSHELL_TLS_CA=${dir}/${CREDENTIAL_FILES.ca}`] : []),
    `OPENSHELL_SUPERVISOR_TOKEN_FILE=${dir}/${CREDENTIAL_FILES.token}`,
    `OPENSHELL_SSH_HOST_KEY=${dir}/${CREDENTIAL_FILES.hostKey}`,
  ].join("\n") + "\n";
  await writeSecretFile(`${dir}/${CREDENTIAL_FILES.env}`, env);
  ctx.err(
    `Wrote supervisor credentials for sandbox ${name} to ${dir} ` +
      "(any earlier token of this sandbox no longer works).\n" +
      "Start its supervisor on the sandbox's host (the host key is generated there once):\n",
  );
  await ctx.out(
    shellJoin(
      supervisorCommand({ sandboxId: creds.sandbox_id, endpoint: creds.endpoint, dir, tls }),
    ) +
      "\n",
  );
  return 0;
}
