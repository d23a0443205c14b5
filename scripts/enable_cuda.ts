/**
 * Installs onnxruntime's CUDA provider libraries beside onnxruntime-node's core library, then
 * checks that the CUDA libraries they need are there and load.
 *
 *   deno task enable-cuda              from the project's cache, else from the npm registry
 *   deno task enable-cuda --from PATH  offline: a folder holding the two libraries, or the
 *                                      package's .tgz (as `npm pack PACKAGE@VERSION` fetches it)
 *
 * The libraries come from the npm package com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9, which
 * carries onnxruntime 1.29.0's `libonnxruntime_providers_cuda.so` (CUDA 13, cuDNN 9) and
 * `libonnxruntime_providers_shared.so`. A download is checked against the registry's sha512
 * integrity; the two libraries are kept in `.cuda-providers/<version>/` (git-ignored), so that later
 * runs, and copies of the project to machines without network, need no download. Libraries built
 * for another onnxruntime than onnxruntime-node's are refused.
 *
 * Exit status 0: the providers are installed and the CUDA libraries load. Exit status 1: something
 * was refused, or the providers were installed but a CUDA library is missing (the last line names
 * it), so that `deno task enable-cuda && <a GPU run>` stops before a run that cannot work.
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  CUDA_LIBRARIES,
  CUDA_PROVIDER_LIBRARIES,
  findCudaLibraries,
  missingCudaSentence,
  prepareCuda,
  providerFolderProblem,
} from "../lib/runtime/cuda_libraries.ts";
import { ortBindingDir } from "../lib/runtime/session.ts";

/** The npm package carrying the CUDA provider libraries, and the version of it to install. */
const PROVIDER_PACKAGE = "com.github.asus4.onnxruntime.linux-x64-gpu";
const PROVIDER_PACKAGE_VERSION = "0.4.9";
const REGISTRY = "https://registry.npmjs.org";
/** Where the package keeps the libraries inside its tarball. */
const PACKAGE_LIBRARY_DIR = "package/Plugins/Linux/x64";
/** The project's cache of provider libraries, one folder per onnxruntime version. */
const CACHE_ROOT = fileURLToPath(new URL("../.cuda-providers", import.meta.url));

const USAGE = `usage: deno task enable-cuda [--from PATH]

Installs onnxruntime's CUDA provider libraries beside onnxruntime-node's core library and checks
that the CUDA libraries they need load.

  --from PATH  take the providers from PATH, a folder holding the two libraries or the .tgz of
               ${PROVIDER_PACKAGE}@${PROVIDER_PACKAGE_VERSION}, instead of the
               project's cache or the npm registry
  --help       print this text`;

/**
 * Throws one sentence unless `dir` holds both provider libraries, built for onnxruntime `version`.
 */
export function checkProviderFolder(dir: string, version: string): void {
  const problem = providerFolderProblem(dir, version);
  if (problem && "absent" in problem) {
    throw new Error(`${dir} holds no ${problem.absent.join(" and ")}.`);
  }
  if (problem) {
    throw new Error(
      `${problem.provider} is onnxruntime ${problem.version}'s CUDA provider, but ` +
        `onnxruntime-node is ${version} and the two must be the same version.`,
    );
  }
}

/**
 * Writes the two provider libraries of the package tarball `tgz` (gzip-compressed tar, as npm
 * serves it) into `dir`, which is created. Throws one sentence when the tarball lacks one.
 */
export async function extractProviders(tgz: Uint8Array<ArrayBuffer>, dir: string): Promise<void> {
  const gunzipped = new Blob([tgz]).stream().pipeThrough(new DecompressionStream("gzip"));
  const tar = new Uint8Array(await new Response(gunzipped).arrayBuffer());
  const wanted = new Map(CUDA_PROVIDER_LIBRARIES.map((f) => [`${PACKAGE_LIBRARY_DIR}/${f}`, f]));
  Deno.mkdirSync(dir, { recursive: true });
  for (const entry of tarEntries(tar)) {
    const file = wanted.get(entry.name);
    if (file === undefined) continue;
    Deno.writeFileSync(join(dir, file), entry.data, { mode: 0o755 });
    wanted.delete(entry.name);
  }
  if (wanted.size > 0) {
    throw new Error(
      `The package lacks ${[...wanted.keys()].join(" and ")}: is it ${PROVIDER_PACKAGE}?`,
    );
  }
}

/**
 * Returns a folder holding the provider libraries for onnxruntime `version`, checked: `from` when
 * it is a folder; else the cache folder `cacheDir`, filled from `from` when it is the package's
 * .tgz, kept when it already holds them, or else filled from the npm registry.
 */
export async function providerSource(
  from: string | undefined,
  version: string,
  cacheDir: string,
): Promise<string> {
  if (from !== undefined) {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(from);
    } catch {
      throw new Error(`--from ${from}: there is no such file or folder.`);
    }
    if (info.isDirectory) {
      checkProviderFolder(from, version);
      return from;
    }
    console.log(`reading ${from}`);
    await fillCache(Deno.readFileSync(from), version, cacheDir);
    return cacheDir;
  }
  try {
    checkProviderFolder(cacheDir, version);
    console.log(`using the providers kept in ${cacheDir}`);
  } catch {
    await fillCache(await downloadPackage(), version, cacheDir);
  }
  return cacheDir;
}

/** Extracts the package into a fresh folder beside `cacheDir`, checks it, then puts it in place. */
async function fillCache(
  tgz: Uint8Array<ArrayBuffer>,
  version: string,
  cacheDir: string,
): Promise<void> {
  const partial = `${cacheDir}.partial`;
  removeIfPresent(partial);
  try {
    await extractProviders(tgz, partial);
    checkProviderFolder(partial, version);
  } catch (error) {
    removeIfPresent(partial);
    throw error;
  }
  removeIfPresent(cacheDir);
  Deno.renameSync(partial, cacheDir);
  console.log(`kept the providers of onnxruntime ${version} in ${cacheDir}`);
}

/** Downloads the package's tarball and checks it against the registry's sha512 integrity. */
async function downloadPackage(): Promise<Uint8Array<ArrayBuffer>> {
  const metadataUrl = `${REGISTRY}/${PROVIDER_PACKAGE}/${PROVIDER_PACKAGE_VERSION}`;
  const metadata = await fetchOk(metadataUrl);
  const { tarball, integrity } = (await metadata.json()).dist as {
    tarball: string;
    integrity: string;
  };
  console.log(`downloading ${tarball}`);
  const bytes = new Uint8Array(await (await fetchOk(tarball)).arrayBuffer());
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
  if (`sha512-${btoa(String.fromCharCode(...digest))}` !== integrity) {
    throw new Error(
      `${tarball} does not match the registry's sha512 integrity: download it again.`,
    );
  }
  console.log(`sha512 verified (${(bytes.length / 2 ** 20).toFixed(0)} MiB)`);
  return bytes;
}

async function fetchOk(url: string): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(
      `Cannot reach ${url} (${error instanceof Error ? error.message : error}); ` +
        `without network, give the providers with --from PATH.`,
    );
  }
  if (!response.ok) throw new Error(`${url} answered ${response.status} ${response.statusText}.`);
  return response;
}

/** The regular files of a tar archive (ustar or v7 headers), by path. */
function* tarEntries(tar: Uint8Array): Generator<{ name: string; data: Uint8Array }> {
  const text = (from: number, length: number) => {
    const field = tar.subarray(from, from + length);
    const end = field.indexOf(0);
    return new TextDecoder().decode(end < 0 ? field : field.subarray(0, end));
  };
  let offset = 0;
  while (offset + 512 <= tar.length) {
    const name = text(offset, 100);
    if (name === "") return;
    const size = parseInt(text(offset + 124, 12).trim() || "0", 8);
    const prefix = text(offset + 257, 6) === "ustar" ? text(offset + 345, 155) : "";
    const type = text(offset + 156, 1);
    const start = offset + 512;
    if (type === "" || type === "0") {
      yield { name: prefix ? `${prefix}/${name}` : name, data: tar.subarray(start, start + size) };
    }
    offset = start + Math.ceil(size / 512) * 512;
  }
}

function removeIfPresent(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { from: { type: "string" }, help: { type: "boolean" } },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const version = ort.env.versions.common;
  const coreDir = ortBindingDir();
  console.log(`onnxruntime-node ${version}, core library in ${coreDir}`);
  const source = await providerSource(values.from, version, join(CACHE_ROOT, version));
  if (Deno.realPathSync(source) !== Deno.realPathSync(coreDir)) {
    for (const file of CUDA_PROVIDER_LIBRARIES) {
      Deno.copyFileSync(join(source, file), join(coreDir, file));
    }
  }
  console.log(`installed ${CUDA_PROVIDER_LIBRARIES.join(" and ")} (onnxruntime ${version})`);
  const search = findCudaLibraries();
  for (const library of CUDA_LIBRARIES) {
    const file = search.found.find((f) => f.soname === library.soname);
    console.log(`  ${library.name} (${library.soname}): ${file?.path ?? "not found"}`);
  }
  if (search.missing.length > 0) {
    console.error(missingCudaSentence(search.missing));
    return 1;
  }
  prepareCuda(coreDir, version);
  console.log("the CUDA libraries load: graphs can run on the CUDA execution provider.");
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
