// LoRA training on an int4 base (the pre-quantized fixture): the base stays quantized and frozen,
// gradients flow through it (dx kernel, tests/quant_kernels.test.ts), the adapter is saved.
import assert from "node:assert/strict";
import { buildTinyTrainData, tinyTrainConfig } from "./helpers/tiny_training.ts";
import { train } from "../train/train.ts";
import { trainMemoryPlan } from "../train/memory_plan.ts";
import { parseChatGLMConfig } from "../core/models/chatglm/config.ts";

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

Deno.test("train memory plan: LoRA on ChatGLM-6B int4 counts the packed base (within 6 GB)", () => {
  const config = parseChatGLMConfig({
    hidden_size: 4096,
    num_attention_heads: 32,
    num_layers: 28,
    inner_hidden_size: 16384,
    vocab_size: 130528,
    position_encoding_2d: true,
    bos_token_id: 130004,
    eos_token_id: 130005,
    mask_token_id: 130000,
    gmask_token_id: 130001,
    pad_token_id: 3,
    quantization_bit: 4,
  });
  const input = {
    model: config,
    weightDtype: "f16" as const,
    full: false,
    loraR: 8,
    targetModules: ["query_key_value"],
    batchSize: 1,
    seqLen: 512,
  };
  const plan = trainMemoryPlan(input);
  const f16 = trainMemoryPlan({ ...input, model: { ...config, quantization: null } });
  assert.ok(plan.weights.bytes < f16.weights.bytes / 3, `${plan.weights.bytes}`);
  assert.match(plan.weights.detail, /int4, per-row scales/);
  const gib = plan.totalWithRecompute / 2 ** 30;
  assert.ok(gib < 6, `total with recompute ${gib} GiB`);
  assert.throws(() => trainMemoryPlan({ ...input, full: true }), /full fine-tuning needs float/);
});
