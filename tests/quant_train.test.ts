// LoRA training on an int4 base (the pre-quantized fixture): the base stays quantized and frozen,
// gradients flow through it (dx kernel, tests/quant_kernels.test.ts), the adapter is saved.
import assert from "node:assert/strict";
import { buildTinyTrainData, tinyTrainConfig } from "./helpers/tiny_training.ts";
import { train } from "../train/train.ts";

const INT4 = new URL("./fixtures/chatglm6b-tiny-quantized/int4", import.meta.url).pathname;

Deno.test("LoRA trains on an int4 base and saves its adapter", async () => {
  const data = await buildTinyTrainData("quant-lora", 30);
  const out = await Deno.makeTempDir({ prefix: "medglm-quant-lora-" });
  const log = console.log;
  console.log = () => {};
  try {
    const r = await train(
      tinyTrainConfig(data, out, { model: INT4, maxSteps: 3, saveSteps: 3 }),
    );
    assert.equal(r.steps, 3);
    assert.ok(r.losses.every((l) => Number.isFinite(l.loss)), JSON.stringify(r.losses));
    const ckpt = `${out}/checkpoint-3`;
    const files = [...Deno.readDirSync(ckpt)].map((e) => e.name);
    assert.ok(files.includes("adapter_config.json"), files.join(", "));
  } finally {
    console.log = log;
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data, { recursive: true });
  }
});
