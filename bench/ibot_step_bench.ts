import { prepareIbotStep } from "./ibot_step.ts";

const ibot = await prepareIbotStep();
await ibot.step();

Deno.bench(
  `iBOT training step, vit_tiny/4, 2×32 px + 4×16 px crops, batch 64, ${ibot.slots} patch slots ` +
    "(64 images)",
  async () => {
    await ibot.step();
  },
);
