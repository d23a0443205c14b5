/**
 * Seeded pseudo-random numbers: xoshiro128** seeded by splitmix64. Every draw is a pure function
 * of the seed and the draws before it, so runs reproduce exactly on every platform.
 *
 * @module
 */

const MASK64 = (1n << 64n) - 1n;
const TWO_POW_53 = 9007199254740992;
const TWO_POW_32 = 4294967296;

/** The splitmix64 finalizer: a bijective 64-bit mix. */
function mix64(x: bigint): bigint {
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return x ^ (x >> 31n);
}

/** Four 32-bit state words from two splitmix64 outputs of `key`. */
function stateFromKey(key: bigint): Uint32Array {
  const s = new Uint32Array(4);
  for (let i = 0; i < 2; i++) {
    key = (key + 0x9e3779b97f4a7c15n) & MASK64;
    const z = mix64(key);
    s[2 * i] = Number(z & 0xffffffffn);
    s[2 * i + 1] = Number(z >> 32n);
  }
  return s;
}

/** 64-bit FNV-1a hash of a string's UTF-8 bytes. */
function fnv1a64(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    h = ((h ^ BigInt(byte)) * 0x100000001b3n) & MASK64;
  }
  return h;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A snapshot of an {@link Rng}, plain JSON, for resuming a run exactly. */
export interface RngState {
  /** The four xoshiro128** state words, each an unsigned 32-bit integer. */
  readonly s: readonly number[];
  /** The cached second Box–Muller value (a standard normal), or null when none is cached. */
  readonly spare: number | null;
}

/** A deterministic random generator (xoshiro128**), seeded from an integer. */
export class Rng {
  #s: Uint32Array;
  #spare: number | null = null;

  /** Seeds the generator from any safe integer (negative seeds are taken modulo 2^64). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new Error(`Rng seed must be a safe integer, got ${seed}`);
    }
    this.#s = stateFromKey(BigInt.asUintN(64, BigInt(seed)));
  }

  /** Restores a generator from {@link Rng.state}; it continues exactly where the original was. */
  static fromState(state: RngState): Rng {
    const { s, spare } = state;
    const wordsOk = s.length === 4 &&
      s.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32);
    if (!wordsOk || s.every((w) => w === 0)) {
      throw new Error(`Rng state needs four uint32 words, not all zero, got [${s.join(", ")}]`);
    }
    if (spare !== null && !Number.isFinite(spare)) {
      throw new Error(`Rng state spare must be a finite number or null, got ${spare}`);
    }
    const rng = new Rng(0);
    rng.#s = Uint32Array.from(s);
    rng.#spare = spare;
    return rng;
  }

  /** A snapshot of the current state (plain JSON). */
  state(): RngState {
    return { s: Array.from(this.#s), spare: this.#spare };
  }

  /**
   * A derived, independent generator for `label` (a parameter name, an epoch, a worker id).
   * It depends on this generator's current state and the label (`1` and `"1"` differ), and
   * does not advance this generator.
   */
  fork(label: string | number): Rng {
    const s = this.#s;
    const lo = BigInt(s[0]) | (BigInt(s[1]) << 32n);
    const hi = BigInt(s[2]) | (BigInt(s[3]) << 32n);
    const labelHash = fnv1a64(`${typeof label}:${label}`);
    const child = new Rng(0);
    child.#s = stateFromKey(mix64(mix64(mix64(lo) ^ hi) ^ labelHash));
    return child;
  }

  /** The next raw output: an unsigned 32-bit integer. */
  uint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const high = this.uint32() >>> 5;
    const low = this.uint32() >>> 6;
    return (high * 67108864 + low) / TWO_POW_53;
  }

  /** A uniform double in [low, high) (`high` itself can appear only through float rounding). */
  uniformRange(low: number, high: number): number {
    return low + (high - low) * this.uniform();
  }

  /** A normal draw N(mean, std²) by Box–Muller; every second call uses the cached value. */
  normal(mean = 0, std = 1): number {
    let z: number;
    if (this.#spare !== null) {
      z = this.#spare;
      this.#spare = null;
    } else {
      const radius = Math.sqrt(-2 * Math.log(1 - this.uniform()));
      const angle = 2 * Math.PI * this.uniform();
      z = radius * Math.cos(angle);
      this.#spare = radius * Math.sin(angle);
    }
    return mean + std * z;
  }

  /** A uniform integer in [0, n), unbiased; `n` is an integer in [1, 2^32]. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new Error(`Rng.int needs an integer n in [1, 2^32], got ${n}`);
    }
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    let x = this.uint32();
    while (x >= limit) x = this.uint32();
    return x % n;
  }
}
