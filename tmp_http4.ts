import http from "node:http";
import net from "node:net";
const N = Number(Deno.args[0]); const sep = Deno.args[1] === "sep";
const srv = http.createServer((req, res) => { let n = 0; req.on("data", d => n += d.length); req.on("end", () => { res.end(`got ${n}\n`); }); });
srv.on("clientError", (e, s) => { console.log("clientError", e.message, e.code); s.destroy(); });
const path = "/tmp/eg/t4.sock"; try { Deno.removeSync(path); } catch {}
const ls = net.createServer((s) => {
  let buf = Buffer.alloc(0);
  const onData = (d) => { buf = Buffer.concat([buf, d]); const i = buf.indexOf(10); if (i < 0) return; s.removeListener("data", onData); s.pause(); const rest = buf.subarray(i+1); if (rest.length) s.unshift(rest); srv.emit("connection", s); s.resume(); };
  s.on("data", onData);
});
ls.listen(path, async () => {
  const c = await Deno.connect({ transport: "unix", path });
  const body = "x".repeat(N);
  if (sep) { await c.write(new TextEncoder().encode("HDR x http\n")); await new Promise(r => setTimeout(r, 100)); }
  const msg = (sep ? "" : "HDR x http\n") + `POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: ${N}\r\n\r\n${body}`;
  let bytes = new TextEncoder().encode(msg); while (bytes.length) bytes = bytes.subarray(await c.write(bytes));
  const buf = new Uint8Array(1000); const n = await c.read(buf); console.log(N, sep, JSON.stringify(new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n").at(-1)));
  c.close(); ls.close(); srv.close();
});
