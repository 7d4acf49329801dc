/**
 * TEST FIXTURE — the HTTP server {@link startNetnsServer} runs inside a
 * network namespace (`ip netns exec … deno run --allow-net`): the only kind
 * of destination the egress tests reach.
 *
 * `deno run --allow-net testing/netns_server.ts ADDRESS` prints `{"port":N}`
 * once listening, then serves:
 * - `GET /hello` → `hello from ADDRESS`
 * - `GET /bytes?n=N` → N zero bytes (streamed)
 * - `GET /headers` → the request's headers as JSON
 * - `POST /echo` → the request body
 *
 * @module
 */

const hostname = Deno.args[0] ?? "0.0.0.0";
const CHUNK = new Uint8Array(64 * 1024);

function zeros(n: number): ReadableStream<Uint8Array> {
  let left = n;
  return new ReadableStream({
    pull(controller) {
      if (left <= 0) return controller.close();
      const take = Math.min(left, CHUNK.length);
      controller.enqueue(take === CHUNK.length ? CHUNK : CHUNK.subarray(0, take));
      left -= take;
    },
  });
}

Deno.serve({
  hostname,
  port: 0,
  onListen: ({ port }) => console.log(JSON.stringify({ port })),
}, (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/hello") return new Response(`hello from ${hostname}\n`);
  if (url.pathname === "/bytes") {
    const n = Number(url.searchParams.get("n") ?? "0");
    return new Response(zeros(n), { headers: { "content-length": String(n) } });
  }
  if (url.pathname === "/headers") {
    return Response.json(Object.fromEntries(req.headers.entries()));
  }
  if (url.pathname === "/echo" && req.method === "POST") return new Response(req.body);
  return new Response("not found\n", { status: 404 });
});
