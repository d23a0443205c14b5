/**
 * Stand-ins for onnxruntime's CUDA provider libraries in tests: a minimal 64-bit ELF file whose
 * `.rodata` section carries a version string, as the real provider's does.
 */

import { join } from "node:path";

/** A minimal 64-bit little-endian ELF file: no code, a section table, `strings` in `.rodata`. */
export function fakeElf(strings: readonly string[]): Uint8Array<ArrayBuffer> {
  const encoder = new TextEncoder();
  const names = encoder.encode("\0.shstrtab\0.rodata\0");
  const rodata = encoder.encode(`\0${strings.join("\0")}\0`);
  const namesAt = 64;
  const rodataAt = namesAt + names.length;
  const tableAt = Math.ceil((rodataAt + rodata.length) / 8) * 8;
  const bytes = new Uint8Array(tableAt + 3 * 64);
  const view = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  view.setBigUint64(0x28, BigInt(tableAt), true);
  view.setUint16(0x3a, 64, true);
  view.setUint16(0x3c, 3, true);
  view.setUint16(0x3e, 1, true);
  bytes.set(names, namesAt);
  bytes.set(rodata, rodataAt);
  const section = (index: number, name: number, type: number, offset: number, size: number) => {
    const at = tableAt + 64 * index;
    view.setUint32(at, name, true);
    view.setUint32(at + 4, type, true);
    view.setBigUint64(at + 24, BigInt(offset), true);
    view.setBigUint64(at + 32, BigInt(size), true);
  };
  section(1, 1, 3, namesAt, names.length);
  section(2, 11, 1, rodataAt, rodata.length);
  return bytes;
}

/** The stand-in CUDA provider of onnxruntime `version`, with strings around the version as in the real one. */
export function fakeCudaProvider(version: string): Uint8Array<ArrayBuffer> {
  return fakeElf(["cudaGraphDestroy(graph)", "Replay", version, "Failed to get device id."]);
}

/** Writes stand-ins for both provider libraries of onnxruntime `version` into `dir`. */
export function writeFakeProviders(dir: string, version: string): void {
  Deno.writeFileSync(join(dir, "libonnxruntime_providers_cuda.so"), fakeCudaProvider(version));
  Deno.writeFileSync(join(dir, "libonnxruntime_providers_shared.so"), fakeElf([]));
}
