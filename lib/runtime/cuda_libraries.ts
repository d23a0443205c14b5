/**
 * What onnxruntime's CUDA execution provider needs before a session can use it: its two provider
 * libraries beside onnxruntime's core library, built for the core's exact version, and the CUDA
 * libraries the provider links (the NVIDIA driver, the CUDA 13 runtime, cuBLAS/cuBLASLt 13,
 * cuRAND 10, cuDNN 9).
 *
 * The CUDA libraries are looked for where the dynamic loader looks (`LD_LIBRARY_PATH`, the
 * ldconfig cache, the standard library folders) and in the `lib` folders of the `nvidia` pip
 * packages of the `python3` on PATH. Each one found is then loaded by its full path, so that the
 * provider's own loads by soname find it already loaded: pip's CUDA libraries work without
 * `LD_LIBRARY_PATH`.
 *
 * @module
 */

import { dirname, join } from "node:path";

/** The CUDA provider library and the bridge library it needs, both installed beside the core. */
export const CUDA_PROVIDER_LIBRARIES = [
  "libonnxruntime_providers_cuda.so",
  "libonnxruntime_providers_shared.so",
] as const;

/** A library the CUDA provider needs: its soname, what it is, and the pip package that ships it. */
export interface CudaLibrary {
  /** The file name the loader asks for, e.g. `libcudart.so.13`. */
  readonly soname: string;
  /** What it is, for messages, e.g. `the CUDA 13 runtime`. */
  readonly name: string;
  /** The pip package that ships it; none for the driver, which comes with the GPU's driver. */
  readonly pip?: string;
}

/** The libraries onnxruntime 1.29's CUDA provider needs, in the order they are loaded. */
export const CUDA_LIBRARIES: readonly CudaLibrary[] = [
  { soname: "libcuda.so.1", name: "the NVIDIA driver" },
  { soname: "libcudart.so.13", name: "the CUDA 13 runtime", pip: "nvidia-cuda-runtime" },
  { soname: "libcublasLt.so.13", name: "cuBLASLt 13", pip: "nvidia-cublas" },
  { soname: "libcublas.so.13", name: "cuBLAS 13", pip: "nvidia-cublas" },
  { soname: "libcurand.so.10", name: "cuRAND 10", pip: "nvidia-curand" },
  { soname: "libcudnn.so.9", name: "cuDNN 9", pip: "nvidia-cudnn-cu13" },
];

/** cuDNN 9 loads its sub-libraries (`libcudnn_graph.so.9`, `libcudnn_ops.so.9`, ...) by soname. */
const CUDNN_SUB_LIBRARY = /^libcudnn_[a-z_]+\.so\.9$/;

/** Folders the loader searches by default, and the CUDA toolkit's usual one. */
const SYSTEM_LIBRARY_DIRS = [
  "/lib/x86_64-linux-gnu",
  "/usr/lib/x86_64-linux-gnu",
  "/lib64",
  "/usr/lib64",
  "/lib",
  "/usr/lib",
  "/usr/local/cuda/lib64",
];

/** One library file to load: its soname and the full path where it was found. */
export interface FoundLibrary {
  readonly soname: string;
  readonly path: string;
}

/** The result of a search for {@link CUDA_LIBRARIES}. */
export interface CudaSearch {
  /** The files found, in loading order; cuDNN's sub-libraries come just before `libcudnn.so.9`. */
  readonly found: readonly FoundLibrary[];
  /** The libraries found in no folder. */
  readonly missing: readonly CudaLibrary[];
}

/**
 * The folders searched for CUDA libraries, in order: `LD_LIBRARY_PATH`, the folders of the
 * ldconfig cache (`/etc/ld.so.cache`), the standard library folders, and the `lib` folders of the
 * `nvidia` pip packages of the `python3` on PATH (asked only when the process may run python3).
 */
export function cudaSearchDirs(): string[] {
  const fromEnv = (Deno.env.get("LD_LIBRARY_PATH") ?? "").split(":").filter((d) => d !== "");
  return [...new Set([...fromEnv, ...ldCacheDirs(), ...SYSTEM_LIBRARY_DIRS, ...pipCudaDirs()])];
}

/**
 * Looks for each of {@link CUDA_LIBRARIES} by its soname in `dirs` (first match wins), with
 * cuDNN's sub-libraries from the folder where `libcudnn.so.9` was found.
 */
export function findCudaLibraries(dirs: readonly string[] = cudaSearchDirs()): CudaSearch {
  const found: FoundLibrary[] = [];
  const missing: CudaLibrary[] = [];
  for (const library of CUDA_LIBRARIES) {
    const dir = dirs.find((d) => isFile(join(d, library.soname)));
    if (dir === undefined) {
      missing.push(library);
      continue;
    }
    if (library.soname === "libcudnn.so.9") found.push(...cudnnSubLibraries(dir));
    found.push({ soname: library.soname, path: join(dir, library.soname) });
  }
  return { found, missing };
}

/** One sentence naming the missing CUDA libraries, where they were looked for and how to add them. */
export function missingCudaSentence(missing: readonly CudaLibrary[]): string {
  const names = listing(missing.map((l) => `${l.name} (${l.soname})`));
  const pip = [...new Set(missing.flatMap((l) => l.pip ?? []))];
  const remedies = [
    ...(missing.some((l) => l.pip === undefined) ? ["install the NVIDIA driver"] : []),
    ...(pip.length > 0 ? [`pip install ${pip.join(" ")}`] : []),
  ];
  const pipNote = mayRunPython() ? "" : " (not asked: that needs --allow-run=python3)";
  return `onnxruntime's CUDA provider needs ${names}, ${
    missing.length === 1 ? "which is" : "which are"
  } neither on LD_LIBRARY_PATH, in the system's library folders nor in the nvidia pip packages ` +
    `of python3${pipNote}: ${remedies.join(" and ")}, or put their folder on LD_LIBRARY_PATH.`;
}

/**
 * The onnxruntime version a CUDA provider library was built for: the one NUL-delimited
 * `1.<minor>.<patch>` string in the `.rodata` section of the ELF file at `path`. Throws one
 * sentence when the file is not a 64-bit ELF library or holds no such string, or several.
 */
export function cudaProviderVersion(path: string): string {
  const rodata = readElfSection(path, ".rodata");
  const text = new TextDecoder("latin1").decode(rodata);
  const versions = new Set([...text.matchAll(/\0(1\.\d{1,3}\.\d{1,3})(?=\0)/g)].map((m) => m[1]));
  if (versions.size !== 1) {
    throw new Error(
      `${path} does not tell which onnxruntime it was built for (${versions.size} version ` +
        `strings in its read-only data): is it an onnxruntime CUDA provider library?`,
    );
  }
  return [...versions][0];
}

/** What is wrong with a folder of CUDA provider libraries ({@link providerFolderProblem}). */
export type ProviderProblem =
  /** The provider libraries the folder lacks. */
  | { readonly absent: readonly string[] }
  /** The folder's CUDA provider and the onnxruntime version it was built for. */
  | { readonly provider: string; readonly version: string };

/**
 * Whether `dir` holds both {@link CUDA_PROVIDER_LIBRARIES}, built for onnxruntime `version`:
 * undefined when it does, else the libraries it lacks or the other version its CUDA provider is
 * of. Throws as {@link cudaProviderVersion} when the provider tells no version.
 */
export function providerFolderProblem(dir: string, version: string): ProviderProblem | undefined {
  const absent = CUDA_PROVIDER_LIBRARIES.filter((f) => !isFile(join(dir, f)));
  if (absent.length > 0) return { absent };
  const provider = join(dir, CUDA_PROVIDER_LIBRARIES[0]);
  const found = cudaProviderVersion(provider);
  return found === version ? undefined : { provider, version: found };
}

/**
 * Makes the CUDA execution provider usable for the onnxruntime core library in `coreDir`, whose
 * version is `coreVersion`: checks that both provider libraries lie beside it and are of that
 * version, finds the CUDA libraries (in `searchDirs`, by default {@link cudaSearchDirs}) and loads
 * them for the rest of the process. Throws one sentence for the first thing that is wrong.
 */
export function prepareCuda(
  coreDir: string,
  coreVersion: string,
  searchDirs: readonly string[] = cudaSearchDirs(),
): void {
  const problem = providerFolderProblem(coreDir, coreVersion);
  if (problem && "absent" in problem) {
    throw new Error(
      `The CUDA execution provider needs ${problem.absent.join(" and ")} beside onnxruntime's ` +
        `core library in ${coreDir}: install them with "deno task enable-cuda".`,
    );
  }
  if (problem) {
    throw new Error(
      `${problem.provider} is onnxruntime ${problem.version}'s CUDA provider but the core ` +
        `library is onnxruntime ${coreVersion}: install the matching one with ` +
        `"deno task enable-cuda".`,
    );
  }
  const search = findCudaLibraries(searchDirs);
  if (search.missing.length > 0) throw new Error(missingCudaSentence(search.missing));
  preload(search.found);
}

/** Libraries loaded by {@link prepareCuda}, kept open for the life of the process. */
const preloaded: Deno.DynamicLibrary<Record<string, never>>[] = [];

/**
 * Loads each file by its full path. A library whose dependencies are not loaded yet (cuDNN's
 * sub-libraries depend on each other) fails and is tried again once others have loaded; a round
 * in which nothing loads throws with the loader's message.
 */
function preload(files: readonly FoundLibrary[]): void {
  let pending = files;
  while (pending.length > 0) {
    const failed: { file: FoundLibrary; message: string }[] = [];
    for (const file of pending) {
      try {
        preloaded.push(Deno.dlopen(file.path, {}));
      } catch (error) {
        failed.push({ file, message: error instanceof Error ? error.message : String(error) });
      }
    }
    if (failed.length === pending.length) {
      const { file, message } = failed[0];
      throw new Error(`${file.path} was found but does not load: ${message}.`);
    }
    pending = failed.map((f) => f.file);
  }
}

/** cuDNN's sub-libraries in `dir`, sorted by name. */
function cudnnSubLibraries(dir: string): FoundLibrary[] {
  return [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((name) => CUDNN_SUB_LIBRARY.test(name) && isFile(join(dir, name)))
    .sort()
    .map((soname) => ({ soname, path: join(dir, soname) }));
}

/**
 * The folders of the x86-64 libraries in the ldconfig cache at `cachePath`, in cache order; none
 * when it cannot be read. Reads the cache's "glibc-ld.so.cache1.1" table (alone, or after the old
 * format's): 24-byte entries of flags, key and value, the value being the offset of the library's
 * path from the table's header.
 */
export function ldCacheDirs(cachePath = "/etc/ld.so.cache"): string[] {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(cachePath);
  } catch {
    return [];
  }
  const base = new TextDecoder("latin1").decode(bytes).indexOf("glibc-ld.so.cache1.1");
  if (base < 0) return [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(base + 20, true);
  const dirs: string[] = [];
  for (let i = 0; i < count; i++) {
    const entry = base + 48 + 24 * i;
    if (entry + 24 > bytes.length) break;
    const x8664 = (view.getInt32(entry, true) & 0xff00) === 0x0300;
    if (x8664) dirs.push(dirname(cString(bytes, base + view.getUint32(entry + 8, true))));
  }
  return [...new Set(dirs)];
}

/** The `lib` folders of the `nvidia` pip packages of `python3`, or none when it cannot be asked. */
function pipCudaDirs(): string[] {
  if (!mayRunPython()) return [];
  // Deno refuses to pass the loader's variables to a child run under a restricted --allow-run;
  // python3 does not need them to print a path.
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !/^(LD_|DYLD_)/.test(k)),
  );
  let output: Deno.CommandOutput;
  try {
    output = new Deno.Command("python3", {
      args: ["-c", "import nvidia\nfor p in nvidia.__path__: print(p)"],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "null",
    }).outputSync();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  if (!output.success) return [];
  const roots = new TextDecoder().decode(output.stdout).split("\n").filter(isDirectory);
  return roots.flatMap((root) =>
    [...Deno.readDirSync(root)]
      .map((e) => join(root, e.name, "lib"))
      .filter(isDirectory)
      .sort()
  );
}

function mayRunPython(): boolean {
  return Deno.permissions.querySync({ name: "run", command: "python3" }).state === "granted";
}

function readElfSection(path: string, name: string): Uint8Array {
  const file = Deno.openSync(path);
  try {
    const header = readAt(file, 0, 64);
    const view = new DataView(header.buffer);
    const elf64LittleEndian = view.getUint32(0) === 0x7f454c46 && header[4] === 2 &&
      header[5] === 1;
    if (!elf64LittleEndian) throw new Error(`${path} is not a 64-bit ELF library.`);
    const tableOffset = Number(view.getBigUint64(0x28, true));
    const entrySize = view.getUint16(0x3a, true);
    const count = view.getUint16(0x3c, true);
    const table = new DataView(readAt(file, tableOffset, entrySize * count).buffer);
    const section = (i: number) => ({
      nameOffset: table.getUint32(i * entrySize, true),
      offset: Number(table.getBigUint64(i * entrySize + 24, true)),
      size: Number(table.getBigUint64(i * entrySize + 32, true)),
    });
    const names = section(view.getUint16(0x3e, true));
    const nameTable = readAt(file, names.offset, names.size);
    for (let i = 0; i < count; i++) {
      const s = section(i);
      if (cString(nameTable, s.nameOffset) === name) return readAt(file, s.offset, s.size);
    }
    throw new Error(`${path} has no ${name} section: is it a library?`);
  } finally {
    file.close();
  }
}

function readAt(file: Deno.FsFile, offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  file.seekSync(offset, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < length) {
    const n = file.readSync(bytes.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return bytes.subarray(0, filled);
}

function cString(bytes: Uint8Array, offset: number): string {
  const end = bytes.indexOf(0, offset);
  return new TextDecoder().decode(bytes.subarray(offset, end < 0 ? bytes.length : end));
}

function listing(items: readonly string[]): string {
  return items.length <= 1
    ? items.join("")
    : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}
