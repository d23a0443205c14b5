/**
 * The folders of lib/ import one way: each only from the folders before it in {@link LAYERS}
 * (and from itself), so that every folder can be read and tested without the ones after it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** lib/'s folders, in the order data flows: a folder may import only from those before it. */
const LAYERS = [
  "cli",
  "graph",
  "runtime",
  "models",
  "losses",
  "optim",
  "checkpoint",
  "data",
  "train",
  "eval",
  "analysis",
];

const LIB = fileURLToPath(new URL("../lib", import.meta.url));
const RELATIVE_IMPORT = /(?:from|import)\s*\(?\s*"\.\.\/([a-z_]+)\/[^"]+"/g;

Deno.test("lib/ folders import only from the folders before them", async () => {
  const found = new Set<string>();
  for await (const folder of Deno.readDir(LIB)) {
    if (folder.isDirectory) found.add(folder.name);
  }
  assert.deepEqual([...found].sort(), [...LAYERS].sort(), "lib/ has a folder not in LAYERS");
  const violations: string[] = [];
  for (const [rank, layer] of LAYERS.entries()) {
    for await (const entry of Deno.readDir(join(LIB, layer))) {
      if (!entry.name.endsWith(".ts")) continue;
      const source = await Deno.readTextFile(join(LIB, layer, entry.name));
      for (const [, target] of source.matchAll(RELATIVE_IMPORT)) {
        if (LAYERS.indexOf(target) >= rank) {
          violations.push(`lib/${layer}/${entry.name} imports from lib/${target}/`);
        }
      }
    }
  }
  assert.deepEqual(violations, []);
});
