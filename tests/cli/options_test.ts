import { assert } from "../assert.ts";
import {
  type OptionTable,
  type OptionValues,
  parseOptions,
  required,
} from "../../lib/cli/options.ts";

const OPTIONS = {
  count: { kind: "int", help: "A count.", default: 3, min: 1 },
  ratio: { kind: "float", help: "A ratio.", default: 0.5, min: 0, max: 1 },
  mode: { kind: "int", help: "A mode.", choices: [0, 1, 2], default: 0 },
  sizes: { kind: "ints", help: "Sizes.", min: 1 },
  rates: { kind: "floats", help: "Rates.", default: [0.1, 0.2] },
  names: { kind: "strings", help: "Names." },
  shape: { kind: "string", help: "A shape.", choices: ["block", "rand"], default: "block" },
  path: { kind: "string", help: "A path." },
  origin: { kind: "string", help: "Set or None.", default: null },
  shared: { kind: "bool", help: "Shared.", default: false, presets: { small: true } },
  verbose: { kind: "flag", help: "Talk more." },
} as const satisfies OptionTable;

const parse = (argv: string[]) => parseOptions(OPTIONS, argv).values;

/** Asserts that parsing `argv` throws one sentence (a single line) matching `pattern`. */
function assertRejects(argv: string[], pattern: RegExp, positionals?: string[]): void {
  assert.throws(() => parseOptions(OPTIONS, argv, { positionals }), (error: Error) => {
    assert.match(error.message, pattern);
    assert(!error.message.includes("\n"), `more than one line: ${error.message}`);
    return true;
  });
}

Deno.test("parseOptions: defaults fill what is not given; undefined and null stay apart", () => {
  const values: OptionValues<typeof OPTIONS> = parse([]);
  assert.deepEqual(values, {
    count: 3,
    ratio: 0.5,
    mode: 0,
    sizes: undefined,
    rates: [0.1, 0.2],
    names: undefined,
    shape: "block",
    path: undefined,
    origin: null,
    shared: false,
    verbose: false,
  });
});

Deno.test("parseOptions: every kind converts its words", () => {
  const values = parse([
    ...["--count", "7", "--ratio=0.25", "--mode", "2", "--sizes", "32", "16"],
    ...["--rates", "1e-3", "--names", "a", "b,c", "--shape", "rand", "--path", "x y"],
    ...["--origin", "o", "--shared", "ON", "--verbose"],
  ]);
  assert.deepEqual(values, {
    count: 7,
    ratio: 0.25,
    mode: 2,
    sizes: [32, 16],
    rates: [0.001],
    names: ["a", "b", "c"],
    shape: "rand",
    path: "x y",
    origin: "o",
    shared: true,
    verbose: true,
  });
});

Deno.test("parseOptions: a preset replaces the defaults it names, given options still win", () => {
  const small = () => "small";
  assert.equal(parseOptions(OPTIONS, [], { preset: small }).values.shared, true);
  assert.equal(parseOptions(OPTIONS, [], { preset: () => "other" }).values.shared, false);
  assert.equal(
    parseOptions(OPTIONS, ["--shared", "off"], { preset: small }).values.shared,
    false,
  );
  const seen: unknown[] = [];
  parseOptions(OPTIONS, ["--count", "5"], {
    preset: (given) => {
      seen.push(given);
      return "small";
    },
  });
  assert.deepEqual(seen, [{ count: 5 }]);
});

Deno.test("parseOptions: positional arguments, before, between and after the options", () => {
  const settings = { positionals: ["IN", "OUT"] };
  const cases: string[][] = [
    ["a", "b", "--count", "2"],
    ["--count", "2", "a", "b"],
    ["a", "--verbose", "b"],
    ["--shape", "rand", "a", "--", "b"],
  ];
  for (const argv of cases) {
    assert.deepEqual(parseOptions(OPTIONS, argv, settings).positionals, ["a", "b"], `${argv}`);
  }
  assertRejects(["a"], /^expected IN and OUT \(see --help\)$/, ["IN", "OUT"]);
  assertRejects(["a", "b", "c"], /^expected IN and OUT/, ["IN", "OUT"]);
  assertRejects(["--names", "a", "b"], /^expected IN and OUT/, ["IN", "OUT"]);
  assert.deepEqual(parseOptions(OPTIONS, ["--help"], settings).help, true);
});

Deno.test("parseOptions: bad input throws one sentence naming the option", () => {
  assertRejects(["--nope"], /^unknown argument --nope; see --help for the list$/);
  assertRejects(["--nope=3"], /^unknown argument --nope;/);
  assertRejects(["-q"], /^unknown argument -q;/);
  assertRejects(["word"], /^unexpected value 'word': values follow a --flag/);
  assertRejects(["--count"], /^--count takes one value, got 0$/);
  assertRejects(["--count", "1", "2"], /^--count takes one value, got 2$/);
  assertRejects(["--count", "x"], /^--count expects an integer, got 'x'$/);
  assertRejects(["--count", "2.5"], /^--count expects an integer, got '2.5'$/);
  assertRejects(["--count", "0"], /^--count must be a positive integer, got 0$/);
  assertRejects(["--ratio", "1.5"], /^--ratio must be a number in \[0, 1\], got 1.5$/);
  assertRejects(["--ratio", ""], /^--ratio expects a number, got ''$/);
  assertRejects(["--mode", "3"], /^--mode must be 0, 1 or 2, got 3$/);
  assertRejects(["--sizes", "8", "0"], /^--sizes must be a positive integer, got 0$/);
  assertRejects(["--sizes"], /^--sizes expects one or more numbers$/);
  assertRejects(["--names", ","], /^--names expects one or more values$/);
  assertRejects(["--shape", "circle"], /^--shape must be block or rand, got circle$/);
  assertRejects(["--shared", "maybe"], /^--shared expects on\/true\/1 or off\/false\/0/);
  assertRejects(["--verbose", "yes"], /^--verbose takes no value, got 'yes'$/);
  assertRejects(["--verbose=1"], /^--verbose takes no value, got '1'$/);
});

Deno.test("parseOptions: bounds are named in the message", () => {
  const table = {
    low: { kind: "float", help: "Low.", min: 0.5 },
    high: { kind: "int", help: "High.", max: 3 },
    natural: { kind: "int", help: "Natural.", min: 0 },
  } as const satisfies OptionTable;
  const message = (argv: string[]) => {
    try {
      parseOptions(table, argv);
    } catch (error) {
      return (error as Error).message;
    }
  };
  assert.equal(message(["--low", "0.25"]), "--low must be a number ≥ 0.5, got 0.25");
  assert.equal(message(["--high", "4"]), "--high must be an integer ≤ 3, got 4");
  assert.equal(message(["--natural", "-2"]), "--natural must be a non-negative integer, got -2");
  assert.equal(message(["--low", "0.5", "--high", "3", "--natural", "0"]), undefined);
});

Deno.test("required: returns a given value and names a missing option", () => {
  assert.equal(required(parse(["--path", "p"]).path, "path"), "p");
  assert.throws(() => required(parse([]).path, "path"), Error, "--path is required (see --help)");
});
