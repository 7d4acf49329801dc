/**
 * The egress steps of `e2e:vm` (issue 14), on a real VM behind the real
 * egress proxy. Traffic goes only to this machine: a test host in a network
 * namespace the steps create (`ip netns add osh-e2e-<rand>`, a veth pair
 * with a private /30: `10.213.N.1` on the host side, `10.213.N.2` inside),
 * an HTTP server inside it on ports 8000 and 8001, and servers on the host's
 * loopback and its own address that must never be reached.
 *
 * - `egressSteps` (a gateway with egress on): a sandbox created with a
 *   policy allowing `10.213.N.2:8000` (allowed_ips `10.213.N.0/30`), plus
 *   rules for the host's loopback and own address that the SSRF rules must
 *   override; inside the VM: the proxy variables, `/etc/resolv.conf` and apt's
 *   proxy; curl (plain and CONNECT) and wget reach the allowed port; a port
 *   the policy does not allow is a 403 naming `host:port` and the fix; a
 *   denied name is NXDOMAIN (`getent hosts`, Python); nothing reaches the
 *   host's loopback or own address, through the proxy or directly
 *   (`10.0.2.2`); `policy set --wait` flips the denied port to allowed live.
 * - `noEgressChecks` (a gateway with `--no-egress`): no proxy variables, and
 *   name look-ups fail at once with "could not resolve" — never a crash.
 *
 * Called by `e2e/vm.ts`; each step function is self-contained so the file
 * can move with the e2e's structure.
 *
 * @module
 */
import { waitFor } from "../core/testing.ts";

/** Runs one named step (the caller times and records it); false when it failed or was skipped. */
export type StepRunner = (name: string, fn: () => Promise<void>) => Promise<boolean>;

/** One CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What the egress steps need from the e2e. */
export interface EgressContext {
  step: StepRunner;
  /** Runs the CLI against the e2e's gateway. */
  cli: (args: readonly string[], timeoutMs?: number) => Promise<CliResult>;
  /** A scratch dir of the run (policy files, the test host's server script). */
  base: string;
}

function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

async function run(cmd: string, args: readonly string[]): Promise<CliResult> {
  const out = await new Deno.Command(cmd, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function runOk(cmd: string, args: readonly string[]): Promise<string> {
  const r = await run(cmd, args);
  check(r.code === 0, `${cmd} ${args.join(" ")}: ${show(r)}`);
  return r.stdout;
}

/** The test host: a network namespace with a veth pair and an HTTP server inside. */
export interface TestHost {
  netns: string;
  /** The host side of the veth. */
  hostIp: string;
  /** The test host's address (inside the namespace). */
  ip: string;
  /** Its /30. */
  cidr: string;
  /** The ports its server answers on (`egress-e2e-ok <port>`). */
  ports: readonly number[];
  close(): Promise<void>;
}

const SERVER_SCRIPT = `
const [host, ...ports] = Deno.args;
for (const p of ports) {
  Deno.serve({ hostname: host, port: Number(p), onListen() {} }, () =>
    new Response("egress-e2e-ok " + p + "\\n"));
}
`;

/** Creates the namespace, the veth pair and the server; `close` removes all of it. */
export async function startTestHost(base: string): Promise<TestHost> {
  const rand = crypto.getRandomValues(new Uint8Array(3));
  const tag = [...rand].map((b) => b.toString(16).padStart(2, "0")).join("");
  const netns = `osh-e2e-${tag}`;
  // Interface names: at most 15 bytes.
  const hostIf = `oshe${tag}h`;
  const nsIf = `oshe${tag}n`;
  // A /30 not in use on this host (another run may hold one).
  const used = await runOk("ip", ["-4", "-o", "addr", "show"]);
  let octet = rand[0];
  for (let i = 0; i < 256 && used.includes(`10.213.${octet}.`); i++) octet = (octet + 1) % 256;
  check(!used.includes(`10.213.${octet}.`), "no free 10.213.N.0/30 on this host");
  const hostIp = `10.213.${octet}.1`;
  const ip = `10.213.${octet}.2`;
  const ports = [8000, 8001];
  let server: Deno.ChildProcess | undefined;
  const close = async () => {
    try {
      server?.kill("SIGKILL");
    } catch { /* gone */ }
    await server?.status.catch(() => {});
    // Deleting the namespace removes its end of the veth pair, and so both ends.
    await run("ip", ["netns", "del", netns]);
    await run("ip", ["link", "del", hostIf]);
  };
  try {
    await runOk("ip", ["netns", "add", netns]);
    await runOk("ip", ["link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    await runOk("ip", ["link", "set", nsIf, "netns", netns]);
    await runOk("ip", ["addr", "add", `${hostIp}/30`, "dev", hostIf]);
    await runOk("ip", ["link", "set", hostIf, "up"]);
    const inNs = (args: string[]) => runOk("ip", ["netns", "exec", netns, ...args]);
    await inNs(["ip", "link", "set", "lo", "up"]);
    await inNs(["ip", "addr", "add", `${ip}/30`, "dev", nsIf]);
    await inNs(["ip", "link", "set", nsIf, "up"]);
    const script = `${base}/egress_test_host.ts`;
    await Deno.writeTextFile(script, SERVER_SCRIPT);
    server = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        netns,
        Deno.execPath(),
        "run",
        "--no-config",
        "--no-lock",
        "--quiet",
        `--allow-net=${ip}`,
        script,
        ip,
        ...ports.map(String),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    for (const port of ports) {
      await waitFor(`the test host's server on ${ip}:${port}`, async () => {
        const r = await fetch(`http://${ip}:${port}/`).then((r) => r.text()).catch(() => "");
        return r.startsWith("egress-e2e-ok") ? true : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200 });
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { netns, hostIp, ip, cidr: `10.213.${octet}.0/30`, ports, close };
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

/** The host's first non-loopback IPv4 address (the SSRF rules deny the host's own addresses). */
function hostOwnAddress(exclude: string): string | undefined {
  return Deno.networkInterfaces().find((i) =>
    i.family === "IPv4" && !i.address.startsWith("127.") && i.address !== exclude &&
    !i.address.startsWith("10.213.")
  )?.address;
}

/** A YAML policy (the CLI's format): the test host, and rules the SSRF rules must override. */
export function egressPolicyYaml(o: {
  testHost: string;
  cidr: string;
  ports: readonly number[];
  forbidden: readonly { host: string; port: number }[];
}): string {
  const lines = [
    "network_policies:",
    "  testhost:",
    "    endpoints:",
    `      - host: ${o.testHost}`,
    o.ports.length === 1 ? `        port: ${o.ports[0]}` : `        ports: [${o.ports.join(", ")}]`,
    `        allowed_ips: ["${o.cidr}"]`,
  ];
  if (o.forbidden.length) {
    lines.push("  host-itself:", "    endpoints:");
    for (const f of o.forbidden) {
      lines.push(
        `      - host: ${f.host}`,
        `        port: ${f.port}`,
        `        allowed_ips: ["${f.host}/32"]`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** A shell line printing `<label>=<exit status>` after `command` (its output discarded). */
function status(label: string, command: string): string {
  return `${command} >/dev/null 2>&1; echo ${label}=$?`;
}

/** Runs every egress step against a gateway with egress on; cleans up after itself. */
export async function egressSteps(ctx: EgressContext): Promise<boolean> {
  const { step, cli, base } = ctx;
  const name = "egress";
  const exec = (script: string, timeoutMs = 120_000) =>
    cli(["sandbox", "exec", name, "--", "bash", "-lc", script], timeoutMs);
  let host: TestHost | undefined;
  let forbidden: ReturnType<typeof startForbidden> | undefined;
  let own: string | undefined;
  let created = false;
  let ok = true;
  const policyFile = `${base}/egress-policy.yaml`;
  try {
    ok &&= await step(
      "5k. egress: a test host in a network namespace (veth /30, HTTP on 8000 and 8001)",
      async () => {
        host = await startTestHost(base);
        own = hostOwnAddress(host.hostIp);
        forbidden = startForbidden(["127.0.0.1", ...(own ? [own] : [])]);
        console.error(
          `    ${host.netns}: ${host.hostIp} ↔ ${host.ip}; host servers on 127.0.0.1` +
            `${own ? ` and ${own}` : ""}:${forbidden.port}`,
        );
      },
    );
    ok &&= await step(
      "5l. egress: create --policy; the proxy variables, resolv.conf over TCP, apt's proxy",
      async () => {
        const h = host!;
        await Deno.writeTextFile(
          policyFile,
          egressPolicyYaml({
            testHost: h.ip,
            cidr: h.cidr,
            ports: [h.ports[0]],
            forbidden: [
              { host: "127.0.0.1", port: forbidden!.port },
              ...(own ? [{ host: own, port: forbidden!.port }] : []),
            ],
          }),
        );
        const c = await cli(
          ["sandbox", "create", "--name", name, "--policy", policyFile, "--", "true"],
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
    );
    ok &&= await step(
      "5m. egress: curl (GET and CONNECT) and wget reach the allowed test host",
      async () => {
        const h = host!;
        const url = `http://${h.ip}:${h.ports[0]}/`;
        const r = await exec(
          `curl -sS -m 30 ${url}; curl -sS -m 30 --proxytunnel ${url}; ` +
            `wget -q -T 30 -O- ${url}; echo wget=$?`,
        );
        const want = `egress-e2e-ok ${h.ports[0]}\n`;
        check(
          r.code === 0 && r.stdout.startsWith(want.repeat(3)) && r.stdout.includes("wget=0"),
          `the allowed test host through the proxy: ${show(r)}`,
        );
      },
    );
    ok &&= await step(
      "5n. egress: a port not allowed is 403 naming host:port and the fix; a denied name NXDOMAIN",
      async () => {
        const h = host!;
        const denied = `${h.ip}:${h.ports[1]}`;
        const r = await exec(
          `curl -sS -m 30 http://${denied}/; echo; curl -sS -v -m 30 --proxytunnel ` +
            `http://${denied}/ 2>&1 | grep -E '^< HTTP/1.1 403|CONNECT tunnel failed'; ` +
            `t0=$(date +%s%N); getent hosts denied.example; echo getent=$?; ` +
            `echo ms=$(( ($(date +%s%N) - t0) / 1000000 )); ` +
            `python3 -c 'import socket
try: socket.getaddrinfo("denied.example", 443)
except socket.gaierror as e: print("gai", e.errno)'; ` +
            `getent hosts ${h.ip}; echo literal=$?; ` +
            status("curlname", "curl -sS -m 30 --noproxy '*' http://denied.example/"),
        );
        check(r.code === 0, `exec: ${show(r)}`);
        check(
          r.stdout.includes(`${denied} is not allowed by this sandbox's network policy`) &&
            r.stdout.includes("openshell policy set"),
          `the 403 body names host:port and the fix: ${show(r)}`,
        );
        check(/< HTTP\/1\.1 403|CONNECT tunnel failed, response 403/.test(r.stdout), show(r));
        check(r.stdout.includes("getent=2"), `getent hosts denied.example: ${show(r)}`);
        const ms = Number(/ms=(\d+)/.exec(r.stdout)?.[1] ?? NaN);
        // NXDOMAIN (EAI_NONAME, -2), an answer from the proxy — not a timeout (-3).
        check(r.stdout.includes("gai -2"), `Python's getaddrinfo: ${show(r)}`);
        check(r.stdout.includes(`${h.ip}`) && r.stdout.includes("literal=0"), show(r));
        check(r.stdout.includes("curlname=6"), `curl: could not resolve: ${show(r)}`);
        console.error(`    getent hosts denied.example → NXDOMAIN in ${ms} ms`);
      },
    );
    ok &&= await step(
      "5o. egress: the host's loopback and own address are reached neither via the proxy nor directly",
      async () => {
        const f = forbidden!;
        const p = f.port;
        const viaProxy = (addr: string) =>
          `curl -sS -v -m 20 --noproxy '' -x http://10.0.2.101:3128 http://${addr}:${p}/ 2>&1 ` +
          `| grep -c '^< HTTP/1.1 403'`;
        const r = await exec(
          `echo lo=$(${viaProxy("127.0.0.1")}); ` +
            (own ? `echo own=$(${viaProxy(own)}); ` : "") +
            `echo tunnel=$(curl -sS -v -m 20 --proxytunnel --noproxy '' -x http://10.0.2.101:3128 ` +
            `http://127.0.0.1:${p}/ 2>&1 | grep -c 'CONNECT tunnel failed, response 403'); ` +
            status("router", `curl -sS -m 5 --noproxy '*' http://10.0.2.2:${p}/`),
        );
        check(r.code === 0, `exec: ${show(r)}`);
        check(r.stdout.includes("lo=1"), `loopback via the proxy not 403: ${show(r)}`);
        if (own) check(r.stdout.includes("own=1"), `own address via the proxy: ${show(r)}`);
        check(r.stdout.includes("tunnel=1"), `CONNECT to loopback not 403: ${show(r)}`);
        check(!/router=0\b/.test(r.stdout), `10.0.2.2:${p} answered: ${show(r)}`);
        check(f.hits() === 0, `the host's servers were reached ${f.hits()} time(s)`);
      },
    );
    ok &&= await step(
      "5p. egress: policy set --wait flips the denied port to allowed, live",
      async () => {
        const h = host!;
        const next = `${base}/egress-policy-2.yaml`;
        await Deno.writeTextFile(
          next,
          egressPolicyYaml({ testHost: h.ip, cidr: h.cidr, ports: h.ports, forbidden: [] }),
        );
        const t0 = Date.now();
        const set = await cli(["policy", "set", name, "--policy", next, "--wait"], 60_000);
        const setMs = Date.now() - t0;
        check(set.code === 0, `policy set --wait: ${show(set)}`);
        const r = await exec(`curl -sS -m 30 http://${h.ip}:${h.ports[1]}/`);
        check(
          r.code === 0 && r.stdout === `egress-e2e-ok ${h.ports[1]}\n`,
          `the newly allowed port: ${show(r)}`,
        );
        const list = await cli(["policy", "list", name]);
        check(list.code === 0, `policy list: ${show(list)}`);
        console.error(`    policy set --wait → LOADED in ${setMs} ms; the sandbox kept running`);
      },
    );
    ok &&= await step("5q. egress: delete the sandbox", async () => {
      const d = await cli(["sandbox", "delete", name]);
      check(d.code === 0, `delete: ${show(d)}`);
      created = false;
    });
  } finally {
    if (created) await cli(["sandbox", "delete", name]).catch(() => {});
    await forbidden?.close().catch(() => {});
    await host?.close().catch(() => {});
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
  const r = await cli([
    "sandbox",
    "exec",
    sandbox,
    "--",
    "bash",
    "-lc",
    'echo "proxy=[$HTTP_PROXY$https_proxy]"; grep -v "^#" /etc/resolv.conf | tr "\\n" ";"; echo; ' +
    "t0=$(date +%s%N); getent hosts example.com; echo getent=$?; " +
    'python3 -c \'import socket\ntry: socket.getaddrinfo("example.com", 80)\n' +
    'except socket.gaierror as e: print("gai", e.errno)\'; ' +
    "curl -sS -m 10 http://example.com/; echo curl=$?; " +
    "wget -q -T 5 -t 1 -O- http://1.1.1.1/; echo wget=$?; " +
    "echo ms=$(( ($(date +%s%N) - t0) / 1000000 ))",
  ], 120_000);
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
