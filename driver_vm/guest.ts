/**
 * What the driver tells a guest, and the fixed guest network.
 *
 * The guest learns everything from files the driver hands qemu as fw_cfg
 * entries (`/sys/firmware/qemu_fw_cfg/by_name/opt/openshell/<name>/raw`
 * inside the guest): never from probing. The guest init copies them into
 * `/etc/openshell/` (0700) before anything else runs.
 *
 * Most are written once, at create; two are written at every boot, from
 * what the driver runs with then: `network` (whether egress is on: the
 * init writes `/etc/resolv.conf` and apt's proxy setting from it) and the
 * `environment` handed over, which is the sandbox's own plus, with egress
 * on, the proxy variables ({@link egressEnvironment}).
 *
 * @module
 */
import { GUEST_GATEWAY_ADDRESS, GUEST_GATEWAY_HOST, GUEST_GATEWAY_PORT } from "../core/grants.ts";
import { shellQuote } from "../core/shell.ts";

/** qemu user-network addresses (its defaults, written out). */
export const GUEST_NET = {
  /** The guest's network. */
  network: "10.0.2.0/24",
  /** The guest's own address (static; no DHCP needed). */
  guest: "10.0.2.15",
  /** qemu's virtual router (the host as seen by the guest; closed by `restrict=on`). */
  router: "10.0.2.2",
  /** The address the gateway alias resolves to; qemu forwards its port to the gateway. */
  gatewayAlias: GUEST_GATEWAY_ADDRESS,
  /** The egress alias: its proxy and DNS ports are forwarded to the egress proxy (egress on). */
  egressAlias: "10.0.2.101",
} as const;

/** The guest's ways out with egress on: both on {@link GUEST_NET}'s `egressAlias`. */
export const GUEST_EGRESS = {
  /** HTTP proxy (CONNECT and absolute-form requests). */
  proxyPort: 3128,
  /** DNS over TCP (slirp's guestfwd carries TCP only; glibc asks over TCP with `use-vc`). */
  dnsPort: 53,
} as const;

/** The proxy URL every login and exec gets with egress on. */
export const GUEST_PROXY_URL = `http://${GUEST_NET.egressAlias}:${GUEST_EGRESS.proxyPort}`;

/** Hosts the guest reaches without the proxy. */
export const GUEST_NO_PROXY = "localhost,127.0.0.1,::1";

/**
 * The proxy variables of every login and exec with egress on (upper and
 * lower case: curl reads only `http_proxy` for http, others only the upper
 * case). They win over the sandbox's own: the proxy is the only way out.
 */
export function egressEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]) {
    env[k] = GUEST_PROXY_URL;
    env[k.toLowerCase()] = GUEST_PROXY_URL;
  }
  env.NO_PROXY = GUEST_NO_PROXY;
  env.no_proxy = GUEST_NO_PROXY;
  return env;
}

/** The environment handed to a guest at boot: the sandbox's, plus the proxy's with egress on. */
export function bootEnvironment(
  sandbox: Readonly<Record<string, string>>,
  egress: boolean,
): Record<string, string> {
  return egress ? { ...sandbox, ...egressEnvironment() } : { ...sandbox };
}

/**
 * The endpoint every guest dials, whatever the host gateway's own address:
 * `https` when the gateway's supervisor plane serves TLS (the guest then
 * verifies it against the CA the driver hands it), else `http`.
 */
export function guestEndpoint(tls: boolean): string {
  return `${tls ? "https" : "http"}://${GUEST_GATEWAY_HOST}:${GUEST_GATEWAY_PORT}`;
}

/** Prefix of the fw_cfg names the driver uses (`opt/` is the space for users). */
export const FW_CFG_PREFIX = "opt/openshell";

/** fw_cfg entry names (below {@link FW_CFG_PREFIX}) and the guest file each becomes. */
export const GUEST_FILES = {
  config: { fwcfg: "config", guestPath: "/etc/openshell/config" },
  environment: { fwcfg: "environment", guestPath: "/etc/openshell/environment" },
  network: { fwcfg: "network", guestPath: "/etc/openshell/network" },
  sshHostKey: { fwcfg: "ssh_host_key", guestPath: "/etc/openshell/ssh_host_key" },
  supervisorToken: { fwcfg: "supervisor_token", guestPath: "/etc/openshell/supervisor_token" },
  tlsCa: { fwcfg: "tls_ca", guestPath: "/etc/openshell/tls_ca.crt" },
} as const;

/** What the guest's config file carries. */
export interface GuestConfig {
  sandboxId: string;
  sandboxName: string;
  /** Supervisor log level. */
  logLevel: string;
  /** Whether the supervisor plane serves TLS (a CA file is then handed over too). */
  tls: boolean;
}

/** The guest's host name when the sandbox name gives none. */
export const DEFAULT_GUEST_HOSTNAME = "openshell-sandbox";

/**
 * The guest's host name (and so its shell prompt): the sandbox name as a
 * DNS label (lower case; anything but letters, digits and '-' becomes '-';
 * at most 63 characters; no '-' at either end).
 */
export function guestHostname(sandboxName: string): string {
  const label = sandboxName.toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return label || DEFAULT_GUEST_HOSTNAME;
}

function assignments(vars: Readonly<Record<string, string>>): string {
  return Object.entries(vars).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid variable name: ${k}`);
    if (v.includes("\0")) throw new Error(`variable ${k} contains a NUL byte`);
    return `${k}=${shellQuote(v)}\n`;
  }).join("");
}

/**
 * The guest config file: shell assignments the init sources. Values are
 * quoted, so nothing in a sandbox name can run in the guest's init.
 */
export function renderGuestConfig(config: GuestConfig): string {
  return "# openshell guest config (written by openshell-driver-vm)\n" + assignments({
    OPENSHELL_SANDBOX_ID: config.sandboxId,
    OPENSHELL_SANDBOX: config.sandboxName,
    OPENSHELL_HOSTNAME: guestHostname(config.sandboxName),
    OPENSHELL_ENDPOINT: guestEndpoint(config.tls),
    OPENSHELL_LOG_LEVEL: config.logLevel,
    OPENSHELL_GUEST_IP: GUEST_NET.guest,
    OPENSHELL_GUEST_ROUTER: GUEST_NET.router,
    OPENSHELL_GATEWAY_IP: GUEST_NET.gatewayAlias,
    OPENSHELL_GATEWAY_HOST: GUEST_GATEWAY_HOST,
  });
}

/**
 * The guest's network settings of this boot (shell assignments the init
 * sources): with egress on, the proxy URL and the name server (the egress
 * alias); off, both empty (the init then points `/etc/resolv.conf` at
 * nothing that answers, so look-ups fail at once).
 */
export function renderGuestNetwork(options: { egress: boolean }): string {
  return "# openshell guest network (written by openshell-driver-vm at every boot)\n" +
    assignments({
      OPENSHELL_EGRESS_PROXY: options.egress ? GUEST_PROXY_URL : "",
      OPENSHELL_EGRESS_DNS: options.egress ? GUEST_NET.egressAlias : "",
    });
}

/**
 * The sandbox environment for user processes, as the supervisor's
 * `--env-file` reads it: a JSON object, keys sorted.
 */
export function renderGuestEnvironment(env: Readonly<Record<string, string>>): string {
  for (const k of Object.keys(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid variable name: ${k}`);
  }
  const sorted = Object.fromEntries(
    Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  return JSON.stringify(sorted) + "\n";
}
