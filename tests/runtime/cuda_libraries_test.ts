import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CUDA_LIBRARIES,
  cudaProviderVersion,
  cudaSearchDirs,
  findCudaLibraries,
  ldCacheDirs,
  missingCudaSentence,
  prepareCuda,
  providerFolderProblem,
} from "../../lib/runtime/cuda_libraries.ts";
import { fakeCudaProvider, fakeElf, writeFakeProviders } from "./fake_cuda_provider.ts";

const SONAMES = CUDA_LIBRARIES.map((l) => l.soname);

/** Creates `files` (empty) in a new folder under `root` and returns the folder. */
function folderWith(root: string, name: string, files: readonly string[]): string {
  const dir = join(root, name);
  Deno.mkdirSync(dir, { recursive: true });
  for (const file of files) Deno.writeFileSync(join(dir, file), new Uint8Array());
  return dir;
}

/** A real shared library of this system, to stand in for CUDA libraries that must load. */
function systemLibrary(): string {
  const path = cudaSearchDirs().map((d) => join(d, "libm.so.6")).find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  assert(path, "libm.so.6 is in no library folder");
  return path;
}

Deno.test("the provider's onnxruntime version is read from its read-only data", () => {
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "provider.so");
  Deno.writeFileSync(path, fakeCudaProvider("1.29.0"));
  assert.equal(cudaProviderVersion(path), "1.29.0");
  Deno.writeFileSync(path, fakeElf(["1.29.0", "1.3.2"]));
  assert.throws(
    () => cudaProviderVersion(path),
    /provider\.so does not tell which onnxruntime it was built for \(2 version strings/,
  );
  Deno.writeFileSync(path, fakeElf(["v1.29.0", "1.29"]));
  assert.throws(() => cudaProviderVersion(path), /\(0 version strings in its read-only data\)/);
  Deno.writeFileSync(path, new TextEncoder().encode("not a library"));
  assert.throws(() => cudaProviderVersion(path), /provider\.so is not a 64-bit ELF library\.$/);
  Deno.removeSync(dir, { recursive: true });
});

/** An ldconfig cache in glibc's new format, after `oldFormatBytes` bytes, with these entries. */
function ldCache(
  entries: readonly { flags: number; path: string }[],
  oldFormatBytes = 0,
): Uint8Array {
  const encoder = new TextEncoder();
  const table = 48 + 24 * entries.length;
  const strings: number[] = [];
  const offsets = entries.map(({ path }) => {
    const at = table + strings.length;
    strings.push(...encoder.encode(path), 0);
    return at;
  });
  const bytes = new Uint8Array(oldFormatBytes + table + strings.length);
  const view = new DataView(bytes.buffer, oldFormatBytes);
  bytes.set(encoder.encode("glibc-ld.so.cache1.1"), oldFormatBytes);
  view.setUint32(20, entries.length, true);
  view.setUint32(24, strings.length, true);
  entries.forEach(({ flags }, i) => {
    view.setInt32(48 + 24 * i, flags, true);
    view.setUint32(48 + 24 * i + 8, offsets[i], true);
  });
  bytes.set(strings, oldFormatBytes + table);
  return bytes;
}

Deno.test("the ldconfig cache gives the folders of its x86-64 libraries", () => {
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "ld.so.cache");
  const entries = [
    { flags: 0x0303, path: "/opt/cuda/lib/libcudart.so.13" },
    { flags: 0x0003, path: "/usr/lib32/libm.so.6" },
    { flags: 0x0303, path: "/usr/lib/x86_64-linux-gnu/libm.so.6" },
    { flags: 0x0303, path: "/opt/cuda/lib/libcublas.so.13" },
  ];
  Deno.writeFileSync(path, ldCache(entries));
  assert.deepEqual(ldCacheDirs(path), ["/opt/cuda/lib", "/usr/lib/x86_64-linux-gnu"]);
  Deno.writeFileSync(path, ldCache(entries, 100));
  assert.deepEqual(ldCacheDirs(path), ["/opt/cuda/lib", "/usr/lib/x86_64-linux-gnu"]);
  Deno.writeTextFileSync(path, "ld.so-1.7.0 only");
  assert.deepEqual(ldCacheDirs(path), []);
  assert.deepEqual(ldCacheDirs(join(dir, "absent")), []);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("CUDA libraries are found in the first folder that has them, with cuDNN's parts", () => {
  const root = Deno.makeTempDirSync();
  const first = folderWith(root, "first", ["libcudart.so.13", "libcublas.so.13"]);
  const second = folderWith(root, "second", [
    "libcuda.so.1",
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libcudnn.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_graph.so.9",
    "libcudnn_adv.so.9.1.0",
    "libcudnn.so",
  ]);
  const search = findCudaLibraries([join(root, "absent"), first, second]);
  assert.deepEqual(search.missing, []);
  assert.deepEqual(search.found.map((f) => f.path), [
    join(second, "libcuda.so.1"),
    join(first, "libcudart.so.13"),
    join(second, "libcublasLt.so.13"),
    join(first, "libcublas.so.13"),
    join(second, "libcurand.so.10"),
    join(second, "libcudnn_graph.so.9"),
    join(second, "libcudnn_ops.so.9"),
    join(second, "libcudnn.so.9"),
  ]);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("a partial set of CUDA libraries reports the missing ones in order", () => {
  const root = Deno.makeTempDirSync();
  const partial = folderWith(root, "partial", [
    "libcudart.so.12",
    "libcudart.so.13",
    "libcudnn.so.8",
  ]);
  const search = findCudaLibraries([partial]);
  assert.deepEqual(search.found, [{
    soname: "libcudart.so.13",
    path: join(partial, "libcudart.so.13"),
  }]);
  assert.deepEqual(
    search.missing.map((l) => l.soname),
    SONAMES.filter((s) => s !== "libcudart.so.13"),
  );
  assert.deepEqual(findCudaLibraries([]).missing.map((l) => l.soname), SONAMES);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("the missing CUDA libraries are named in one sentence with what installs them", () => {
  const byName = (s: string) => CUDA_LIBRARIES.find((l) => l.soname === s)!;
  assert.equal(
    missingCudaSentence([byName("libcurand.so.10"), byName("libcudnn.so.9")]),
    "onnxruntime's CUDA provider needs cuRAND 10 (libcurand.so.10) and cuDNN 9 (libcudnn.so.9), " +
      "which are neither on LD_LIBRARY_PATH, in the system's library folders nor in the nvidia pip " +
      "packages of python3: pip install nvidia-curand nvidia-cudnn-cu13, or put their folder on " +
      "LD_LIBRARY_PATH.",
  );
  assert.match(
    missingCudaSentence([byName("libcuda.so.1")]),
    /needs the NVIDIA driver \(libcuda\.so\.1\), which is neither .*: install the NVIDIA driver, or put/,
  );
});

Deno.test("LD_LIBRARY_PATH is searched first and pip's nvidia packages of python3 last", () => {
  const root = Deno.makeTempDirSync();
  const site = join(root, "site-packages", "nvidia");
  const cu13 = folderWith(site, join("cu13", "lib"), ["libcudart.so.13", "libcurand.so.10"]);
  const cudnn = folderWith(site, join("cudnn", "lib"), ["libcudnn.so.9", "libcudnn_ops.so.9"]);
  folderWith(site, join("cudnn", "include"), []);
  const bin = folderWith(root, "bin", []);
  Deno.writeTextFileSync(join(bin, "python3"), `#!/bin/sh\necho '${site}'\n`, { mode: 0o755 });
  const fromEnv = folderWith(root, "from-env", []);
  const saved = { path: Deno.env.get("PATH"), ld: Deno.env.get("LD_LIBRARY_PATH") };
  try {
    Deno.env.set("PATH", `${bin}:${saved.path}`);
    Deno.env.set("LD_LIBRARY_PATH", `${fromEnv}::${fromEnv}`);
    const dirs = cudaSearchDirs();
    assert.equal(dirs[0], fromEnv);
    assert.equal(dirs.filter((d) => d === fromEnv).length, 1);
    assert.deepEqual(dirs.slice(-2), [cu13, cudnn]);
    const found = findCudaLibraries([cu13, cudnn]).found.map((f) => f.path);
    assert.deepEqual(found, [
      join(cu13, "libcudart.so.13"),
      join(cu13, "libcurand.so.10"),
      join(cudnn, "libcudnn_ops.so.9"),
      join(cudnn, "libcudnn.so.9"),
    ]);
  } finally {
    Deno.env.set("PATH", saved.path ?? "");
    if (saved.ld === undefined) Deno.env.delete("LD_LIBRARY_PATH");
    else Deno.env.set("LD_LIBRARY_PATH", saved.ld);
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("providerFolderProblem names the absent providers, then another version", () => {
  const dir = Deno.makeTempDirSync();
  assert.deepEqual(providerFolderProblem(dir, "1.29.0"), {
    absent: ["libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"],
  });
  Deno.writeFileSync(join(dir, "libonnxruntime_providers_cuda.so"), fakeCudaProvider("1.28.0"));
  assert.deepEqual(providerFolderProblem(dir, "1.29.0"), {
    absent: ["libonnxruntime_providers_shared.so"],
  });
  writeFakeProviders(dir, "1.28.0");
  assert.deepEqual(providerFolderProblem(dir, "1.29.0"), {
    provider: join(dir, "libonnxruntime_providers_cuda.so"),
    version: "1.28.0",
  });
  assert.equal(providerFolderProblem(dir, "1.28.0"), undefined);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("prepareCuda refuses missing providers, another version, missing CUDA libraries", () => {
  const core = Deno.makeTempDirSync();
  const empty = Deno.makeTempDirSync();
  assert.throws(
    () => prepareCuda(core, "1.29.0", [empty]),
    new RegExp(
      "^Error: The CUDA execution provider needs libonnxruntime_providers_cuda\\.so and " +
        `libonnxruntime_providers_shared\\.so beside onnxruntime's core library in ${core}: ` +
        'install them with "deno task enable-cuda"\\.$',
    ),
  );
  Deno.writeFileSync(join(core, "libonnxruntime_providers_cuda.so"), fakeCudaProvider("1.29.0"));
  assert.throws(
    () => prepareCuda(core, "1.29.0", [empty]),
    /needs libonnxruntime_providers_shared\.so beside/,
  );
  writeFakeProviders(core, "1.28.0");
  assert.throws(
    () => prepareCuda(core, "1.29.0", [empty]),
    /providers_cuda\.so is onnxruntime 1\.28\.0's CUDA provider but the core library is onnxruntime 1\.29\.0: install the matching one with "deno task enable-cuda"\.$/,
  );
  writeFakeProviders(core, "1.29.0");
  assert.throws(
    () => prepareCuda(core, "1.29.0", [empty]),
    { message: missingCudaSentence(CUDA_LIBRARIES) },
  );
  Deno.removeSync(core, { recursive: true });
  Deno.removeSync(empty, { recursive: true });
});

Deno.test("prepareCuda loads every CUDA library it finds, and names one that does not load", () => {
  const core = Deno.makeTempDirSync();
  writeFakeProviders(core, "1.29.0");
  const library = systemLibrary();
  const loads = Deno.makeTempDirSync();
  for (const soname of [...SONAMES, "libcudnn_graph.so.9"]) {
    Deno.symlinkSync(library, join(loads, soname));
  }
  prepareCuda(core, "1.29.0", [loads]);
  const broken = Deno.makeTempDirSync();
  for (const soname of SONAMES.filter((s) => s !== "libcurand.so.10")) {
    Deno.symlinkSync(library, join(broken, soname));
  }
  Deno.writeTextFileSync(join(broken, "libcurand.so.10"), "not a library");
  assert.throws(
    () => prepareCuda(core, "1.29.0", [broken]),
    new RegExp(`^Error: ${join(broken, "libcurand.so.10")} was found but does not load: .+\\.$`),
  );
  for (const dir of [core, loads, broken]) Deno.removeSync(dir, { recursive: true });
});
