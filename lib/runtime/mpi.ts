/**
 * A communicator over Open MPI's `MPI_COMM_WORLD`, reached through `Deno.dlopen` on
 * `libmpi.so.40`: the collectives data-parallel training needs (sum of gradients, broadcast of
 * weights, gather of features, agreement to stop). A process not started by Open MPI's `mpirun`
 * gets a one-process world that needs no libmpi.
 *
 * Threads: the collectives are `nonblocking` FFI calls, so the event loop keeps running (the data
 * loader's workers post messages) while MPI works. Deno runs such calls on its pool of blocking
 * threads, a different thread from call to call and never the main one, so MPI is initialised
 * with `MPI_THREAD_MULTIPLE` requested and at least `MPI_THREAD_SERIALIZED` required (Debian's
 * Open MPI provides MULTIPLE). The communicator runs its collectives one at a time, in the order
 * they were called, which MPI requires of every rank anyway; `MPI_Init_thread`, `MPI_Abort` and
 * `MPI_Finalize` run on the main thread.
 *
 * Faults, as measured with Open MPI 4.1.4 (two ranks on one machine, the other rank waiting in
 * an all-reduce): a rank that catches its error, prints it and calls
 * {@link Communicator.abort} ends the job within 20 ms, `mpirun` exiting with the code passed. A
 * rank that dies otherwise (SIGKILL, an uncaught exception, an exit without `finalize`) ends it
 * within about a second: `mpirun` sends the others SIGCONT, SIGTERM one second later and SIGKILL
 * one second after that, and exits with 137 (killed) or 1. A rank that listens for SIGTERM lives
 * until the SIGKILL. Ctrl-C on `mpirun` never reaches the ranks as SIGINT (each runs in its own
 * process group): they get the same SIGCONT, SIGTERM, SIGKILL sequence, and `mpirun` exits with 1;
 * a second Ctrl-C ends `mpirun` at once and the ranks within a second. See {@link anyRank} for a
 * clean stop.
 *
 * @module
 */

/** Data a {@link Communicator.broadcast} moves: any of these views, sent as its bytes. */
export type BroadcastData = Uint8Array | Float32Array | Float64Array;

/** The collectives over all the processes of one training job. */
export interface Communicator {
  /** This process's rank, 0 … size − 1; rank 0 prints, logs and writes checkpoints. */
  readonly rank: number;
  /** The number of processes in the job. */
  readonly size: number;
  /** This process's rank among the job's processes on its machine: the GPU it uses. */
  readonly localRank: number;
  /** The number of the job's processes on this machine (they share its cores). */
  readonly localSize: number;
  /** Sums `data` element-wise over the ranks, in place; every rank passes the same length. */
  allreduceSum(data: Float32Array | Float64Array): Promise<void>;
  /** Overwrites `data` on every rank with root's; every rank passes the same byte length. */
  broadcast(data: BroadcastData, root: number): Promise<void>;
  /** Every rank's `local`, indexed by rank; the lengths may differ from rank to rank. */
  allgather(local: Float32Array): Promise<Float32Array[]>;
  /** Resolves once every rank has called it. */
  barrier(): Promise<void>;
  /** Ends every process of the job at once, `mpirun` exiting with `code`. */
  abort(code: number): never;
  /**
   * Ends MPI in this process after its last collective; every rank calls it before exiting,
   * except after a stop by `mpirun` (SIGTERM), when it would block until the SIGKILL.
   */
  finalize(): void;
}

/** Options of {@link worldCommunicator}. */
export interface WorldOptions {
  /**
   * The most elements one MPI call moves: MPI counts are C ints, so larger arrays go in chunks
   * of 2^31 − 1 elements (the default); a smaller value exercises the chunking.
   */
  readonly maxCount?: number;
}

/** MPI counts are C ints. */
const MAX_INT = 2 ** 31 - 1;

/** `MPI_THREAD_SERIALIZED` and `MPI_THREAD_MULTIPLE` of Open MPI's `mpi.h`. */
const THREAD_SERIALIZED = 2;
const THREAD_MULTIPLE = 3;

/** Open MPI's `MPI_IN_PLACE`: the address 1. */
const IN_PLACE = Deno.UnsafePointer.create(1n);

/** `MPI_MAX_ERROR_STRING` of Open MPI's `mpi.h`. */
const MAX_ERROR_STRING = 256;

/**
 * The functions called and the predefined handles; a handle such as `MPI_COMM_WORLD` is the
 * address of its `ompi_mpi_*` symbol, which Deno gives for a `pointer` static.
 */
const MPI_SYMBOLS = {
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_set_errhandler: { parameters: ["pointer", "pointer"], result: "i32" },
  MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  MPI_Allreduce: {
    parameters: ["pointer", "buffer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: {
    parameters: ["buffer", "i32", "pointer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Allgather: {
    parameters: ["buffer", "i32", "pointer", "buffer", "i32", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Allgatherv: {
    parameters: ["buffer", "i32", "pointer", "buffer", "buffer", "buffer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  ompi_mpi_comm_world: { type: "pointer" },
  ompi_mpi_errors_return: { type: "pointer" },
  ompi_mpi_byte: { type: "pointer" },
  ompi_mpi_float: { type: "pointer" },
  ompi_mpi_double: { type: "pointer" },
  ompi_mpi_op_sum: { type: "pointer" },
} as const;

type Mpi = Deno.DynamicLibrary<typeof MPI_SYMBOLS>["symbols"];

/** True when this process was started by Open MPI's `mpirun`, which sets `OMPI_COMM_WORLD_SIZE`. */
export function launchedByMpirun(): boolean {
  return Deno.env.get("OMPI_COMM_WORLD_SIZE") !== undefined;
}

/** Whether MPI was initialised in this process: `MPI_Init_thread` may run only once. */
let mpiStarted = false;

/**
 * The communicator of this job: over MPI when launched by `mpirun` (MPI is initialised by the
 * first call, and a second call throws), else a one-process world that needs no libmpi.
 */
export function worldCommunicator(options: WorldOptions = {}): Communicator {
  const maxCount = options.maxCount ?? MAX_INT;
  if (!Number.isInteger(maxCount) || maxCount < 1 || maxCount > MAX_INT) {
    throw new Error(`maxCount must be an integer from 1 to 2^31 − 1, not ${maxCount}.`);
  }
  if (!launchedByMpirun()) return new SingleProcess();
  if (mpiStarted) {
    throw new Error(
      "MPI is already initialised in this process; reuse the communicator worldCommunicator returned.",
    );
  }
  mpiStarted = true;
  return new MpiWorld(openMpi(), maxCount);
}

/**
 * Whether `flag` is true on any rank: a one-number all-reduce that every rank calls at the same
 * point, e.g. once per iteration with "a stop was asked for here", so that all ranks stop after
 * the same iteration.
 *
 * A clean stop on Ctrl-C: each rank listens for SIGTERM (what `mpirun` sends it) and SIGINT (a
 * process without `mpirun`) and sets a flag; after each iteration `anyRank(flag)`; when true,
 * rank 0 writes the checkpoint (to a new file, renamed over the old one, so that SIGKILL leaves
 * the last one intact) and every rank exits without {@link Communicator.finalize}, which blocks
 * once `mpirun` is ending the job. SIGKILL comes T seconds after SIGTERM (T =
 * `odls_base_sigkill_timeout`, 1 by default), so the iteration and the save must fit in T: run
 * `mpirun --mca odls_base_sigkill_timeout 60 …` (or set `OMPI_MCA_odls_base_sigkill_timeout`) for
 * steps and checkpoints that take longer than a second.
 */
export async function anyRank(comm: Communicator, flag: boolean): Promise<boolean> {
  const votes = new Float64Array([flag ? 1 : 0]);
  await comm.allreduceSum(votes);
  return votes[0] > 0;
}

/** Loads libmpi, saying in one sentence what to install when it is missing. */
function openMpi(): Mpi {
  try {
    return Deno.dlopen("libmpi.so.40", MPI_SYMBOLS).symbols;
  } catch (error) {
    throw new Error(
      `This process was started by mpirun but cannot load Open MPI's libmpi.so.40 ` +
        `(${(error as Error).message}); install Open MPI (Debian package openmpi-bin).`,
    );
  }
}

/** The world of a process not started by `mpirun`: rank 0 of 1, every collective the identity. */
class SingleProcess implements Communicator {
  readonly rank = 0;
  readonly size = 1;
  readonly localRank = 0;
  readonly localSize = 1;

  allreduceSum(_data: Float32Array | Float64Array): Promise<void> {
    return Promise.resolve();
  }

  broadcast(_data: BroadcastData, root: number): Promise<void> {
    checkRoot(root, this.size);
    return Promise.resolve();
  }

  allgather(local: Float32Array): Promise<Float32Array[]> {
    return Promise.resolve([local.slice()]);
  }

  barrier(): Promise<void> {
    return Promise.resolve();
  }

  abort(code: number): never {
    Deno.exit(code);
  }

  finalize(): void {}
}

/** Throws unless `root` is a rank of a world of `size` processes. */
function checkRoot(root: number, size: number): void {
  if (!Number.isInteger(root) || root < 0 || root >= size) {
    throw new Error(`The broadcast root ${root} is not a rank of this ${size}-process world.`);
  }
}

/** `MPI_COMM_WORLD` of an `mpirun` job. */
class MpiWorld implements Communicator {
  readonly rank: number;
  readonly size: number;
  readonly localRank: number;
  readonly localSize: number;
  readonly #mpi: Mpi;
  readonly #maxCount: number;
  /** The last collective called: each one starts after it. */
  #queue: Promise<void> = Promise.resolve();
  #running = 0;
  #finalized = false;

  constructor(mpi: Mpi, maxCount: number) {
    this.#mpi = mpi;
    this.#maxCount = maxCount;
    const provided = new Int32Array(1);
    this.#check("MPI_Init_thread", mpi.MPI_Init_thread(null, null, THREAD_MULTIPLE, provided));
    if (provided[0] < THREAD_SERIALIZED) {
      throw new Error(
        `Open MPI provides thread level ${provided[0]}, but the collectives run on Deno's ` +
          `worker threads and need MPI_THREAD_SERIALIZED (${THREAD_SERIALIZED}) or more.`,
      );
    }
    this.#check(
      "MPI_Comm_set_errhandler",
      mpi.MPI_Comm_set_errhandler(mpi.ompi_mpi_comm_world, mpi.ompi_mpi_errors_return),
    );
    const value = new Int32Array(1);
    this.#check("MPI_Comm_rank", mpi.MPI_Comm_rank(mpi.ompi_mpi_comm_world, value));
    this.rank = value[0];
    this.#check("MPI_Comm_size", mpi.MPI_Comm_size(mpi.ompi_mpi_comm_world, value));
    this.size = value[0];
    this.localRank = Number(Deno.env.get("OMPI_COMM_WORLD_LOCAL_RANK") ?? 0);
    this.localSize = Number(Deno.env.get("OMPI_COMM_WORLD_LOCAL_SIZE") ?? 1);
  }

  allreduceSum(data: Float32Array | Float64Array): Promise<void> {
    const mpi = this.#mpi;
    const type = data instanceof Float32Array ? mpi.ompi_mpi_float : mpi.ompi_mpi_double;
    return this.#serial(async () => {
      for (let start = 0; start < data.length; start += this.#maxCount) {
        const chunk = data.subarray(start, start + this.#maxCount);
        this.#check(
          "MPI_Allreduce",
          await mpi.MPI_Allreduce(
            IN_PLACE,
            chunk,
            chunk.length,
            type,
            mpi.ompi_mpi_op_sum,
            mpi.ompi_mpi_comm_world,
          ),
        );
      }
    });
  }

  broadcast(data: BroadcastData, root: number): Promise<void> {
    checkRoot(root, this.size);
    const mpi = this.#mpi;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return this.#serial(async () => {
      for (let start = 0; start < bytes.length; start += this.#maxCount) {
        const chunk = bytes.subarray(start, start + this.#maxCount);
        this.#check(
          "MPI_Bcast",
          await mpi.MPI_Bcast(
            chunk,
            chunk.length,
            mpi.ompi_mpi_byte,
            root,
            mpi.ompi_mpi_comm_world,
          ),
        );
      }
    });
  }

  /**
   * Gathers the lengths, then the values in rounds: in each round every rank sends up to
   * maxCount / size of its next elements, so that no count or displacement exceeds an int.
   */
  allgather(local: Float32Array): Promise<Float32Array[]> {
    const mpi = this.#mpi;
    const world = mpi.ompi_mpi_comm_world;
    return this.#serial(async () => {
      const lengths = new Float64Array(this.size);
      this.#check(
        "MPI_Allgather",
        await mpi.MPI_Allgather(
          new Float64Array([local.length]),
          1,
          mpi.ompi_mpi_double,
          lengths,
          1,
          mpi.ompi_mpi_double,
          world,
        ),
      );
      const all = new Float32Array(lengths.reduce((a, b) => a + b, 0));
      const gathered: Float32Array[] = [];
      let offset = 0;
      for (const length of lengths) {
        gathered.push(all.subarray(offset, offset + length));
        offset += length;
      }
      const perRound = Math.max(1, Math.floor(this.#maxCount / this.size));
      const counts = new Int32Array(this.size);
      const displacements = new Int32Array(this.size);
      for (let start = 0; start < Math.max(...lengths); start += perRound) {
        let total = 0;
        for (let r = 0; r < this.size; r++) {
          counts[r] = Math.min(perRound, Math.max(0, lengths[r] - start));
          displacements[r] = total;
          total += counts[r];
        }
        const round = new Float32Array(total);
        this.#check(
          "MPI_Allgatherv",
          await mpi.MPI_Allgatherv(
            local.subarray(start, start + counts[this.rank]),
            counts[this.rank],
            mpi.ompi_mpi_float,
            round,
            counts,
            displacements,
            mpi.ompi_mpi_float,
            world,
          ),
        );
        for (let r = 0; r < this.size; r++) {
          if (counts[r] === 0) continue;
          gathered[r].set(round.subarray(displacements[r], displacements[r] + counts[r]), start);
        }
      }
      return gathered;
    });
  }

  barrier(): Promise<void> {
    const mpi = this.#mpi;
    return this.#serial(async () => {
      this.#check("MPI_Barrier", await mpi.MPI_Barrier(mpi.ompi_mpi_comm_world));
    });
  }

  abort(code: number): never {
    this.#mpi.MPI_Abort(this.#mpi.ompi_mpi_comm_world, code);
    Deno.exit(code);
  }

  finalize(): void {
    if (this.#finalized) return;
    if (this.#running > 0) {
      throw new Error("finalize was called while a collective is still running; await it first.");
    }
    this.#finalized = true;
    this.#check("MPI_Finalize", this.#mpi.MPI_Finalize());
  }

  /** Runs `collective` after the ones called before it. */
  #serial<T>(collective: () => Promise<T>): Promise<T> {
    if (this.#finalized) throw new Error("A collective was called after finalize.");
    this.#running++;
    const result = this.#queue.then(collective).finally(() => this.#running--);
    this.#queue = result.then(() => {}, () => {});
    return result;
  }

  /** Throws one sentence naming the MPI function and its error unless `code` is MPI_SUCCESS. */
  #check(name: string, code: number): void {
    if (code === 0) return;
    const text = new Uint8Array(MAX_ERROR_STRING);
    const length = new Int32Array(1);
    this.#mpi.MPI_Error_string(code, text, length);
    const message = new TextDecoder().decode(text.subarray(0, length[0]));
    throw new Error(`${name} failed with MPI error ${code} (${message}).`);
  }
}
