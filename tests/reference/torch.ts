/** Runs the PyTorch reference scripts of the tests, when Debian's python3-torch is installed. */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The Python that sees Debian's packages (python3-torch). */
export const PYTHON = "/usr/bin/python3";

/** True when `import torch` works; otherwise prints why the PyTorch comparison is skipped. */
export function torchAvailable(): boolean {
  try {
    const { success } = new Deno.Command(PYTHON, {
      args: ["-c", "import torch"],
      stderr: "null",
      stdout: "null",
    })
      .outputSync();
    if (success) return true;
  } catch {
    // python3 itself is missing: fall through to the message.
  }
  console.log(
    "PyTorch comparison skipped: /usr/bin/python3 cannot import torch (apt-get install python3-torch)",
  );
  return false;
}

/** Runs `tests/reference/<script>` with arguments; throws with its stderr if it fails. */
export async function runTorchScript(script: string, args: string[]): Promise<void> {
  const here = dirname(fileURLToPath(import.meta.url));
  const { success, stderr } = await new Deno.Command(PYTHON, {
    args: [join(here, script), ...args],
    env: { OMP_NUM_THREADS: "1" },
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`${script} failed:\n${new TextDecoder().decode(stderr)}`);
}
