/**
 * Installs onnxruntime's CUDA provider libraries beside onnxruntime-node's native binding, so
 * that graphs can be compiled with `executionProviders: ["cuda"]`.
 *
 * The npm package does not ship them (its install script downloads them, which this project does
 * not run). Take them from the onnxruntime Linux GPU release of exactly the same version as
 * onnxruntime-node (CUDA 13, cuDNN 9), extracted anywhere:
 *
 *   deno task enable-cuda /path/to/onnxruntime-linux-x64-gpu-1.30.0/lib
 */

import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { ortBindingDir } from "../lib/runtime/session.ts";

const PROVIDER_LIBRARIES = [
  "libonnxruntime_providers_cuda.so",
  "libonnxruntime_providers_shared.so",
];

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

const source = Deno.args[0];
const version = ort.env.versions.common;
if (!source) {
  console.error(
    `Usage: deno task enable-cuda <lib folder of the onnxruntime ${version} Linux GPU release>`,
  );
  Deno.exit(2);
}
if (!exists(join(source, `libonnxruntime.so.${version}`))) {
  console.error(
    `${source} does not hold libonnxruntime.so.${version}: the provider libraries must come from onnxruntime ${version}, the version of onnxruntime-node.`,
  );
  Deno.exit(1);
}
const missing = PROVIDER_LIBRARIES.filter((f) => !exists(join(source, f)));
if (missing.length > 0) {
  console.error(`${source} lacks ${missing.join(" and ")}: is it the GPU release?`);
  Deno.exit(1);
}
const target = ortBindingDir();
for (const file of PROVIDER_LIBRARIES) {
  await Deno.copyFile(join(source, file), join(target, file));
  console.log(`copied ${file} to ${target}`);
}
