import { assert } from "../assert.ts";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { anyRank, launchedByMpirun, worldCommunicator } from "../../lib/runtime/mpi.ts";
import { reportMissingTool } from "../missing_tool.ts";
import { mpirunArgs, mpirunMissing } from "../mpirun.ts";

const CHILD = fileURLToPath(new URL("./mpi_child.ts", import.meta.url));

const missing = mpirunMissing();
if (missing) reportMissingTool("MPI test", missing);

/** What a two-rank run of mpi_child.ts left: exit code, output, each rank's JSON line, seconds. */
interface Run {
  readonly code: number;
  readonly output: string;
  readonly ranks: Record<string, unknown>[];
  readonly seconds: number;
}

/** The finished run of `process`, started `start` ms ago. */
async function finish(process: Deno.ChildProcess, start: number): Promise<Run> {
  const { code, stdout, stderr } = await process.output();
  const seconds = (performance.now() - start) / 1000;
  const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  const ranks = output.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  ranks.sort((a, b) => a.rank - b.rank);
  return { code, output, ranks, seconds };
}

/** Starts mpi_child.ts `args` on two ranks; a run that hangs is killed after a minute. */
function spawn(args: string[], mca: string[] = []): Deno.ChildProcess {
  return new Deno.Command("mpirun", {
    args: mpirunArgs(2, CHILD, args, mca),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).spawn();
}

/** Runs mpi_child.ts `args` on two ranks to the end. */
function mpirun(...args: string[]): Promise<Run> {
  return finish(spawn(args), performance.now());
}

Deno.test("a process not started by mpirun is rank 0 of a one-process world", async () => {
  assert.equal(launchedByMpirun(), false);
  const comm = worldCommunicator();
  assert.deepEqual([comm.rank, comm.size, comm.localRank], [0, 1, 0]);
  const f32 = new Float32Array([1.5, -2]);
  await comm.allreduceSum(f32);
  assert.deepEqual([...f32], [1.5, -2]);
  const bytes = new Uint8Array([7, 8]);
  await comm.broadcast(bytes, 0);
  assert.deepEqual([...bytes], [7, 8]);
  assert.throws(
    () => comm.broadcast(bytes, 1),
    /^Error: The broadcast root 1 is not a rank of this 1-process world\.$/,
  );
  const gathered = await comm.allgather(f32);
  assert.equal(gathered.length, 1);
  assert.deepEqual([...gathered[0]], [1.5, -2]);
  assert.notEqual(gathered[0].buffer, f32.buffer);
  await comm.barrier();
  assert.equal(await anyRank(comm, true), true);
  assert.equal(await anyRank(comm, false), false);
  comm.finalize();
  assert.throws(
    () => worldCommunicator({ maxCount: 0 }),
    /^Error: maxCount must be an integer from 1 to 2\^31 − 1, not 0\.$/,
  );
});

/** Checks one rank's results of mpi_child.ts `collectives` or `chunked`. */
function assertCollectives(rank: Record<string, unknown>, bigLength: number): void {
  if (rank.rank === 0) assert(Number(rank.ticksWhileWaiting) > 3, "rank 0's timers stopped");
  assert.equal(rank.size, 2);
  assert.equal(rank.localRank, rank.rank);
  assert.deepEqual(rank.f32, [3, 1, -2]);
  assert.deepEqual(rank.f64, [2 + 1e-12, 1]);
  assert.equal(rank.bigLength, bigLength);
  assert.equal(rank.bigMismatches, 0);
  assert.deepEqual(rank.bigSample, [0, 999 * 3, ((bigLength - 1) % 1000) * 3]);
  let bytesSum = 0;
  for (let i = 0; i < 2500; i++) bytesSum += i % 251;
  assert.equal(rank.bytesSum, bytesSum);
  assert.deepEqual(rank.bytesSample, [0, 250, 2499 % 251]);
  assert.deepEqual(rank.weights, [0.25, -1.5, 3]);
  assert.deepEqual(rank.gatheredLengths, [1234, 3001]);
  assert.deepEqual(rank.gatheredMatch, [true, true]);
  assert.equal(rank.anyOfRank1, true);
  assert.equal(rank.anyOfNone, false);
}

Deno.test({
  name: "two ranks all-reduce, broadcast, all-gather and agree",
  ignore: missing !== undefined,
  async fn() {
    const run = await mpirun("collectives");
    assert.equal(run.code, 0, run.output);
    assert.deepEqual(run.ranks.map((r) => r.rank), [0, 1], run.output);
    for (const rank of run.ranks) assertCollectives(rank, 10_000_000);
  },
});

Deno.test({
  name: "two ranks give the same results through chunks of 1000 elements",
  ignore: missing !== undefined,
  async fn() {
    const run = await mpirun("chunked");
    assert.equal(run.code, 0, run.output);
    assert.deepEqual(run.ranks.map((r) => r.rank), [0, 1], run.output);
    for (const rank of run.ranks) assertCollectives(rank, 10_001);
  },
});

Deno.test({
  name: "an MPI error is one sentence, and the rank that gets it aborts the job",
  ignore: missing !== undefined,
  async fn() {
    const run = await mpirun("mismatch");
    assert.equal(run.code, 3, run.output);
    assert.match(
      run.output,
      /rank 1: MPI_Bcast failed with MPI error 15 \(MPI_ERR_TRUNCATE: message truncated\)\./,
    );
  },
});

Deno.test({
  name: "a rank that throws ends the job with its message and the abort code",
  ignore: missing !== undefined,
  async fn() {
    const run = await mpirun("throw");
    assert.equal(run.code, 3, run.output);
    assert(run.seconds < 30, `the job took ${run.seconds} s`);
    assert.match(run.output, /rank 1: rank 1 failed on purpose/);
    assert.doesNotMatch(run.output, /"allreduce":"returned"/);
  },
});

Deno.test({
  name: "a rank killed while the other waits in an all-reduce ends the job",
  ignore: missing !== undefined,
  async fn() {
    const run = await mpirun("kill");
    assert.notEqual(run.code, 0, run.output);
    assert(run.seconds < 30, `the job took ${run.seconds} s`);
    assert.match(run.output, /rank 1 .* exited on signal 9/);
    assert.doesNotMatch(run.output, /"allreduce":"returned"/);
  },
});

/** Resolves once `path` exists, or throws after `seconds`. */
async function waitForFile(path: string, seconds: number): Promise<void> {
  const deadline = performance.now() + seconds * 1000;
  while (performance.now() < deadline) {
    try {
      Deno.statSync(path);
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`${path} did not appear within ${seconds} s.`);
}

Deno.test({
  name: "Ctrl-C on mpirun: the ranks agree to stop and rank 0 saves before SIGKILL",
  ignore: missing !== undefined,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const checkpoint = join(dir, "checkpoint");
    const start = performance.now();
    const process = spawn(["stop", checkpoint], ["--mca", "odls_base_sigkill_timeout", "3"]);
    await waitForFile(`${checkpoint}.ready`, 50);
    process.kill("SIGINT");
    const run = await finish(process, start);
    const stopped = run.ranks.map((r) => r.stoppedAfter);
    assert.equal(stopped.length, 2, run.output);
    assert.equal(stopped[0], stopped[1]);
    assert.equal(Deno.readTextFileSync(checkpoint), `iteration ${stopped[0]}`);
    Deno.removeSync(dir, { recursive: true });
  },
});
