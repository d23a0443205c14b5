/**
 * A pool of Web Workers that each take one request at a time from a shared queue, and the
 * in-order, watched delivery of a run of requests: the machinery shared by the pre-training
 * loader (`loader.ts`) and the fine-tuning loader (`finetune_loader.ts`). The worker side of the
 * protocol is `worker_scope.ts`.
 *
 * Nothing waits forever: a worker that crashes, or a reply that cannot be delivered, rejects
 * every pending request, and {@link inOrder} ends the iteration with a {@link Watchdog}'s error
 * when the request its consumer awaits takes too long ({@link WorkerPool.stallError} names the
 * request, the requests in flight and each worker's state).
 *
 * @module
 */

/** What a pool's worker is asked to do: a task, or a ping (answered at once by `worker_scope.ts`). */
export type PoolTask<Task> = Task | { type: "ping" };

/** A message to a worker; `id` pairs it with its reply. */
export interface WorkerRequest<Task> {
  /** Request number, unique within a pool. */
  id: number;
  /** What to do. */
  task: PoolTask<Task>;
}

/** A worker's reply to the request with the same `id`: a result or an error message. */
export type WorkerReply =
  | { id: number; result: unknown }
  | { id: number; error: string };

/** Milliseconds a stalled pool's workers get to answer a ping before they count as unresponsive. */
const PING_MS = 2000;

interface Job<Task> {
  request: WorkerRequest<Task>;
  /** What the request is, for messages (`batch 3 of 79`). */
  label: string;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
}

/** One worker of a pool and what it is doing. */
interface Slot<Task> {
  readonly worker: Worker;
  /** 1-based, for messages. */
  readonly number: number;
  /** The request it is working on. */
  job: Job<Task> | null;
  /** `performance.now()` when the job was posted. */
  since: number;
  /** Why it crashed, once it has. */
  crash: string | null;
}

/**
 * `count` workers running the module at `url`, each given one request at a time from a shared
 * queue. `Task` is the union of the worker's tasks (each with a `type`), `Results` maps each
 * task type to its result.
 */
export class WorkerPool<
  Task extends { type: string },
  Results extends Record<Task["type"], unknown>,
> {
  #slots: Slot<Task>[] = [];
  #queue: Job<Task>[] = [];
  #pings = new Map<number, () => void>();
  #nextId = 0;
  #failure: Error | null = null;

  constructor(url: URL, count: number) {
    for (let i = 0; i < count; i++) {
      const slot: Slot<Task> = {
        worker: new Worker(url, { type: "module" }),
        number: i + 1,
        job: null,
        since: 0,
        crash: null,
      };
      slot.worker.onmessage = (event: MessageEvent<WorkerReply>) => this.#finish(slot, event.data);
      slot.worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        slot.crash = event.message;
        const during = slot.job ? ` during ${slot.job.label}` : "";
        this.#fail(
          new Error(`data loader worker ${slot.number} crashed${during}: ${event.message}`),
        );
      };
      slot.worker.onmessageerror = () => {
        const during = slot.job ? ` to ${slot.job.label}` : "";
        this.#fail(new Error(`the reply${during} from data loader worker ${slot.number} was lost`));
      };
      this.#slots.push(slot);
    }
  }

  /** The number of workers. */
  get size(): number {
    return this.#slots.length;
  }

  /**
   * Gives a task to the next idle worker; resolves with its result, rejects with its error.
   * `label` names the request in messages.
   */
  run<K extends Task["type"]>(
    task: Extract<Task, { type: K }>,
    label: string,
  ): Promise<Results[K]> {
    return new Promise((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      const request = { id: this.#nextId++, task };
      this.#queue.push({ request, label, resolve: resolve as Job<Task>["resolve"], reject });
      this.#dispatch();
    });
  }

  /**
   * Where request `label` is (with a worker, queued, or nowhere) and what every worker is doing,
   * after asking each live worker to answer a ping within {@link PING_MS} ms.
   */
  async describe(label: string): Promise<string> {
    const now = performance.now();
    const seconds = (slot: Slot<Task>) => `${((now - slot.since) / 1000).toFixed(1)} s`;
    const holder = this.#slots.find((slot) => slot.job?.label === label);
    const queued = this.#queue.findIndex((job) => job.label === label);
    const where = holder
      ? `worker ${holder.number} has been on it for ${seconds(holder)}`
      : queued >= 0
      ? `it is queued behind ${queued} other ${queued === 1 ? "request" : "requests"}`
      : "no worker has it and it is not queued (its reply was lost)";
    const queue = this.#queue.length;
    const waiting = queue === 0
      ? "no request is queued"
      : `${queue} ${queue === 1 ? "request is" : "requests are"} queued`;
    const states = this.#slots.map((slot) =>
      slot.crash !== null
        ? `crashed (${slot.crash})`
        : slot.job
        ? `busy with ${slot.job.label} for ${seconds(slot)}`
        : "idle"
    );
    const answers = await Promise.all(this.#slots.map((slot) => this.#ping(slot)));
    const workers = this.#slots.map((slot, i) => {
      const ping = slot.crash !== null
        ? ""
        : answers[i]
        ? ", answers pings"
        : ", does not answer pings";
      return `worker ${slot.number}: ${states[i]}${ping}`;
    });
    return `${where}; ${waiting}; ${workers.join("; ")}`;
  }

  /**
   * The error of a pipeline that waited `seconds` for `label` of `what` with `inFlight` requests
   * unsettled: where that request is and what each worker is doing.
   */
  async stallError(label: string, what: string, seconds: number, inFlight: number): Promise<Error> {
    return new Error(
      `the data loader waited ${seconds} s for ${label} of ${what} and stopped ` +
        `(${inFlight} ${inFlight === 1 ? "request" : "requests"} in flight): ` +
        `${await this.describe(label)}`,
    );
  }

  /** Terminates every worker; queued and running requests reject. */
  close(): void {
    for (const slot of this.#slots) slot.worker.terminate();
    this.#fail(new Error("the data loader was closed"));
    this.#slots = [];
  }

  /** Whether `slot`'s worker answers a ping within {@link PING_MS} ms. */
  #ping(slot: Slot<Task>): Promise<boolean> {
    if (slot.crash !== null) return Promise.resolve(false);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      // A late answer still finds its entry, so it is never mistaken for a request's reply.
      const timer = setTimeout(() => resolve(false), PING_MS);
      this.#pings.set(id, () => {
        clearTimeout(timer);
        resolve(true);
      });
      slot.worker.postMessage({ id, task: { type: "ping" } } satisfies WorkerRequest<Task>);
    });
  }

  #dispatch(): void {
    for (const slot of this.#slots) {
      if (this.#queue.length === 0) return;
      if (slot.job || slot.crash !== null) continue;
      const job = this.#queue.shift()!;
      slot.job = job;
      slot.since = performance.now();
      slot.worker.postMessage(job.request);
    }
  }

  #finish(slot: Slot<Task>, reply: WorkerReply): void {
    const pong = this.#pings.get(reply.id);
    if (pong) {
      this.#pings.delete(reply.id);
      return pong();
    }
    const job = slot.job;
    if (!job) return;
    if (reply.id !== job.request.id) {
      return this.#fail(
        new Error(
          `data loader worker ${slot.number} answered request ${reply.id} during ${job.label} ` +
            `(request ${job.request.id})`,
        ),
      );
    }
    slot.job = null;
    if ("error" in reply) job.reject(new Error(reply.error));
    else job.resolve(reply.result);
    this.#dispatch();
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const slot of this.#slots) {
      slot.job?.reject(error);
      slot.job = null;
    }
    for (const job of this.#queue) job.reject(error);
    this.#queue = [];
  }
}

/** How long {@link inOrder} waits for the request its consumer awaits, and the error it gives. */
export interface Watchdog {
  /** Seconds to wait. */
  readonly seconds: number;
  /**
   * The error that ends the iteration when request `k` did not settle in time, `inFlight`
   * requests (it included) being unsettled.
   */
  readonly stalled: (k: number, inFlight: number) => Promise<Error>;
}

/**
 * Yields request(0), …, request(count − 1) in order, keeping up to `depth` requests in flight.
 * Every request gets a rejection handler at once, so a failure ahead of the consumer is not an
 * unhandled rejection; it surfaces when the consumer reaches it. A request that the consumer has
 * awaited for `watchdog.seconds` ends the iteration with `watchdog.stalled`'s error.
 */
export async function* inOrder<T>(
  count: number,
  depth: number,
  request: (k: number) => Promise<T>,
  watchdog: Watchdog,
): AsyncGenerator<T> {
  const inFlight: Promise<T>[] = [];
  let next = 0;
  const refill = () => {
    while (next < count && inFlight.length < depth) {
      const promise = request(next++);
      promise.catch(() => {});
      inFlight.push(promise);
    }
  };
  refill();
  while (inFlight.length > 0) {
    const k = next - inFlight.length;
    const waiting = inFlight.length;
    const result = await withDeadline(
      inFlight.shift()!,
      watchdog.seconds,
      () => watchdog.stalled(k, waiting),
    );
    refill();
    yield result;
  }
}

/** `promise`, or `timeout`'s error once `seconds` pass before it settles. */
export function withDeadline<T>(
  promise: Promise<T>,
  seconds: number,
  timeout: () => Promise<Error>,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => timeout().then(reject), seconds * 1000);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
