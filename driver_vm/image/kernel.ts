/**
 * The kernel qemu boots, taken out of its bzImage when it can be booted
 * directly: the uncompressed ELF `vmlinux` with a PVH entry point.
 *
 * A bzImage first runs its own decompressor inside the guest. Under TCG that
 * costs 1–1.7 s of every boot (Debian's cloud kernel: 14 MB of LZ4 → 53 MB),
 * measured with `e2e/bench_boot.ts` (docs/vm.md, boot stages). qemu loads an
 * ELF kernel with a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`, Linux's
 * `CONFIG_PVH`) straight into guest memory and enters it in 32-bit protected
 * mode, so that work goes; the kernel and what it does are the same.
 *
 * {@link pvhKernel} returns the ELF only when every step checks out (a
 * bzImage whose payload is legacy-framed LZ4, which decodes to an x86-64 ELF
 * carrying that note); otherwise `undefined`, and the bzImage is used as it
 * is.
 *
 * @module
 */

const LZ4_LEGACY_MAGIC = 0x184c2102;
/** `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point qemu looks for. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** Largest uncompressed kernel accepted (a bound on what a broken file can make us allocate). */
const MAX_KERNEL_BYTES = 512 * 2 ** 20;

/** The compressed payload of a bzImage (boot protocol ≥ 2.08), or undefined. */
export function bzImagePayload(image: Uint8Array): Uint8Array | undefined {
  if (image.length < 0x250) return undefined;
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  // "HdrS" at 0x202, protocol version at 0x206.
  if (view.getUint32(0x202, true) !== 0x53726448 || view.getUint16(0x206, true) < 0x208) {
    return undefined;
  }
  const setupSectors = image[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + view.getUint32(0x248, true);
  const length = view.getUint32(0x24c, true);
  if (start + length > image.length) return undefined;
  return image.subarray(start, start + length);
}

/**
 * Decodes LZ4 data in the legacy frame format (`lz4 -l`, what the kernel's
 * `CONFIG_KERNEL_LZ4` writes): a magic number, then blocks of a 32-bit
 * little-endian compressed size and an LZ4 block each. Data that cannot be
 * a block (the kernel appends its uncompressed size) ends the frame. Throws
 * on anything malformed or past `maxBytes`.
 */
export function lz4LegacyDecode(data: Uint8Array, maxBytes = MAX_KERNEL_BYTES): Uint8Array {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC) {
    throw new Error("not LZ4 legacy-framed data");
  }
  let out = new Uint8Array(Math.min(maxBytes, Math.max(1 << 20, data.length * 4)));
  let o = 0;
  const room = (n: number) => {
    if (o + n <= out.length) return;
    if (o + n > maxBytes) throw new Error(`LZ4 data decodes to more than ${maxBytes} bytes`);
    const bigger = new Uint8Array(Math.min(maxBytes, Math.max(o + n, out.length * 2)));
    bigger.set(out.subarray(0, o));
    out = bigger;
  };
  let p = 4;
  while (p + 4 <= data.length) {
    const size = view.getUint32(p, true);
    if (size === LZ4_LEGACY_MAGIC) {
      p += 4; // concatenated frames
      continue;
    }
    if (p + 4 + size > data.length) break; // the appended size, or padding
    p += 4;
    const end = p + size;
    while (p < end) {
      const token = data[p++];
      let literals = token >> 4;
      if (literals === 15) {
        let b;
        do {
          if (p >= end) throw new Error("truncated LZ4 block");
          b = data[p++];
          literals += b;
        } while (b === 255);
      }
      if (p + literals > end) throw new Error("truncated LZ4 literals");
      room(literals);
      out.set(data.subarray(p, p + literals), o);
      o += literals;
      p += literals;
      if (p >= end) break; // the last sequence has literals only
      if (p + 2 > end) throw new Error("truncated LZ4 match offset");
      const offset = data[p] | (data[p + 1] << 8);
      p += 2;
      if (offset === 0 || offset > o) throw new Error("bad LZ4 match offset");
      let match = (token & 15) + 4;
      if ((token & 15) === 15) {
        let b;
        do {
          if (p >= end) throw new Error("truncated LZ4 block");
          b = data[p++];
          match += b;
        } while (b === 255);
      }
      room(match);
      // Byte by byte: a match may overlap what it produces.
      for (let i = 0; i < match; i++, o++) out[o] = out[o - offset];
    }
  }
  return out.slice(0, o);
}

/** Whether `elf` is a 64-bit x86 ELF with a PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`). */
export function hasPvhEntry(elf: Uint8Array): boolean {
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    return false;
  }
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  // ELFCLASS64, little endian, EM_X86_64.
  if (elf[4] !== 2 || elf[5] !== 1 || view.getUint16(18, true) !== 62) return false;
  const phoff = Number(view.getBigUint64(32, true));
  const phentsize = view.getUint16(54, true);
  const phnum = view.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) return false;
    if (view.getUint32(ph, true) !== 4) continue; // PT_NOTE
    const start = Number(view.getBigUint64(ph + 8, true));
    const end = start + Number(view.getBigUint64(ph + 32, true));
    if (end > elf.length) return false;
    let n = start;
    while (n + 12 <= end) {
      const nameSize = view.getUint32(n, true);
      const descSize = view.getUint32(n + 4, true);
      const type = view.getUint32(n + 8, true);
      const name = new TextDecoder().decode(elf.subarray(n + 12, n + 12 + nameSize));
      if (name === "Xen\0" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      n += 12 + Math.ceil(nameSize / 4) * 4 + Math.ceil(descSize / 4) * 4;
    }
  }
  return false;
}

/**
 * The uncompressed PVH-bootable kernel inside `bzImage`, or undefined when
 * it has none we can use (see the module docs).
 */
export function pvhKernel(bzImage: Uint8Array): Uint8Array | undefined {
  const payload = bzImagePayload(bzImage);
  if (!payload) return undefined;
  let elf: Uint8Array;
  try {
    elf = lz4LegacyDecode(payload);
  } catch {
    return undefined;
  }
  return hasPvhEntry(elf) ? elf : undefined;
}
