/**
 * Host key pinning inside `ssh-proxy`: watch the cleartext start of an SSH
 * connection (RFC 4253: version line, then binary packets until NEWKEYS),
 * find the server's key exchange reply, and check the host key it carries
 * (`K_S`) against the `SHA256:` fingerprint the gateway reported in
 * `CreateSshSession`. The reply reaches `ssh` only when it matches, so a
 * relay that swapped the sandbox for another SSH server is refused before
 * the client authenticates or sends anything of value.
 *
 * `ssh` itself then checks that the server owns `K_S` (the signature over
 * the exchange hash) and remembers it under a per-sandbox `HostKeyAlias`.
 *
 * Pure: bytes in, bytes out; no I/O.
 *
 * @module
 */
import { fingerprintOfBlob } from "../core/ssh_keys.ts";

/** SSH message numbers this module cares about. */
const MSG_KEXINIT = 20;
const MSG_NEWKEYS = 21;
/** `SSH_MSG_KEXDH_REPLY` / `SSH_MSG_KEX_ECDH_REPLY` (and `KEX_DH_GEX_GROUP` under DH-GEX). */
const MSG_KEX_REPLY = 31;
/** `SSH_MSG_KEX_DH_GEX_REPLY`. */
const MSG_KEX_DH_GEX_REPLY = 33;

/** Longest run of bytes accepted before the version line (RFC 4253 allows banner lines). */
const MAX_PREAMBLE_BYTES = 16 * 1024;
/** Largest cleartext packet accepted (RFC 4253 requires 35000; a DH-GEX group is ~1 KiB). */
const MAX_PACKET_BYTES = 256 * 1024;

/** The server presented a host key whose fingerprint is not the pinned one. */
export class HostKeyMismatchError extends Error {
  /** The fingerprint the gateway reported. */
  readonly expected: string;
  /** The fingerprint of the key the server presented. */
  readonly actual: string;

  /** Creates the error for an `expected` and an `actual` fingerprint. */
  constructor(expected: string, actual: string) {
    super(
      `host key mismatch: the sandbox presented ${actual} but the gateway reported ${expected}`,
    );
    this.name = "HostKeyMismatchError";
    this.expected = expected;
    this.actual = actual;
  }
}

/** The byte stream is not an SSH connection we can check. */
export class SshProtocolError extends Error {
  /** Creates the error with a one-line reason. */
  constructor(message: string) {
    super(message);
    this.name = "SshProtocolError";
  }
}

/** One unit of the cleartext stream: a line before the version, or a packet payload. */
export type SshFrame =
  | { kind: "line"; text: string }
  | { kind: "packet"; payload: Uint8Array };

/**
 * Splits one direction of an SSH connection into lines (up to and including
 * the `SSH-` version line) and then unencrypted binary packets. Callers stop
 * feeding it after NEWKEYS: what follows is encrypted.
 */
export class SshFrameReader {
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #versionSeen = false;
  #version = "";

  /** The peer's version line without CR LF ("" until seen). */
  get version(): string {
    return this.#version;
  }

  /** Bytes appended but not yet returned as frames start here (relative to {@link buffer}). */
  get position(): number {
    return this.#pos;
  }

  /** Every byte appended and not yet dropped with {@link drop}. */
  get buffer(): Uint8Array {
    return this.#buf;
  }

  /** Adds bytes read from the connection. */
  append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const next = new Uint8Array(this.#buf.length + chunk.length);
    next.set(this.#buf);
    next.set(chunk, this.#buf.length);
    this.#buf = next;
  }

  /** Forgets the first `n` bytes of {@link buffer} (they must already be parsed). */
  drop(n: number): void {
    if (n > this.#pos) throw new RangeError("cannot drop unparsed bytes");
    this.#buf = this.#buf.slice(n);
    this.#pos -= n;
  }

  /** The next complete frame, or `null` when more bytes are needed. */
  next(): SshFrame | null {
    return this.#versionSeen ? this.#nextPacket() : this.#nextLine();
  }

  #nextLine(): SshFrame | null {
    const nl = this.#buf.indexOf(0x0a, this.#pos);
    if (nl < 0) {
      if (this.#buf.length > MAX_PREAMBLE_BYTES) {
        throw new SshProtocolError("no SSH version line in the first 16 KiB");
      }
      return null;
    }
    let text = new TextDecoder().decode(this.#buf.subarray(this.#pos, nl));
    if (text.endsWith("\r")) text = text.slice(0, -1);
    this.#pos = nl + 1;
    if (text.startsWith("SSH-")) {
      if (!text.startsWith("SSH-2.0-") && !text.startsWith("SSH-1.99-")) {
        throw new SshProtocolError(`unsupported SSH protocol version "${text.slice(0, 40)}"`);
      }
      this.#versionSeen = true;
      this.#version = text;
    }
    return { kind: "line", text };
  }

  #nextPacket(): SshFrame | null {
    const avail = this.#buf.length - this.#pos;
    if (avail < 5) return null;
    const view = new DataView(this.#buf.buffer, this.#buf.byteOffset + this.#pos);
    const length = view.getUint32(0);
    const padding = view.getUint8(4);
    if (length < 5 || length > MAX_PACKET_BYTES || padding + 1 > length) {
      throw new SshProtocolError(`malformed SSH packet (length ${length}, padding ${padding})`);
    }
    if (avail < 4 + length) return null;
    const payload = this.#buf.slice(this.#pos + 5, this.#pos + 4 + length - padding);
    this.#pos += 4 + length;
    if (payload.length === 0) throw new SshProtocolError("empty SSH packet");
    return { kind: "packet", payload };
  }
}

/** Reads SSH wire types from a payload. */
class WireReader {
  #view: DataView;
  #off: number;

  constructor(readonly bytes: Uint8Array, offset: number) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#off = offset;
  }

  skip(n: number): void {
    if (this.#off + n > this.bytes.length) throw new SshProtocolError("truncated SSH message");
    this.#off += n;
  }

  string(): Uint8Array {
    if (this.#off + 4 > this.bytes.length) throw new SshProtocolError("truncated SSH message");
    const len = this.#view.getUint32(this.#off);
    if (this.#off + 4 + len > this.bytes.length) {
      throw new SshProtocolError("truncated SSH message");
    }
    const s = this.bytes.subarray(this.#off + 4, this.#off + 4 + len);
    this.#off += 4 + len;
    return s;
  }

  nameList(): string[] {
    const s = new TextDecoder().decode(this.string());
    return s === "" ? [] : s.split(",");
  }
}

/** The key exchange algorithms named in a KEXINIT payload (message 20). */
export function kexAlgorithmsOf(kexinit: Uint8Array): string[] {
  if (kexinit[0] !== MSG_KEXINIT) throw new SshProtocolError("not a KEXINIT message");
  const r = new WireReader(kexinit, 1);
  r.skip(16); // cookie
  return r.nameList();
}

/**
 * The key exchange method both sides agreed on (RFC 4253 §7.1: the first of
 * the client's algorithms the server also supports), ignoring the
 * `ext-info-*` and `kex-strict-*` markers. `undefined` when none matches.
 */
export function negotiateKex(
  client: readonly string[],
  server: readonly string[],
): string | undefined {
  const marker = (a: string) => a.startsWith("ext-info-") || a.startsWith("kex-strict-");
  return client.find((a) => !marker(a) && server.includes(a));
}

/** The message number carrying the host key for the key exchange method `kex`. */
export function replyMessageFor(kex: string): number {
  return kex.startsWith("diffie-hellman-group-exchange-") ? MSG_KEX_DH_GEX_REPLY : MSG_KEX_REPLY;
}

/**
 * Whether `blob` is shaped like a public key blob (`string type, …` with a
 * plausible algorithm name). Distinguishes a KEXDH/ECDH reply from a DH-GEX
 * group (also message 31, starting with the prime `p`) when the client's
 * KEXINIT was not seen.
 */
export function looksLikeKeyBlob(blob: Uint8Array): boolean {
  try {
    const type = new TextDecoder("utf-8", { fatal: true }).decode(new WireReader(blob, 0).string());
    return /^[a-z0-9][a-z0-9@.+-]{2,63}$/.test(type);
  } catch {
    return false;
  }
}

/** The host key blob `K_S` of a key exchange reply payload (message 31 or 33). */
export function hostKeyBlobOf(reply: Uint8Array): Uint8Array {
  const r = new WireReader(reply, 1);
  return r.string();
}

function normalizeFingerprint(fp: string): string {
  return fp.trim().replace(/=+$/, "");
}

/**
 * Checks the host key of one SSH connection. Feed it the client→server bytes
 * with {@link observeClient} (never altered) and the server→client bytes
 * with {@link fromServer}, which returns what may be passed on to the client
 * now: everything before the key exchange reply at once, the reply and all
 * that follows once the key matched. A mismatch throws
 * {@link HostKeyMismatchError}.
 */
export class HostKeyVerifier {
  readonly #expected: string;
  readonly #server = new SshFrameReader();
  readonly #client = new SshFrameReader();
  #clientKex: string[] | undefined;
  #serverKex: string[] | undefined;
  #clientDone = false;
  #verified = false;
  #presented = "";

  /** Creates a verifier for the pinned `SHA256:` fingerprint. */
  constructor(expectedFingerprint: string) {
    if (!/^SHA256:[A-Za-z0-9+/]+=*$/.test(expectedFingerprint.trim())) {
      throw new SshProtocolError(`invalid host key fingerprint "${expectedFingerprint}"`);
    }
    this.#expected = normalizeFingerprint(expectedFingerprint);
  }

  /** True once the server's host key matched; later bytes pass untouched. */
  get verified(): boolean {
    return this.#verified;
  }

  /** The fingerprint of the key the server presented ("" until seen). */
  get presentedFingerprint(): string {
    return this.#presented;
  }

  /** Watches client→server bytes for the client's KEXINIT (no effect on the bytes). */
  observeClient(chunk: Uint8Array): void {
    if (this.#clientDone || this.#verified) return;
    try {
      this.#client.append(chunk);
      for (let f = this.#client.next(); f; f = this.#client.next()) {
        if (f.kind === "packet" && f.payload[0] === MSG_KEXINIT) {
          this.#clientKex = kexAlgorithmsOf(f.payload);
          this.#clientDone = true;
          return;
        }
      }
      this.#client.drop(this.#client.position);
    } catch {
      // The server side decides; a client we cannot parse only costs us the negotiation hint.
      this.#clientDone = true;
    }
  }

  /** Server→client bytes in; the bytes that may be forwarded to the client out. */
  fromServer(chunk: Uint8Array): Uint8Array {
    if (this.#verified) return chunk;
    const r = this.#server;
    r.append(chunk);
    let forwardable = 0;
    for (let f = r.next(); f; f = r.next()) {
      if (f.kind === "line") {
        forwardable = r.position;
        continue;
      }
      const type = f.payload[0];
      if (type === MSG_KEXINIT) {
        this.#serverKex = kexAlgorithmsOf(f.payload);
      } else if (this.#isReply(f.payload)) {
        this.#check(hostKeyBlobOf(f.payload));
        this.#verified = true;
        const all = r.buffer;
        return all;
      } else if (type === MSG_NEWKEYS) {
        throw new SshProtocolError("the server finished the key exchange without a host key");
      }
      forwardable = r.position;
    }
    const out = r.buffer.slice(0, forwardable);
    r.drop(forwardable);
    return out;
  }

  #isReply(payload: Uint8Array): boolean {
    const type = payload[0];
    if (type !== MSG_KEX_REPLY && type !== MSG_KEX_DH_GEX_REPLY) return false;
    if (this.#clientKex && this.#serverKex) {
      const kex = negotiateKex(this.#clientKex, this.#serverKex);
      if (kex) return type === replyMessageFor(kex);
    }
    // Without the negotiated method: 33 is only ever the DH-GEX reply; a 31 is
    // a reply when it starts with a key blob (a DH-GEX group starts with p).
    if (type === MSG_KEX_DH_GEX_REPLY) return true;
    try {
      return looksLikeKeyBlob(hostKeyBlobOf(payload));
    } catch {
      return false;
    }
  }

  #check(blob: Uint8Array): void {
    this.#presented = fingerprintOfBlob(blob);
    if (normalizeFingerprint(this.#presented) !== this.#expected) {
      throw new HostKeyMismatchError(this.#expected, this.#presented);
    }
  }
}
