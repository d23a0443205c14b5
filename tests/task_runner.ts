/**
 * Runs a `deno task` as a subprocess exactly as deno.json declares it (same script, same
 * permissions), from the repository root, and captures its exit code and output.
 */

const REPO = new URL("../", import.meta.url).pathname;

/** What a task run printed and how it exited. */
export interface TaskRun {
  /** Exit code. */
  readonly code: number;
  /** Standard output. */
  readonly stdout: string;
  /** Standard error. */
  readonly stderr: string;
}

/** The command line deno.json declares for task `name`, split into words. */
function taskCommand(name: string): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${REPO}deno.json`));
  const command = config.tasks?.[name];
  if (typeof command !== "string") throw new Error(`deno.json declares no task ${name}`);
  const words = command.split(/\s+/);
  if (words[0] !== "deno") throw new Error(`task ${name} does not start with deno: ${command}`);
  return words.slice(1);
}

/** Runs task `name` with `args` appended, in the repository root, without colours. */
export function runDenoTask(name: string, args: readonly string[]): Promise<TaskRun> {
  return runDeno([...taskCommand(name), ...args]);
}

/** Runs `deno` with `args` in the repository root, without colours, and captures its output. */
export async function runDeno(args: readonly string[]): Promise<TaskRun> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [...args],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout),
    stderr: text.decode(output.stderr),
  };
}
