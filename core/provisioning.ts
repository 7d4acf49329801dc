/**
 * What the gateway hands a compute driver for one sandbox beyond the user's
 * settings, and how a driver separates the two.
 *
 * The driver contract has one free-form map, `DriverSandboxSpec.environment`.
 * The gateway puts the user's environment there plus the provisioning
 * secrets below under reserved names; a driver takes the secrets out with
 * {@link splitProvisioning}, delivers them to the supervisor as files (never
 * as environment of user processes) and passes the rest on as the sandbox's
 * environment.
 *
 * @module
 */

/** The sandbox's SSH host private key (OpenSSH format). */
export const PROVISION_SSH_HOST_KEY = "OPENSHELL_PROVISION_SSH_HOST_KEY";
/** The token the sandbox's supervisor presents to the gateway. */
export const PROVISION_SUPERVISOR_TOKEN = "OPENSHELL_PROVISION_SUPERVISOR_TOKEN";
/** PEM CA the supervisor verifies the gateway's supervisor plane with. */
export const PROVISION_TLS_CA = "OPENSHELL_PROVISION_TLS_CA";
/** gRPC metadata key carrying the supervisor token. */
export const SUPERVISOR_TOKEN_METADATA = "x-openshell-supervisor-token";

const RESERVED_PREFIX = "OPENSHELL_PROVISION_";

/** Provisioning data separated from the user's environment. */
export interface Provisioning {
  /** Variables for processes in the sandbox. */
  environment: Record<string, string>;
  /** SSH host private key, when the gateway generated one. */
  sshHostKey?: string;
  /** Supervisor token, when the gateway issued one. */
  supervisorToken?: string;
  /** CA of the gateway's supervisor plane (TLS), when it serves TLS. */
  tlsCa?: string;
}

/** Splits a driver spec's environment into user variables and provisioning data. */
export function splitProvisioning(env: Readonly<Record<string, string>>): Provisioning {
  const environment: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith(RESERVED_PREFIX)) environment[k] = v;
  }
  return {
    environment,
    sshHostKey: env[PROVISION_SSH_HOST_KEY] || undefined,
    supervisorToken: env[PROVISION_SUPERVISOR_TOKEN] || undefined,
    tlsCa: env[PROVISION_TLS_CA] || undefined,
  };
}

/** Whether a user-supplied variable name collides with the reserved names. */
export function isReservedVariable(name: string): boolean {
  return name.startsWith(RESERVED_PREFIX);
}
