/**
 * Dimensions: the size of one axis is a number, or a {@link SymDim}, a size that is known only
 * when the graph runs (the batch, or the height of an image, of a model exported for any input
 * size).
 *
 * A symbolic size is a polynomial with integer coefficients over named symbols, so that the sizes
 * ops derive from the symbols (h·w patches, 1 + h·w tokens, batch·tokens rows) compare equal
 * however they were computed. A symbol is an axis of a graph input (`batch`), or the exact
 * quotient of a size by a number (`height/16`, the patch rows of an image), which the op that
 * divides must check at run time.
 *
 * @module
 */

/** The size of one axis: a non-negative integer, or a size known only at run time. */
export type Dim = number | SymDim;

/** A shape whose axes may be symbolic. */
export type Dims = readonly Dim[];

/** A named symbol of a {@link SymDim}. */
export interface DimSymbol {
  /** The symbol's name; symbols with the same name are the same size. */
  readonly name: string;
  /** For a quotient symbol: the size that is divided and the divisor. */
  readonly quotient?: { readonly of: SymDim; readonly by: number };
}

/** One term of a polynomial: coefficient × product of symbols (sorted by name, with repeats). */
export interface DimTerm {
  /** Integer coefficient, never 0. */
  readonly coefficient: number;
  /** The symbols multiplied, sorted by name; empty for the constant term. */
  readonly symbols: readonly DimSymbol[];
}

/** A size known only at run time: Σ coefficient · Π symbols. Build with {@link symbolicDim}. */
export class SymDim {
  /** The terms, in canonical order; use the functions of this module to build one. */
  constructor(readonly terms: readonly DimTerm[]) {}

  /** Canonical text, e.g. `batch`, `height/16*width/16+1`; equal sizes give equal text. */
  toString(): string {
    return this.terms.map(formatTerm).join("+");
  }
}

/** A new symbolic size named `name` (e.g. `batch`), to declare an axis of a graph input. */
export function symbolicDim(name: string): SymDim {
  if (!/^[A-Za-z_][\w]*$/.test(name)) {
    throw new Error(`symbolicDim: '${name}' is not a name (letters, digits and _)`);
  }
  return new SymDim([{ coefficient: 1, symbols: [{ name }] }]);
}

/** True for a symbolic size. */
export function isSymbolic(d: Dim): d is SymDim {
  return d instanceof SymDim;
}

/** True when some axis of `dims` is symbolic. */
export function hasSymbolicDims(dims: Dims): boolean {
  return dims.some(isSymbolic);
}

/** True when two sizes are equal for every value of the symbols. */
export function sameDim(a: Dim, b: Dim): boolean {
  return String(a) === String(b);
}

/** The text of a size: the number, or the symbolic size's canonical text. */
export function formatDim(d: Dim): string {
  return String(d);
}

/** a + b. */
export function addDims(a: Dim, b: Dim): Dim {
  return fromTerms([...termsOf(a), ...termsOf(b)]);
}

/** a · b. */
export function mulDims(a: Dim, b: Dim): Dim {
  const terms: DimTerm[] = [];
  for (const x of termsOf(a)) {
    for (const y of termsOf(b)) {
      terms.push({
        coefficient: x.coefficient * y.coefficient,
        symbols: [...x.symbols, ...y.symbols],
      });
    }
  }
  return fromTerms(terms);
}

/** The product of sizes (1 for none): the element count of a shape. */
export function productOfDims(dims: Dims): Dim {
  return dims.reduce<Dim>((n, d) => mulDims(n, d), 1);
}

/**
 * a / b when the quotient is a size for every value of the symbols (b a number or a single term
 * that divides every term of a), else undefined.
 */
export function divideDims(a: Dim, b: Dim): Dim | undefined {
  const [divisor, ...rest] = termsOf(b);
  if (!divisor || rest.length > 0) return undefined;
  const terms: DimTerm[] = [];
  for (const term of termsOf(a)) {
    const symbols = removeSymbols(term.symbols, divisor.symbols);
    if (!symbols || term.coefficient % divisor.coefficient !== 0) return undefined;
    terms.push({ coefficient: term.coefficient / divisor.coefficient, symbols });
  }
  return fromTerms(terms);
}

/**
 * ⌊a / by⌋ as a size: the exact quotient where {@link divideDims} finds one, else a new symbol
 * named `a/by` computed at run time. The op that divides must make sure at run time that `by`
 * divides `a`, for the symbol stands for the exact quotient in every size it enters.
 */
export function quotientDim(a: Dim, by: number): Dim {
  if (typeof a === "number") return Math.floor(a / by);
  const exact = divideDims(a, by);
  if (exact !== undefined) return exact;
  const text = a.terms.length === 1 ? String(a) : `(${a})`;
  return new SymDim([{
    coefficient: 1,
    symbols: [{ name: `${text}/${by}`, quotient: { of: a, by } }],
  }]);
}

function termsOf(d: Dim): readonly DimTerm[] {
  if (typeof d !== "number") return d.terms;
  return d === 0 ? [] : [{ coefficient: d, symbols: [] }];
}

/** Sums equal monomials, drops zero terms, sorts; a constant polynomial becomes a number. */
function fromTerms(terms: readonly DimTerm[]): Dim {
  const byKey = new Map<string, DimTerm>();
  for (const term of terms) {
    const symbols = [...term.symbols].sort((x, y) =>
      x.name < y.name ? -1 : x.name > y.name ? 1 : 0
    );
    const key = symbols.map((s) => s.name).join("*");
    const previous = byKey.get(key)?.coefficient ?? 0;
    byKey.set(key, { coefficient: previous + term.coefficient, symbols });
  }
  const kept = [...byKey.entries()]
    .filter(([, term]) => term.coefficient !== 0)
    .sort(([x, a], [y, b]) => b.symbols.length - a.symbols.length || (x < y ? -1 : x > y ? 1 : 0))
    .map(([, term]) => term);
  if (kept.every((term) => term.symbols.length === 0)) return kept[0]?.coefficient ?? 0;
  return new SymDim(kept);
}

/** `symbols` without one occurrence of each of `removed`, or undefined when one is missing. */
function removeSymbols(
  symbols: readonly DimSymbol[],
  removed: readonly DimSymbol[],
): DimSymbol[] | undefined {
  const left = [...symbols];
  for (const symbol of removed) {
    const at = left.findIndex((s) => s.name === symbol.name);
    if (at < 0) return undefined;
    left.splice(at, 1);
  }
  return left;
}

function formatTerm(term: DimTerm): string {
  const factors = term.symbols.map((s) => s.name);
  if (term.coefficient !== 1 || factors.length === 0) factors.unshift(String(term.coefficient));
  return factors.join("*");
}
