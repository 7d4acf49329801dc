/**
 * Bearer secrets the gateway hands out (SSH session tokens, supervisor
 * tokens): 256 random bits, shown once, stored only as SHA-256 hashes and
 * compared in constant time.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** A new token: 256 random bits, URL-safe base64. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/** The hex SHA-256 of a token: what the store keeps. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Whether `presented` hashes to `expectedHash` (constant time). */
export function tokenMatches(presented: string | undefined, expectedHash: string): boolean {
  if (!presented) return false;
  const a = Buffer.from(hashToken(presented), "hex");
  const b = Buffer.from(expectedHash, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}
