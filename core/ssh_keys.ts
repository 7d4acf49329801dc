/**
 * Ed25519 SSH host keys in OpenSSH formats, without external tools:
 * generation, the private key file sshd reads, the public key line, and the
 * `SHA256:` fingerprint that `CreateSshSession` reports.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";

/** An Ed25519 host key pair. */
export interface HostKey {
  /** OpenSSH private key file contents (`-----BEGIN OPENSSH PRIVATE KEY-----`). */
  privateKey: string;
  /** `ssh-ed25519 <base64> <comment>`. */
  publicKey: string;
  /** `SHA256:<base64 without padding>` of the public key blob. */
  fingerprint: string;
}

function sshString(data: Uint8Array | string): Buffer {
  const body = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** The SSH wire blob of an Ed25519 public key. */
export function ed25519PublicBlob(publicKey: Uint8Array): Buffer {
  return Buffer.concat([sshString("ssh-ed25519"), sshString(publicKey)]);
}

/** `SHA256:<base64>` fingerprint of a public key blob, as `ssh-keygen -l` prints it. */
export function fingerprintOfBlob(blob: Uint8Array): string {
  const digest = createHash("sha256").update(blob).digest("base64");
  return `SHA256:${digest.replace(/=+$/, "")}`;
}

/** The fingerprint of a public key line (`<type> <base64> [comment]`). */
export function fingerprintOfPublicKey(line: string): string {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2) throw new Error("not an SSH public key line");
  return fingerprintOfBlob(Buffer.from(parts[1], "base64"));
}

function encodePrivateKey(seed: Uint8Array, pub: Uint8Array, comment: string): string {
  const check = randomBytes(4).readUInt32BE();
  const parts = [
    uint32(check),
    uint32(check),
    sshString("ssh-ed25519"),
    sshString(pub),
    sshString(Buffer.concat([seed, pub])),
    sshString(comment),
  ];
  let priv = Buffer.concat(parts);
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const body = Buffer.concat([
    Buffer.from("openssh-key-v1\0", "binary"),
    sshString("none"),
    sshString("none"),
    sshString(""),
    uint32(1),
    sshString(ed25519PublicBlob(pub)),
    sshString(priv),
  ]);
  const b64 = body.toString("base64").replace(/.{1,70}/g, "$&\n");
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`;
}

/** Generates a fresh Ed25519 host key. */
export function generateHostKey(comment = "openshell-sandbox"): HostKey {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const pub = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d as string, "base64url");
  const blob = ed25519PublicBlob(pub);
  return {
    privateKey: encodePrivateKey(seed, pub, comment),
    publicKey: `ssh-ed25519 ${blob.toString("base64")} ${comment}`,
    fingerprint: fingerprintOfBlob(blob),
  };
}

/**
 * The public key line of an unencrypted OpenSSH private key file (any key
 * type: the public blob is stored in the clear).
 */
export function publicKeyOfPrivate(privateKey: string, comment = ""): string {
  const b64 = privateKey
    .replace(/-----BEGIN OPENSSH PRIVATE KEY-----/, "")
    .replace(/-----END OPENSSH PRIVATE KEY-----/, "")
    .replace(/\s+/g, "");
  const body = Buffer.from(b64, "base64");
  const magic = "openssh-key-v1\0";
  if (body.subarray(0, magic.length).toString("binary") !== magic) {
    throw new Error("not an OpenSSH private key");
  }
  let off = magic.length;
  const readString = () => {
    const len = body.readUInt32BE(off);
    const s = body.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return s;
  };
  readString(); // cipher
  readString(); // kdf
  readString(); // kdf options
  const count = body.readUInt32BE(off);
  off += 4;
  if (count < 1) throw new Error("OpenSSH private key holds no key");
  const blob = readString();
  const type = blob.subarray(4, 4 + blob.readUInt32BE(0)).toString();
  return `${type} ${blob.toString("base64")}${comment ? " " + comment : ""}`;
}
