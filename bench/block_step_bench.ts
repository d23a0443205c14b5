import { prepareBlockStep } from "./block_step.ts";

const block = await prepareBlockStep();
await block.step();

Deno.bench(
  "ViT-Tiny block training step (batch 64, 65 tokens, forward + backward + AdamW)",
  async () => {
    await block.step();
  },
);
