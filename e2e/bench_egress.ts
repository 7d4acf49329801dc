/**
 * Egress proxy throughput and connection set-up, next to the direct path
 * measured in the same process at the same time:
 *
 * - download N MB from a server in a network namespace: directly (TCP),
 *   through a CONNECT tunnel of the proxy, and by plain HTTP forwarding;
 * - the time from opening a guest connection to `200 Connection
 *   established` (decision, dial, reply) against a direct TCP connect.
 *
 * `deno run -A e2e/bench_egress.ts [--mb N] [--runs N] [--connects N]`; needs root and ip(8)
 * (it creates the namespace like the egress tests do). The proxy runs in
 * this process (`startEgress`), as the guest socket's client does what the
 * VM driver does: header line first.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Logger } from "../core/log.ts";
import { startEgress } from "../egress/server.ts";
import { openGuest, readHead, writeAll } from "../egress/testing.ts";
import { netnsUnavailable, startNetnsServer } from "../testing/netns.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mb: { type: "string", default: "200" },
    runs: { type: "string", default: "3" },
    connects: { type: "string", default: "200" },
  },
});
const MB = Number(values.mb);
const RUNS = Number(values.runs);
const CONNECTS = Number(values.connects);

const why = netnsUnavailable();
if (why) {
  console.log(`skipped: cannot create a network namespace (${why})`);
  Deno.exit(0);
}

async function drain(conn: Deno.Conn, first: number): Promise<number> {
  let total = first;
  const buf = new Uint8Array(256 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return total;
    total += n;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const srv = await startNetnsServer();
const dir = await Deno.makeTempDir({ prefix: "osegb" });
const egress = await startEgress({
  stateDir: `${dir}/egress`,
  log: new Logger({ level: "error" }),
});
try {
  egress.policies.apply("bench", 1, {
    network_policies: {
      ns: {
        endpoints: [{ host: srv.address, port: srv.port, allowed_ips: [`${srv.address}/32`] }],
      },
    },
  });
  const bytes = MB * 1_000_000;
  const get = `GET /bytes?n=${bytes} HTTP/1.1\r\nHost: ${srv.address}\r\nConnection: close\r\n\r\n`;
  const paths: Record<string, () => Promise<number>> = {
    "direct TCP": async () => {
      const c = await Deno.connect({ hostname: srv.address, port: srv.port });
      await writeAll(c, get);
      const n = await drain(c, 0);
      c.close();
      return n;
    },
    "CONNECT tunnel": async () => {
      const c = await openGuest(egress.guestSocket, "bench", "http");
      await writeAll(c, `CONNECT ${srv.address}:${srv.port} HTTP/1.1\r\n\r\n${get}`);
      const h = await readHead(c);
      if (h.status !== 200) throw new Error(`CONNECT: ${h.head}`);
      const n = await drain(c, h.rest.length);
      c.close();
      return n;
    },
    "HTTP forward": async () => {
      const c = await openGuest(egress.guestSocket, "bench", "http");
      await writeAll(
        c,
        `GET http://${srv.address}:${srv.port}/bytes?n=${bytes} HTTP/1.1\r\nHost: ${srv.address}\r\n\r\n`,
      );
      const n = await drain(c, 0);
      c.close();
      return n;
    },
  };
  console.log(`download of ${MB} MB from a server in a network namespace, median of ${RUNS} runs`);
  console.log("| path | MB/s |");
  console.log("| --- | ---: |");
  for (const [name, run] of Object.entries(paths)) {
    const rates: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const n = await run();
      const secs = (performance.now() - t0) / 1000;
      if (n < bytes) throw new Error(`${name}: only ${n} of ${bytes} bytes`);
      rates.push(bytes / 1e6 / secs);
    }
    console.log(`| ${name} | ${median(rates).toFixed(0)} |`);
  }

  const direct: number[] = [];
  const proxied: number[] = [];
  for (let i = 0; i < CONNECTS; i++) {
    let t0 = performance.now();
    const d = await Deno.connect({ hostname: srv.address, port: srv.port });
    direct.push(performance.now() - t0);
    d.close();
    t0 = performance.now();
    const c = await openGuest(egress.guestSocket, "bench", "http");
    await writeAll(c, `CONNECT ${srv.address}:${srv.port} HTTP/1.1\r\n\r\n`);
    const h = await readHead(c);
    proxied.push(performance.now() - t0);
    if (h.status !== 200) throw new Error(h.head);
    c.close();
  }
  console.log(`\nconnection set-up, median of ${CONNECTS} (ms)`);
  console.log("| path | median | p90 |");
  console.log("| --- | ---: | ---: |");
  const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];
  console.log(`| direct TCP connect | ${median(direct).toFixed(2)} | ${p90(direct).toFixed(2)} |`);
  console.log(
    `| guest socket → 200 Connection established | ${median(proxied).toFixed(2)} | ${
      p90(proxied).toFixed(2)
    } |`,
  );
} finally {
  await egress.close();
  await srv.close();
  await Deno.remove(dir, { recursive: true });
}
