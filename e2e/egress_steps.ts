/**
 * The egress steps of `e2e:vm` (issue 14), on a real VM behind the real
 * egress proxy. Traffic goes only to this machine: two test hosts, each in
 * a network namespace of its own joined to the host by a veth pair with a
 * private /30 (`testing/netns.ts`: `10.213.X.Y`), and servers on the host's
 * loopback and on its own (veth) address that must never be reached.
 *
 * - `egressSteps` (a gateway with egress on): a sandbox created with a
 *   policy allowing test host A's address and port (allowed_ips its /32),
 *   plus rules for the host's loopback and own address that the SSRF rules
 *   must override; inside the VM: the proxy variables, `/etc/resolv.conf`
 *   and apt's proxy; curl (plain and CONNECT) and wget reach A; test host B
 *   (no rule) is a 403 naming `host:port` and the fix; a denied name is
 *   NXDOMAIN (`getent hosts`, Python); nothing reaches the host's loopback
 *   or own address, through the proxy or directly (`10.0.2.2`);
 *   `policy set --wait` flips B from denied to allowed, live.
 * - `noEgressChecks` (a gateway with `--no-egress`): no proxy variables, and
 *   name look-ups fail at once with "could not resolve" — never a crash.
 *
 * Called by `e2e/vm.ts` with its step runner; a step whose prerequisite (the
 * test hosts, the egress sandbox) is missing is reported ignored.
 *
 * @module
 */
import { type NetnsServer, startNetnsServer } from "../testing/netns.ts";
import type { StepRunner } from "./installed.ts";

/** One CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What the egress steps need from the e2e. */
export interface EgressContext {
  /** Runs one step (`needs`: what is missing, if anything; then it is ignored). */
  step: StepRunner;
  /** Runs the CLI against the e2e's gateway. */
  cli: (args: readonly string[], timeoutMs?: number) => Promise<CliResult>;
  /** Where the policy files go: a dir the CLI may read (its grants are narrowed to its config dir). */
  policyDir: string;
}

function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** Servers on the host that no guest may reach; each counts its requests. */
function startForbidden(
  addresses: readonly string[],
): { port: number; hits: () => number; close(): Promise<void> } {
  let hits = 0;
  const first = Deno.serve({ hostname: addresses[0], port: 0, onListen() {} }, () => {
    hits++;
    return new Response("host-reached\n");
  });
  const port = first.addr.port;
  const servers = [first];
  for (const a of addresses.slice(1)) {
    servers.push(Deno.serve({ hostname: a, port, onListen() {} }, () => {
      hits++;
      return new Response("host-reached\n");
    }));
  }
  return {
    port,
    hits: () => hits,
    close: async () => {
      for (const s of servers) await s.shutdown();
    },
  };
}

/**
 * A YAML policy (the CLI's format): one rule per group of `host:port`
 * endpoints, each private address allowed through `allowed_ips` (its /32).
 */
export function egressPolicyYaml(
  rules: Readonly<Record<string, readonly { host: string; port: number }[]>>,
): string {
  const lines = ["network_policies:"];
  for (const [name, endpoints] of Object.entries(rules)) {
    lines.push(`  ${name}:`, "    endpoints:");
    for (const e of endpoints) {
      lines.push(
        `      - host: ${e.host}`,
        `        port: ${e.port}`,
        `        allowed_ips: ["${e.host}/32"]`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** A shell line printing `<label>=<exit status>` after `command` (its output discarded). */
function status(label: string, command: string): string {
  return `${command} >/dev/null 2>&1; echo ${label}=$?`;
}

/**
 * A shell line printing `gai <errno>` when Python's `socket.getaddrinfo`
 * fails for `name` (-2: the name does not exist, -3: no answer), nothing
 * when it resolves. One line: `sandbox exec` refuses arguments with a newline.
 */
function pythonLookup(name: string): string {
  return `python3 -c 'import socket; socket.getaddrinfo("${name}", 443)' 2>&1 ` +
    `| grep -o 'Errno -[0-9]*' | sed 's/Errno /gai /'`;
}

/** The shell line of step 5n: `denied` (`host:port`) through the proxy, DNS of a denied name. */
export function deniedChecksScript(o: { denied: string; literal: string }): string {
  return `curl -sS -m 30 http://${o.denied}/hello; echo; curl -sS -v -m 30 --proxytunnel ` +
    `http://${o.denied}/hello 2>&1 | grep -E '^< HTTP/1.1 403|CONNECT tunnel failed'; ` +
    `t0=$(date +%s%N); getent hosts denied.example; echo getent=$?; ` +
    `echo ms=$(( ($(date +%s%N) - t0) / 1000000 )); ` +
    `${pythonLookup("denied.example")}; ` +
    // getaddrinfo takes an address as it is (`getent hosts ADDR` would ask DNS for its PTR).
    `getent ahosts ${o.literal} >/dev/null; echo literal=$?; ` +
    status("curlname", "curl -sS -m 30 --noproxy '*' http://denied.example/");
}

/** The shell line of the no-egress checks (see {@link noEgressChecks}). */
export function noEgressScript(): string {
  return 'echo "proxy=[$HTTP_PROXY$https_proxy]"; grep -v "^#" /etc/resolv.conf | tr "\\n" ";"; ' +
    "echo; t0=$(date +%s%N); getent hosts example.com; echo getent=$?; " +
    `${pythonLookup("example.com")}; ` +
    "curl -sS -m 10 http://example.com/; echo curl=$?; " +
    "wget -q -T 5 -t 1 -O- http://1.1.1.1/; echo wget=$?; " +
    "echo ms=$(( ($(date +%s%N) - t0) / 1000000 ))";
}

/** `bash -lc SCRIPT` in `sandbox`; the script must be one line (the CLI refuses newlines). */
function execLine(
  cli: EgressContext["cli"],
  sandbox: string,
  script: string,
  timeoutMs = 120_000,
): Promise<CliResult> {
  if (/[\r\n]/.test(script)) throw new Error(`a multi-line exec script: ${script}`);
  return cli(["sandbox", "exec", sandbox, "--", "bash", "-lc", script], timeoutMs);
}

/** Runs every egress step against a gateway with egress on; cleans up after itself. */
export async function egressSteps(ctx: EgressContext): Promise<boolean> {
  const { cli, policyDir } = ctx;
  let ok = true;
  const step: StepRunner = async (label, fn, needs) => {
    const passed = await ctx.step(label, fn, needs);
    ok &&= passed || (needs ?? []).some((n) => n !== undefined);
    return passed;
  };
  const name = "egress";
  const exec = (script: string, timeoutMs = 120_000) => execLine(cli, name, script, timeoutMs);
  /** A: allowed from the start; B: denied until `policy set`. */
  let a: NetnsServer | undefined;
  let b: NetnsServer | undefined;
  let forbidden: ReturnType<typeof startForbidden> | undefined;
  let created = false;
  const needHosts = () => a && b && forbidden ? undefined : "the test hosts of 5k";
  const needSandbox = () => created ? undefined : "the egress sandbox of 5l";
  const target = (s: NetnsServer) => `${s.address}:${s.port}`;
  /** The policy: A (and B when `withB`), plus the host itself, which the SSRF rules deny. */
  const policy = (withB: boolean) =>
    egressPolicyYaml({
      testhost: [
        { host: a!.address, port: a!.port },
        ...(withB ? [{ host: b!.address, port: b!.port }] : []),
      ],
      "host-itself": [
        { host: "127.0.0.1", port: forbidden!.port },
        { host: a!.hostAddress, port: forbidden!.port },
      ],
    });
  try {
    await step(
      "5k. egress: two test hosts in network namespaces (testing/netns.ts)",
      async () => {
        a = await startNetnsServer();
        b = await startNetnsServer();
        forbidden = startForbidden(["127.0.0.1", a.hostAddress]);
        console.error(
          `    A ${target(a)} (${a.ns}), B ${target(b)} (${b.ns}); host servers on ` +
            `127.0.0.1 and ${a.hostAddress} port ${forbidden.port}`,
        );
      },
    );
    await step(
      "5l. egress: create --policy; the proxy variables, resolv.conf over TCP, apt's proxy",
      async () => {
        const file = `${policyDir}/egress-policy.yaml`;
        await Deno.writeTextFile(file, policy(false));
        const c = await cli(
          ["sandbox", "create", "--name", name, "--policy", file, "--", "true"],
          300_000,
        );
        check(c.code === 0, `create --policy: ${show(c)}`);
        created = true;
        const r = await exec(
          'echo "proxy=$HTTP_PROXY $HTTPS_PROXY $ALL_PROXY $http_proxy $https_proxy $all_proxy"; ' +
            'echo "no_proxy=$NO_PROXY|$no_proxy"; ' +
            "grep -v '^#' /etc/resolv.conf | tr '\\n' ';'; echo; " +
            "apt-config dump | grep -c 'Proxy \"http://10.0.2.101:3128\"'; " +
            "sudo -n sh -c 'echo sudo=$https_proxy'",
        );
        check(r.code === 0, `exec: ${show(r)}`);
        const url = "http://10.0.2.101:3128";
        check(
          r.stdout.includes(`proxy=${Array(6).fill(url).join(" ")}\n`),
          `proxy variables: ${show(r)}`,
        );
        check(
          r.stdout.includes("no_proxy=localhost,127.0.0.1,::1|localhost,127.0.0.1,::1"),
          `NO_PROXY: ${show(r)}`,
        );
        check(
          r.stdout.includes("nameserver 10.0.2.101;options use-vc;"),
          `resolv.conf: ${show(r)}`,
        );
        check(/^2$/m.test(r.stdout), `apt's Acquire::http(s)::Proxy: ${show(r)}`);
        check(r.stdout.includes(`sudo=${url}`), `sudo keeps the proxy variables: ${show(r)}`);
      },
      [needHosts()],
    );
    await step(
      "5m. egress: curl (GET and CONNECT) and wget reach the allowed test host",
      async () => {
        const url = `http://${target(a!)}/hello`;
        const r = await exec(
          `curl -sS -m 30 ${url}; curl -sS -m 30 --proxytunnel ${url}; ` +
            `wget -q -T 30 -O- ${url}; echo wget=$?`,
        );
        const want = `hello from ${a!.address}\n`;
        check(
          r.code === 0 && r.stdout.startsWith(want.repeat(3)) && r.stdout.includes("wget=0"),
          `the allowed test host through the proxy: ${show(r)}`,
        );
      },
      [needHosts(), needSandbox()],
    );
    await step(
      "5n. egress: a host:port not allowed is 403 naming it and the fix; a denied name NXDOMAIN",
      async () => {
        const denied = target(b!);
        const r = await exec(deniedChecksScript({ denied, literal: a!.address }));
        check(r.code === 0, `exec: ${show(r)}`);
        check(
          r.stdout.includes(`${denied} is not allowed by this sandbox's network policy`) &&
            r.stdout.includes("openshell policy set"),
          `the 403 body names host:port and the fix: ${show(r)}`,
        );
        check(/< HTTP\/1\.1 403|CONNECT tunnel failed, response 403/.test(r.stdout), show(r));
        check(r.stdout.includes("getent=2"), `getent hosts denied.example: ${show(r)}`);
        const ms = Number(/ms=(\d+)/.exec(r.stdout)?.[1] ?? NaN);
        // NXDOMAIN (EAI_NONAME, -2): an answer from the proxy, not a failure to ask (-3).
        check(r.stdout.includes("gai -2"), `Python's getaddrinfo: ${show(r)}`);
        check(r.stdout.includes("literal=0"), `an IP literal needs no DNS: ${show(r)}`);
        check(r.stdout.includes("curlname=6"), `curl: could not resolve: ${show(r)}`);
        console.error(`    getent hosts denied.example → NXDOMAIN in ${ms} ms`);
      },
      [needHosts(), needSandbox()],
    );
    await step(
      "5o. egress: the host's loopback and own address are reached neither via the proxy nor directly",
      async () => {
        const f = forbidden!;
        const p = f.port;
        const viaProxy = (addr: string, tunnel = false) =>
          `curl -sS -v -m 20 ${tunnel ? "--proxytunnel " : ""}--noproxy '' ` +
          `-x http://10.0.2.101:3128 http://${addr}:${p}/ 2>&1 ` +
          `| grep -cE '^< HTTP/1.1 403|CONNECT tunnel failed, response 403'`;
        const r = await exec(
          `echo lo=$(${viaProxy("127.0.0.1")}); echo own=$(${viaProxy(a!.hostAddress)}); ` +
            `echo tunnel=$(${viaProxy("127.0.0.1", true)}); ` +
            status("router", `curl -sS -m 5 --noproxy '*' http://10.0.2.2:${p}/`),
        );
        check(r.code === 0, `exec: ${show(r)}`);
        check(/^lo=[1-9]/m.test(r.stdout), `loopback via the proxy not 403: ${show(r)}`);
        check(/^own=[1-9]/m.test(r.stdout), `the host's own address via the proxy: ${show(r)}`);
        check(/^tunnel=[1-9]/m.test(r.stdout), `CONNECT to loopback not 403: ${show(r)}`);
        check(!/^router=0$/m.test(r.stdout), `10.0.2.2:${p} answered: ${show(r)}`);
        check(f.hits() === 0, `the host's servers were reached ${f.hits()} time(s)`);
      },
      [needHosts(), needSandbox()],
    );
    await step(
      "5p. egress: policy set --wait flips the denied host:port to allowed, live",
      async () => {
        const file = `${policyDir}/egress-policy-2.yaml`;
        await Deno.writeTextFile(file, policy(true));
        const t0 = Date.now();
        const set = await cli(["policy", "set", name, "--policy", file, "--wait"], 60_000);
        const setMs = Date.now() - t0;
        check(set.code === 0, `policy set --wait: ${show(set)}`);
        const r = await exec(`curl -sS -m 30 http://${target(b!)}/hello`);
        check(
          r.code === 0 && r.stdout === `hello from ${b!.address}\n`,
          `the newly allowed host:port: ${show(r)}`,
        );
        const list = await cli(["policy", "list", name]);
        check(list.code === 0, `policy list: ${show(list)}`);
        console.error(`    policy set --wait → LOADED in ${setMs} ms; the sandbox kept running`);
      },
      [needHosts(), needSandbox()],
    );
    await step("5q. egress: delete the sandbox", async () => {
      const d = await cli(["sandbox", "delete", name]);
      check(d.code === 0, `delete: ${show(d)}`);
      created = false;
    }, [needSandbox()]);
  } finally {
    if (created) await cli(["sandbox", "delete", name]).catch(() => {});
    await forbidden?.close().catch(() => {});
    await a?.close().catch(() => {});
    await b?.close().catch(() => {});
  }
  return ok;
}

/**
 * Checks inside a sandbox of a gateway with `--no-egress`: no proxy
 * variables, the name server points at nothing, and look-ups, curl and wget
 * fail at once with a clear message (no crash, no wait on dropped packets).
 */
export async function noEgressChecks(
  cli: EgressContext["cli"],
  sandbox: string,
): Promise<void> {
  const r = await execLine(cli, sandbox, noEgressScript());
  check(r.code === 0, `exec: ${show(r)}`);
  check(r.stdout.includes("proxy=[]"), `proxy variables without egress: ${show(r)}`);
  check(r.stdout.includes("nameserver 127.0.0.1;"), `resolv.conf: ${show(r)}`);
  check(r.stdout.includes("getent=2"), `getent: ${show(r)}`);
  check(/gai -[23]\b/.test(r.stdout), `getaddrinfo: ${show(r)}`);
  check(r.stdout.includes("curl=6") && r.stderr.includes("Could not resolve host"), show(r));
  const wget = Number(/wget=(\d+)/.exec(r.stdout)?.[1] ?? NaN);
  check(wget !== 0 && wget < 128, `wget to an address must fail, not crash: ${show(r)}`);
  const ms = Number(/ms=(\d+)/.exec(r.stdout)?.[1] ?? NaN);
  console.error(`    no egress: look-ups, curl and wget all failed cleanly in ${ms} ms`);
}
