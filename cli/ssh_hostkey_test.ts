import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fingerprintOfPublicKey } from "../core/ssh_keys.ts";
import {
  HostKeyMismatchError,
  HostKeyVerifier,
  kexAlgorithmsOf,
  negotiateKex,
  replyMessageFor,
  SshFrameReader,
  SshProtocolError,
} from "./ssh_hostkey.ts";

interface Transcript {
  kex: string;
  host_key: string;
  client_to_server: string;
  server_to_client: string;
}

/** Real bytes from OpenSSH 9.2 (`cli/testdata/capture_kex.ts` regenerates them). */
const TRANSCRIPTS: Transcript[] = JSON.parse(
  await Deno.readTextFile(new URL("./testdata/kex_transcripts.json", import.meta.url)),
);

const OTHER_FP = "SHA256:9TuMax+jc70j8hFvcAg2gDcUJChX4iU37tYGbqOAyyQ";

function bytes(b64: string): Uint8Array {
  return new Uint8Array(Buffer.from(b64, "base64"));
}

function chunks(data: Uint8Array, size: number): Uint8Array[] {
  const out = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** Offset just past the server packet that carries the host key. */
function replyEnd(t: Transcript): { start: number; end: number } {
  const r = new SshFrameReader();
  r.append(bytes(t.server_to_client));
  const want = replyMessageFor(t.kex);
  let start = 0;
  for (let f = r.next(); f; f = r.next()) {
    if (f.kind === "packet" && f.payload[0] === want) return { start, end: r.position };
    start = r.position;
  }
  throw new Error("no reply in transcript");
}

Deno.test("transcripts cover ECDH, DH and DH-GEX with ed25519 and ECDSA keys", () => {
  assert.deepEqual(TRANSCRIPTS.map((t) => t.kex), [
    "curve25519-sha256",
    "ecdh-sha2-nistp256",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group14-sha256",
  ]);
});

for (const t of TRANSCRIPTS) {
  for (const size of [1, 7, 100, 100_000]) {
    Deno.test(`${t.kex}: matching key passes every byte unchanged (chunks of ${size})`, () => {
      const v = new HostKeyVerifier(fingerprintOfPublicKey(t.host_key));
      const server = bytes(t.server_to_client);
      v.observeClient(bytes(t.client_to_server));
      const out = concat(chunks(server, size).map((c) => v.fromServer(c)));
      assert.equal(v.verified, true);
      assert.equal(v.presentedFingerprint, fingerprintOfPublicKey(t.host_key));
      assert.deepEqual(out, server);
    });
  }

  Deno.test(`${t.kex}: the reply is held back until complete`, () => {
    const v = new HostKeyVerifier(fingerprintOfPublicKey(t.host_key));
    v.observeClient(bytes(t.client_to_server));
    const server = bytes(t.server_to_client);
    const { start, end } = replyEnd(t);
    const before = v.fromServer(server.subarray(0, end - 1));
    assert.equal(v.verified, false);
    assert.equal(before.length, start, "forwarded exactly the packets before the reply");
    const rest = v.fromServer(server.subarray(end - 1));
    assert.equal(v.verified, true);
    assert.deepEqual(concat([before, rest]), server);
  });

  Deno.test(`${t.kex}: a different key is refused before the reply is forwarded`, () => {
    const v = new HostKeyVerifier(OTHER_FP);
    v.observeClient(bytes(t.client_to_server));
    const server = bytes(t.server_to_client);
    const { start } = replyEnd(t);
    const forwarded: Uint8Array[] = [];
    assert.throws(() => {
      for (const c of chunks(server, 64)) forwarded.push(v.fromServer(c));
    }, HostKeyMismatchError);
    assert.ok(concat(forwarded).length <= start);
    assert.equal(v.verified, false);
  });

  Deno.test(`${t.kex}: works without seeing the client's KEXINIT`, () => {
    const v = new HostKeyVerifier(fingerprintOfPublicKey(t.host_key));
    const server = bytes(t.server_to_client);
    const out = concat(chunks(server, 13).map((c) => v.fromServer(c)));
    assert.equal(v.verified, true);
    assert.deepEqual(out, server);
  });
}

Deno.test("mismatch error names both fingerprints", () => {
  const t = TRANSCRIPTS[0];
  const v = new HostKeyVerifier(OTHER_FP);
  try {
    v.fromServer(bytes(t.server_to_client));
    assert.fail("expected a mismatch");
  } catch (e) {
    assert.ok(e instanceof HostKeyMismatchError);
    assert.equal(e.expected, OTHER_FP);
    assert.equal(e.actual, fingerprintOfPublicKey(t.host_key));
    assert.match(e.message, /^host key mismatch: /);
  }
});

Deno.test("fingerprints compare with or without base64 padding", () => {
  const t = TRANSCRIPTS[0];
  const v = new HostKeyVerifier(fingerprintOfPublicKey(t.host_key) + "=");
  v.fromServer(bytes(t.server_to_client));
  assert.equal(v.verified, true);
});

Deno.test("NEWKEYS without a host key is an error", () => {
  const version = new TextEncoder().encode("SSH-2.0-fake\r\n");
  // packet_length 12, padding 10, payload [21]
  const newkeys = new Uint8Array([0, 0, 0, 12, 10, 21, ...new Array(10).fill(0)]);
  const v = new HostKeyVerifier(OTHER_FP);
  assert.throws(
    () => v.fromServer(concat([version, newkeys])),
    (e) => e instanceof SshProtocolError && /without a host key/.test(e.message),
  );
});

Deno.test("banner lines before the version are forwarded; garbage is refused", () => {
  const v = new HostKeyVerifier(OTHER_FP);
  const out = v.fromServer(new TextEncoder().encode("hello\r\nSSH-2.0-x\r\n"));
  assert.equal(new TextDecoder().decode(out), "hello\r\nSSH-2.0-x\r\n");
  assert.throws(
    () => new HostKeyVerifier(OTHER_FP).fromServer(new TextEncoder().encode("SSH-1.5-old\r\n")),
    /unsupported SSH protocol version/,
  );
  assert.throws(
    () =>
      new HostKeyVerifier(OTHER_FP).fromServer(
        concat([new TextEncoder().encode("SSH-2.0-x\r\n"), new Uint8Array([255, 0, 0, 0, 4])]),
      ),
    /malformed SSH packet/,
  );
  assert.throws(
    () => new HostKeyVerifier(OTHER_FP).fromServer(new Uint8Array(20_000).fill(65)),
    /no SSH version line/,
  );
});

Deno.test("an invalid pinned fingerprint is refused up front", () => {
  assert.throws(() => new HostKeyVerifier("MD5:aa:bb"), /invalid host key fingerprint/);
});

Deno.test("negotiation picks the client's first common method, skipping markers", () => {
  assert.equal(
    negotiateKex(
      ["ext-info-c", "sntrup761x25519-sha512@openssh.com", "curve25519-sha256"],
      ["curve25519-sha256", "sntrup761x25519-sha512@openssh.com", "kex-strict-s-v00@openssh.com"],
    ),
    "sntrup761x25519-sha512@openssh.com",
  );
  assert.equal(negotiateKex(["a"], ["b"]), undefined);
  assert.equal(replyMessageFor("diffie-hellman-group-exchange-sha1"), 33);
  assert.equal(replyMessageFor("curve25519-sha256"), 31);
});

Deno.test("KEXINIT parsing reads the kex name-list of the real client", () => {
  const r = new SshFrameReader();
  r.append(bytes(TRANSCRIPTS[0].client_to_server));
  let frame = r.next();
  while (frame && frame.kind !== "packet") frame = r.next();
  assert.ok(frame && frame.kind === "packet");
  assert.equal(r.version.startsWith("SSH-2.0-OpenSSH_"), true);
  assert.deepEqual(kexAlgorithmsOf(frame.payload)[0], "curve25519-sha256");
});
