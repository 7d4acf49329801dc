/**
 * Small byte-stream helpers shared by the roles.
 *
 * @module
 */

/** Something with `Deno.Conn`'s `write` (a connection, stdout, a tunnel). */
export interface ByteSink {
  /** Writes some of `p`; resolves with how many bytes were written. */
  write(p: Uint8Array): Promise<number>;
}

/** Writes all of `data` to `w`, however many `write` calls that takes. */
export async function writeAll(w: ByteSink, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}
