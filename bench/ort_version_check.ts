/**
 * Shows whether pinning onnxruntime-node to 1.29.0 (the version whose CUDA provider libraries npm
 * carries) changes the CPU results or the speed of the iBOT training step against 1.30.0. Runs
 * `ort_version_run.ts` in child processes, one on the project's config and one on a temporary copy
 * of it that maps onnxruntime-node to 1.30.0, alternating round by round (timings on a shared
 * machine drift), each from the same seeded state and inputs.
 *
 * Prints max |Δ| of the losses and of the state after the steps (parameters, Adam moments, teacher,
 * centres) between the versions, and between two runs of the same version (the run-to-run floor),
 * then each version's seconds per step (the median and the best of all its timed steps) and CPU
 * seconds per step (the median), with the ratios. With `threads` 1 the CPU seconds measure the
 * kernels alone: a single-threaded session does not spin, so the load of other processes on a
 * shared machine changes them little.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-env --allow-run bench/ort_version_check.ts [rounds] [steps] [threads]
 * ```
 *
 * The temporary config installs onnxruntime-node 1.30.0 into a temporary node_modules, from Deno's
 * npm cache or the registry.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const rounds = Number(Deno.args[0] ?? 2);
const steps = Number(Deno.args[1] ?? 3);
const threads = Deno.args[2];
const OTHER_VERSION = "1.30.0";
const HERE = dirname(fileURLToPath(import.meta.url));
const PROJECT_CONFIG = join(HERE, "..", "deno.json");

/** What one child reports, with the state it wrote. */
interface RunReport {
  readonly version: string;
  readonly losses: readonly (number | null)[];
  readonly seconds: readonly number[];
  readonly cpuSeconds: readonly number[];
  /** The state's tensors in order: name and number of values. */
  readonly layout: readonly [string, number][];
  readonly state: Float32Array;
}

/** A temporary copy of the project's config with onnxruntime-node and -web at `version`. */
function configWithOrt(version: string, dir: string): string {
  const config = JSON.parse(Deno.readTextFileSync(PROJECT_CONFIG));
  config.imports["onnxruntime-node"] = `npm:onnxruntime-node@${version}`;
  config.imports["onnxruntime-web"] = `npm:onnxruntime-web@${version}`;
  const path = join(dir, "deno.json");
  Deno.writeTextFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

/** Runs `ort_version_run.ts` with `config` and returns its report and final state. */
async function run(config: string, statePath: string): Promise<RunReport> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-ffi",
      "--allow-sys",
      `--config=${config}`,
      ...(config === PROJECT_CONFIG ? [] : ["--no-lock"]),
      join(HERE, "ort_version_run.ts"),
      String(steps),
      statePath,
      ...(threads === undefined ? [] : [threads]),
    ],
  }).output();
  if (!success) throw new Error(`ort_version_run.ts failed:\n${new TextDecoder().decode(stderr)}`);
  const report = JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
  const bytes = Deno.readFileSync(statePath);
  return { ...report, state: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4) };
}

/** Largest |a − b| over two equally long arrays; Infinity where only one side is NaN or null. */
function maxAbsDiff(a: ArrayLike<number | null>, b: ArrayLike<number | null>): number {
  if (a.length !== b.length) throw new Error(`compared arrays differ in length`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? NaN;
    const y = b[i] ?? NaN;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (Number.isNaN(x) !== Number.isNaN(y)) return Infinity;
      continue;
    }
    max = Math.max(max, Math.abs(x - y));
  }
  return max;
}

/** The state tensor where two states differ most: its name, that |Δ| and its largest |value|. */
function largestTensorDiff(a: RunReport, b: RunReport): string {
  let worst = { name: "", diff: -1, scale: 0 };
  let offset = 0;
  for (const [name, length] of a.layout) {
    const x = a.state.subarray(offset, offset + length);
    const diff = maxAbsDiff(x, b.state.subarray(offset, offset + length));
    if (diff > worst.diff) worst = { name, diff, scale: maxAbs(x) };
    offset += length;
  }
  return `${worst.name}: ${worst.diff.toExponential(2)} of values up to ${
    worst.scale.toExponential(2)
  }`;
}

function maxAbs(a: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]));
  return max;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** One version's first run, its timed steps, and how far later runs strayed from the first. */
interface Side {
  first?: RunReport;
  seconds: number[];
  cpuSeconds: number[];
  lossNoise: number;
  stateNoise: number;
}

const scratch = Deno.makeTempDirSync({ prefix: "ort_version_check" });
try {
  const configs = [PROJECT_CONFIG, configWithOrt(OTHER_VERSION, scratch)];
  const sides: Side[] = configs.map(() => ({
    seconds: [],
    cpuSeconds: [],
    lossNoise: 0,
    stateNoise: 0,
  }));
  for (let round = 1; round <= rounds; round++) {
    for (const [i, config] of configs.entries()) {
      const report = await run(config, join(scratch, `state-${i}.bin`));
      console.error(
        `round ${round}: onnxruntime-node ${report.version}, losses ${report.losses.join(", ")}, ` +
          `s/step ${report.seconds.map((s) => s.toFixed(2)).join(", ")}, ` +
          `CPU s/step ${report.cpuSeconds.map((s) => s.toFixed(2)).join(", ")}`,
      );
      const side = sides[i];
      side.seconds.push(...report.seconds);
      side.cpuSeconds.push(...report.cpuSeconds);
      if (side.first === undefined) {
        side.first = report;
        continue;
      }
      side.lossNoise = Math.max(side.lossNoise, maxAbsDiff(side.first.losses, report.losses));
      side.stateNoise = Math.max(side.stateNoise, maxAbsDiff(side.first.state, report.state));
    }
  }
  const [pinned, other] = sides.map((s) => s.first!);
  const versions = `${pinned.version} vs ${other.version}`;
  const sameVersion = (of: (s: Side) => number) =>
    rounds > 1 ? `same version, two runs: ${Math.max(...sides.map(of)).toExponential(2)}; ` : "";
  console.log(`iBOT training step at the bench size, ${rounds} rounds of ${steps} steps`);
  console.log(
    `loss:  max |Δ| ${versions} = ${maxAbsDiff(pinned.losses, other.losses).toExponential(2)} (` +
      sameVersion((s) => s.lossNoise) +
      `losses up to ${maxAbs(pinned.losses.map((l) => l ?? NaN)).toFixed(3)})`,
  );
  console.log(
    `state: max |Δ| ${versions} = ${maxAbsDiff(pinned.state, other.state).toExponential(2)} (` +
      sameVersion((s) => s.stateNoise) +
      `${pinned.state.length} values up to ${maxAbs(pinned.state).toFixed(3)})`,
  );
  console.log(`       largest in ${largestTensorDiff(pinned, other)}`);
  const compare = (label: string, of: (side: Side) => number) => {
    const [a, b] = sides.map(of);
    console.log(
      `${label}: ${pinned.version} ${a.toFixed(3)}, ${other.version} ${b.toFixed(3)}, ` +
        `ratio ${(a / b).toFixed(3)}`,
    );
  };
  const timed = sides[0].seconds.length;
  compare(`s/step, median of ${timed} timed steps each`, (s) => median(s.seconds));
  compare(`s/step, best step (load only adds time)`, (s) => Math.min(...s.seconds));
  compare(`CPU s/step, median`, (s) => median(s.cpuSeconds));
} finally {
  Deno.removeSync(scratch, { recursive: true });
}
