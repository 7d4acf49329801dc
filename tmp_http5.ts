import http from "node:http";
import net from "node:net";
import { Duplex } from "node:stream";
const N = Number(Deno.args[0]);
const srv = http.createServer((req, res) => { let n = 0; req.on("data", d => n += d.length); req.on("end", () => { res.end(`got ${n}\n`); }); });
srv.on("clientError", (e, s) => { console.log("clientError", e.message, e.code); s.destroy(); });
srv.on("connect", (req, d, head) => { console.log("connect", req.url, head.length, d.constructor.name); d.write("HTTP/1.1 200 OK\r\n\r\n"); let n = head.length; d.on("data", x => { n += x.length; if (n >= N) d.end(`tunnel got ${n}`); }); d.resume(); });
const path = "/tmp/eg/t5.sock"; try { Deno.removeSync(path); } catch {}
function wrap(s, first) {
  const d = new Duplex({
    read() { s.resume(); },
    write(chunk, enc, cb) { s.write(chunk, cb); },
    final(cb) { s.end(); cb(); },
    destroy(err, cb) { s.destroy(); cb(err); },
  });
  if (first.length) d.push(first);
  s.on("data", (c) => { if (!d.push(c)) s.pause(); });
  s.on("end", () => d.push(null));
  s.on("close", () => d.destroy());
  d.setTimeout = (ms, cb) => { s.setTimeout(ms, cb); return d; };
  d.setNoDelay = () => d; d.setKeepAlive = () => d;
  return d;
}
const ls = net.createServer((s) => {
  let buf = Buffer.alloc(0);
  const onData = (d) => { buf = Buffer.concat([buf, d]); const i = buf.indexOf(10); if (i < 0) return; s.removeListener("data", onData); s.pause(); srv.emit("connection", wrap(s, buf.subarray(i+1))); };
  s.on("data", onData);
});
ls.listen(path, async () => {
  for (const mode of ["post", "connect"]) {
    const c = await Deno.connect({ transport: "unix", path });
    const body = "x".repeat(N);
    const msg = "HDR x http\n" + (mode === "post" ? `POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: ${N}\r\n\r\n${body}` : `CONNECT a:1 HTTP/1.1\r\n\r\n${body}`);
    let bytes = new TextEncoder().encode(msg); while (bytes.length) bytes = bytes.subarray(await c.write(bytes));
    let text = ""; const buf = new Uint8Array(100000); while (true) { const n = await c.read(buf); if (n === null) break; text += new TextDecoder().decode(buf.subarray(0, n)); if (text.includes("got")) break; }
    console.log(N, mode, JSON.stringify(text.split("\r\n").at(-1)));
    c.close();
  }
  ls.close(); srv.close();
});
