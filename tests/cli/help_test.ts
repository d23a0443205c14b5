import { assert } from "../assert.ts";
import { commandHelp } from "../../lib/cli/help.ts";
import type { OptionTable } from "../../lib/cli/options.ts";

const OPTIONS = {
  epochs: { kind: "int", help: "Training epochs.", default: 100, presets: { small: 5 } },
  scale: { kind: "floats", metavar: "min max", help: "Scale range.", default: [0.4, 1] },
  output: { kind: "string", metavar: "dir", help: "Where the files go." },
  origin: { kind: "string", help: "Where it came from.", default: null },
  shape: { kind: "string", help: "Mask shape.", choices: ["block", "rand"], default: "block" },
  rank: { kind: "int", help: "Set by a launcher.", default: 0, ignored: true },
  with_head: { kind: "flag", help: "Keep the head." },
  a_rather_long_option_name: {
    kind: "string",
    help: "A description long enough to be wrapped onto a second line at one hundred columns, " +
      "indented under the first.",
    default: "x",
  },
} as const satisfies OptionTable;

Deno.test("commandHelp: usage, description, positionals, then one entry per option", () => {
  const help = commandHelp({
    usage: "deno task demo IN [options]",
    about: "Does a demo, described at such length that the paragraph has to wrap at one hundred " +
      "columns, the width of all help text.\n\nA second paragraph.",
    positionals: { IN: "The input." },
    options: OPTIONS,
    epilogue: "That is all.",
  });
  const pad = " ".repeat(32);
  assert.equal(
    help,
    [
      "Usage: deno task demo IN [options]",
      "",
      "Does a demo, described at such length that the paragraph has to wrap at one hundred columns, the",
      "width of all help text.",
      "",
      "A second paragraph.",
      "",
      `  IN${" ".repeat(28)}The input.`,
      "  --epochs <int>                Training epochs. (default 100, small 5)",
      "  --scale <min max>             Scale range. (default 0.4 1)",
      "  --output <dir>                Where the files go.",
      "  --origin <string>             Where it came from.",
      "  --shape <block|rand>          Mask shape. (default block)",
      "  --rank <int>                  Set by a launcher. Accepted for compatibility; no effect. " +
      "(default",
      `${pad}0)`,
      "  --with_head                   Keep the head.",
      "  --a_rather_long_option_name <string>",
      `${pad}A description long enough to be wrapped onto a second line at one`,
      `${pad}hundred columns, indented under the first. (default x)`,
      "",
      "That is all.",
    ].join("\n"),
  );
  for (const line of help.split("\n")) assert(line.length <= 100, `too long: ${line}`);
});
