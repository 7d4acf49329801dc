/**
 * Bounding and cleaning text that came from someone else (a guest's console,
 * a client's request): cut it to a size in UTF-8 bytes without keeping the
 * original alive, shorten what an error message echoes back, and strip the
 * control characters that would let it drive a terminal.
 *
 * @module
 */
import { Buffer } from "node:buffer";

/** Longest console or log line kept, in UTF-8 bytes (longer ones are cut with a marker). */
export const MAX_LINE_BYTES = 8 * 1024;
/** Default length of an identifier echoed in an error message, in characters. */
export const ECHO_CHARS = 128;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes `s` takes in UTF-8 (a lone surrogate counts 3, as TextEncoder writes U+FFFD). */
export function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/**
 * The longest prefix of `s` that fits in `maxBytes` of UTF-8, never splitting
 * a character, as a fresh string: a plain `slice` of a large string keeps the
 * whole original in memory for as long as the slice lives.
 */
export function truncateUtf8(s: string, maxBytes: number): { text: string; cutBytes: number } {
  if (s.length <= maxBytes / 3) return { text: s, cutBytes: 0 };
  const buf = new Uint8Array(Math.max(0, maxBytes));
  const { read, written } = encoder.encodeInto(s, buf);
  if (read >= s.length) return { text: s, cutBytes: 0 };
  const cutBytes = utf8Length(s) - written;
  return { text: decoder.decode(buf.subarray(0, written)), cutBytes };
}

/**
 * `s` cut to at most `maxBytes` of UTF-8 plus a visible `…[truncated N bytes]`
 * marker when it was longer (then as a fresh string, not a slice of `s`).
 */
export function capLine(s: string, maxBytes: number = MAX_LINE_BYTES): string {
  const { text, cutBytes } = truncateUtf8(s, maxBytes);
  return cutBytes > 0 ? `${text}…[truncated ${cutBytes} bytes]` : text;
}

/**
 * `s` as an error message may quote it: at most `maxChars` characters, then
 * `…(N chars)` giving the full length. Use for every identifier or value a
 * request carried, so a 1 MiB id yields a short NOT_FOUND.
 */
export function truncateForEcho(s: string, maxChars: number = ECHO_CHARS): string {
  if (s.length <= maxChars) return s;
  let end = maxChars;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // do not split a surrogate pair
  return `${decoder.decode(encoder.encode(s.slice(0, end)))}…(${s.length} chars)`;
}

// Escape sequences (ECMA-48), 7-bit and 8-bit forms:
//   CSI  ESC [ or 0x9b, parameters, intermediates, one final byte
//   OSC, DCS, SOS, PM, APC  ESC ] P X ^ _ or 0x9d 0x90 0x98 0x9e 0x9f, up to BEL or ST (ESC \ or 0x9c)
//   any other ESC plus intermediates and one final character
// An unterminated string sequence runs to the end of the text.
const ESCAPES = new RegExp(
  [
    "(?:\\x1b\\[|\\x9b)[\\x30-\\x3f]*[\\x20-\\x2f]*[\\x40-\\x7e]?",
    "(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d\\x9e\\x9f])[\\s\\S]*?(?:\\x07|\\x1b\\\\|\\x9c|$)",
    "\\x1b[\\x20-\\x2f]*[\\x30-\\x7e]?",
  ].join("|"),
  "g",
);
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
// deno-lint-ignore no-control-regex
const ANY_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

/**
 * `text` safe to print on a terminal: escape sequences (CSI, OSC such as
 * OSC 52 clipboard writes, DCS, SOS/PM/APC, in their ESC and C1 forms) are
 * removed whole, then every remaining C0 and C1 control character and DEL;
 * tab and newline stay.
 */
export function stripControls(text: string): string {
  if (!ANY_CONTROL.test(text)) return text;
  return text.replace(ESCAPES, "").replace(CONTROLS, "");
}
