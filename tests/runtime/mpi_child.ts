/**
 * One rank of the MPI tests, started by `mpirun -np 2 deno run -A mpi_child.ts <case> [path]`.
 * Each rank prints its results as one JSON line for mpi_test.ts to check; a rank that throws
 * prints "rank R: <message>" and aborts the job with exit code 3, as the trainer does.
 *
 * Cases: `collectives` (rank, size, local rank, timers firing while a collective waits, all-reduce of float32, float64 and a 10M-element
 * vector, broadcast, all-gather of different lengths, anyRank), `chunked` (the same through
 * chunks of at most 1000 elements), `mismatch` (a broadcast whose byte lengths differ between
 * the ranks), `throw` (rank 1 throws while rank 0 waits in an all-reduce), `kill` (rank 1 dies by
 * SIGKILL while rank 0 waits), `stop` (both ranks iterate until `mpirun` is interrupted; rank 0
 * writes `ready` beside `path` once both run, and then the "checkpoint" `path`).
 */

import { anyRank, type Communicator, worldCommunicator } from "../../lib/runtime/mpi.ts";

/** Element count of the large all-reduce. */
const LARGE = 10_000_000;

/** Every rank's contribution to the all-reduces and all-gathers, from its rank alone. */
function ramp(length: number, rank: number): Float32Array {
  return Float32Array.from({ length }, (_, i) => (i % 1000) * (rank + 1));
}

/** Prints this rank's results as one JSON line. */
function report(comm: Communicator, results: Record<string, unknown>): void {
  console.log(JSON.stringify({ rank: comm.rank, ...results }));
}

/** Elements of the sum of every rank's ramp that differ from the sum computed here. */
function rampMismatches(summed: Float32Array, size: number): number {
  const factor = size * (size + 1) / 2;
  let wrong = 0;
  for (let i = 0; i < summed.length; i++) if (summed[i] !== (i % 1000) * factor) wrong++;
  return wrong;
}

/** The collectives on small vectors and a large one; `large` elements in the big all-reduce. */
async function collectives(comm: Communicator, large: number, gatherLengths: number[]) {
  if (comm.rank === 1) await sleep(300);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  await comm.barrier();
  clearInterval(timer);
  const f32 = new Float32Array([comm.rank + 1, 0.5, -2 * comm.rank]);
  await comm.allreduceSum(f32);
  const f64 = new Float64Array([1 + comm.rank * 1e-12, comm.rank]);
  await comm.allreduceSum(f64);
  const big = ramp(large, comm.rank);
  await comm.allreduceSum(big);
  const bytes = comm.rank === 1 ? Uint8Array.from({ length: 2500 }, (_, i) => i % 251) : null;
  const received = bytes ?? new Uint8Array(2500);
  await comm.broadcast(received, 1);
  const weights = new Float32Array(comm.rank === 0 ? [0.25, -1.5, 3] : [0, 0, 0]);
  await comm.broadcast(weights, 0);
  const gathered = await comm.allgather(ramp(gatherLengths[comm.rank], comm.rank));
  await comm.barrier();
  return {
    ticksWhileWaiting: ticks,
    size: comm.size,
    localRank: comm.localRank,
    f32: [...f32],
    f64: [...f64],
    bigLength: big.length,
    bigMismatches: rampMismatches(big, comm.size),
    bigSample: [big[0], big[999], big[large - 1]],
    bytesSum: received.reduce((a, b) => a + b, 0),
    bytesSample: [received[0], received[250], received[2499]],
    weights: [...weights],
    gatheredLengths: gathered.map((g) => g.length),
    gatheredMatch: gathered.map((g, r) => g.every((v, i) => v === (i % 1000) * (r + 1))),
    anyOfRank1: await anyRank(comm, comm.rank === 1),
    anyOfNone: await anyRank(comm, false),
  };
}

/** Waits `ms` milliseconds. */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Iterates until any rank has received SIGTERM, then rank 0 writes `path`; every rank exits
 * without finalize, as {@link anyRank} advises.
 */
async function stopOnSignal(comm: Communicator, path: string): Promise<never> {
  let stop = false;
  Deno.addSignalListener("SIGTERM", () => stop = true);
  let iteration = 0;
  while (!(await anyRank(comm, stop))) {
    iteration++;
    if (iteration === 1 && comm.rank === 0) Deno.writeTextFileSync(`${path}.ready`, "");
    await sleep(50);
  }
  if (comm.rank === 0) Deno.writeTextFileSync(path, `iteration ${iteration}`);
  report(comm, { stoppedAfter: iteration });
  Deno.exit(0);
}

async function main(comm: Communicator, name: string, path: string): Promise<void> {
  switch (name) {
    case "collectives":
      report(comm, await collectives(comm, LARGE, [1234, 3001]));
      break;
    case "chunked":
      report(comm, await collectives(comm, 10_001, [1234, 3001]));
      break;
    case "mismatch":
      await comm.broadcast(new Uint8Array(comm.rank === 0 ? 16 : 8), 0);
      report(comm, { broadcast: "done" });
      break;
    case "throw":
    case "kill":
      await comm.barrier();
      if (comm.rank === 1 && name === "throw") throw new Error("rank 1 failed on purpose");
      if (comm.rank === 1) Deno.kill(Deno.pid, "SIGKILL");
      await comm.allreduceSum(new Float32Array(4));
      report(comm, { allreduce: "returned" });
      break;
    case "stop":
      await stopOnSignal(comm, path);
      break;
    default:
      throw new Error(`Unknown case ${name}.`);
  }
}

const [name, path = ""] = Deno.args;
const comm = worldCommunicator(name === "chunked" ? { maxCount: 1000 } : {});
try {
  await main(comm, name, path);
} catch (error) {
  console.error(`rank ${comm.rank}: ${(error as Error).message}`);
  comm.abort(3);
}
comm.finalize();
