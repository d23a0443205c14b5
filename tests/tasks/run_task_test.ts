import { assert } from "../assert.ts";
import { runDeno, type TaskRun } from "../task_runner.ts";

const RUN_TASK = new URL("../../tasks/run_task.ts", import.meta.url).href;

/** A small task built on runTask: it prints its options and positionals as JSON. */
const TASK = `
  import { runTask } from "${RUN_TASK}";
  await runTask({
    usage: "demo IN [options]",
    about: "A demo task.",
    positionals: { IN: "The input." },
    options: {
      lr: { kind: "floats", help: "Learning rates.", default: [0.1] },
      code: { kind: "int", help: "Exit code.", default: 0 },
    },
  }, (values, positionals) => {
    console.log(JSON.stringify({ values, positionals }));
    if (values.code === 9) throw new Error("nine is refused");
    return values.code;
  });
`;

function runDemo(args: string[]): Promise<TaskRun> {
  return runDeno(["eval", TASK, ...args]);
}

Deno.test("runTask: parses the options, runs the task and exits with its code", async () => {
  const ok = await runDemo(["in.txt", "--lr", "0.01", "0.1", "--code", "3"]);
  assert.equal(ok.code, 3, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), {
    values: { lr: [0.01, 0.1], code: 3 },
    positionals: ["in.txt"],
  });
});

Deno.test("runTask: --help prints the help from the table and exits 0", async () => {
  const help = await runDemo(["--help"]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: demo IN \[options\]\n\nA demo task\.\n/);
  assert.match(help.stdout, /^ {2}--lr <floats> +Learning rates\. \(default 0\.1\)$/m);
});

Deno.test("runTask: bad input and a failing task print one error line and exit 1", async () => {
  for (
    const [args, stderr] of [
      [["in.txt", "--lr", "x"], "error: --lr expects a number, got 'x'\n"],
      [["--code", "1"], "error: expected IN (see --help)\n"],
      [["in.txt", "--bogus"], "error: unknown argument --bogus; see --help for the list\n"],
      [["in.txt", "--code", "9"], "error: nine is refused\n"],
    ] as const
  ) {
    const run = await runDemo([...args]);
    assert.equal(run.code, 1, `${args}`);
    assert.equal(run.stderr, stderr);
  }
});
