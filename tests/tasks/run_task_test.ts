import { parseArgs } from "node:util";
import { assert } from "../assert.ts";
import { listOptions } from "../../tasks/run_task.ts";

function lists(args: string[]): Record<string, string[]> {
  const { tokens } = parseArgs({
    args,
    options: { lr: { type: "string", multiple: true }, epochs: { type: "string" } },
    allowPositionals: true,
    tokens: true,
  });
  return listOptions(tokens, ["lr"]);
}

Deno.test("listOptions takes the words after a list flag, argparse nargs style", () => {
  assert.deepEqual(lists(["--lr", "0.01", "0.1", "--epochs", "3"]), { lr: ["0.01", "0.1"] });
  assert.deepEqual(lists(["--lr=0.5", "--epochs", "3", "--lr", "1", "2"]), {
    lr: ["0.5", "1", "2"],
  });
  assert.deepEqual(lists(["--epochs", "3"]), {});
  assert.throws(() => lists(["--epochs", "3", "4"]), Error, "unexpected argument '4' (see --help)");
  assert.throws(() => lists(["stray", "--lr", "1"]), Error, "unexpected argument 'stray'");
});
