import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  checkProviderFolder,
  extractProviders,
  providerSource,
} from "../../scripts/enable_cuda.ts";
import { fakeCudaProvider, fakeElf, writeFakeProviders } from "../runtime/fake_cuda_provider.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const LIBRARY_DIR = "package/Plugins/Linux/x64";
const encoder = new TextEncoder();

/** Runs `deno task enable-cuda` with `args`; returns its exit code and what it printed. */
async function enableCuda(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `--config=${join(ROOT, "deno.json")}`, "scripts/enable_cuda.ts", ...args],
    cwd: ROOT,
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/** A gzip-compressed tar archive of `files`, one of them with its path split into a ustar prefix. */
async function tgz(
  files: Record<string, Uint8Array<ArrayBuffer>>,
): Promise<Uint8Array<ArrayBuffer>> {
  const blocks: Uint8Array<ArrayBuffer>[] = [];
  for (const [path, data] of Object.entries(files)) {
    const header = new Uint8Array(512);
    const [prefix, name] = path.startsWith("package/Plugins/")
      ? ["package", path.slice("package/".length)]
      : ["", path];
    header.set(encoder.encode(name), 0);
    header.set(encoder.encode(`${data.length.toString(8).padStart(11, "0")}\0`), 124);
    header.set(encoder.encode("0"), 156);
    header.set(encoder.encode("ustar\x0000"), 257);
    header.set(encoder.encode(prefix), 345);
    blocks.push(header, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  const tar = new Uint8Array(await new Blob(blocks).arrayBuffer());
  const gzipped = new Blob([tar]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(gzipped).arrayBuffer());
}

/** The package's tarball with stand-ins for the libraries of onnxruntime `version`. */
function fakePackage(version: string): Promise<Uint8Array<ArrayBuffer>> {
  return tgz({
    "package/package.json": encoder.encode('{"name":"com.github.asus4.onnxruntime.linux-x64-gpu"}'),
    [`${LIBRARY_DIR}/libonnxruntime_providers_cuda.so`]: fakeCudaProvider(version),
    [`${LIBRARY_DIR}/libonnxruntime_providers_shared.so`]: fakeElf([]),
    [`${LIBRARY_DIR}/libonnxruntime_providers_tensorrt.so`]: fakeElf([version]),
  });
}

Deno.test("enable-cuda --help prints the usage of --from and exits with 0", async () => {
  const { code, stdout, stderr } = await enableCuda("--help");
  assert.equal(code, 0);
  assert.equal(stderr, "");
  assert.match(stdout, /^usage: deno task enable-cuda \[--from PATH\]\n/);
  assert.match(stdout, /\n {2}--from PATH {2}take the providers from PATH, a folder/);
});

Deno.test("enable-cuda --from a path that does not exist is one sentence and exit status 1", async () => {
  const missing = join(Deno.makeTempDirSync(), "absent");
  const { code, stderr } = await enableCuda("--from", missing);
  assert.equal(code, 1);
  assert.equal(stderr, `--from ${missing}: there is no such file or folder.\n`);
});

Deno.test("enable-cuda --from a folder of another onnxruntime version is refused", async () => {
  const dir = Deno.makeTempDirSync();
  writeFakeProviders(dir, "1.28.0");
  const { code, stderr } = await enableCuda("--from", dir);
  assert.equal(code, 1);
  assert.match(
    stderr,
    /^\S+providers_cuda\.so is onnxruntime 1\.28\.0's CUDA provider, but onnxruntime-node is 1\.29\.0 and the two must be the same version\.\n$/,
  );
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a provider folder must hold both libraries of the right version", () => {
  const dir = Deno.makeTempDirSync();
  assert.throws(
    () => checkProviderFolder(dir, "1.29.0"),
    new RegExp(
      `^Error: ${dir} holds no libonnxruntime_providers_cuda\\.so and ` +
        "libonnxruntime_providers_shared\\.so\\.$",
    ),
  );
  writeFakeProviders(dir, "1.29.0");
  checkProviderFolder(dir, "1.29.0");
  assert.throws(
    () => checkProviderFolder(dir, "1.30.0"),
    /1\.29\.0's CUDA provider, but onnxruntime-node is 1\.30\.0/,
  );
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("the package's .tgz fills the cache with its two provider libraries", async () => {
  const root = Deno.makeTempDirSync();
  const tgzPath = join(root, "package.tgz");
  Deno.writeFileSync(tgzPath, await fakePackage("1.29.0"));
  const cache = join(root, "cache", "1.29.0");
  assert.equal(await providerSource(tgzPath, "1.29.0", cache), cache);
  assert.deepEqual([...Deno.readDirSync(cache)].map((e) => e.name).sort(), [
    "libonnxruntime_providers_cuda.so",
    "libonnxruntime_providers_shared.so",
  ]);
  assert.deepEqual(
    Deno.readFileSync(join(cache, "libonnxruntime_providers_cuda.so")),
    fakeCudaProvider("1.29.0"),
  );
  assert.equal(await providerSource(undefined, "1.29.0", cache), cache);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("a .tgz of another version leaves the cache as it was", async () => {
  const root = Deno.makeTempDirSync();
  const tgzPath = join(root, "package.tgz");
  Deno.writeFileSync(tgzPath, await fakePackage("1.28.0"));
  const cache = join(root, "cache", "1.29.0");
  await assert.rejects(() => providerSource(tgzPath, "1.29.0", cache), /is onnxruntime 1\.28\.0's/);
  assert.deepEqual([...Deno.readDirSync(join(root, "cache"))], []);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("a .tgz without the provider libraries is refused naming what it lacks", async () => {
  const dir = Deno.makeTempDirSync();
  const archive = await tgz({
    [`${LIBRARY_DIR}/libonnxruntime_providers_cuda.so`]: fakeCudaProvider("1.29.0"),
  });
  await assert.rejects(
    () => extractProviders(archive, dir),
    new RegExp(
      `^Error: The package lacks ${LIBRARY_DIR}/libonnxruntime_providers_shared\\.so: ` +
        "is it com\\.github\\.asus4\\.onnxruntime\\.linux-x64-gpu\\?$",
    ),
  );
  Deno.removeSync(dir, { recursive: true });
});
