/**
 * Training-step benchmark: tokens/s of a LoRA training step (r 8 on query_key_value, frozen
 * base) and of a full fine-tuning step, split into forward, backward and optimizer time, and the
 * ratio of a whole step to the forward pass of the same batch (DESIGN.md target: at most 3×).
 *
 * Models: the tiny fixture (a batch of 4 × 64) and the "small" random ChatGLM (hidden 1024,
 * 8 layers, vocab 32000, f16 base; seq 256, batch 4, LoRA only: full fine-tuning of it needs
 * f32 weights and gradients for 166M parameters). Forward = a forward-only pass (no tape); forward+backward
 * = the recorded training pass; optimizer = clipping + NaN guard + AdamW alone; each submitted
 * and awaited on its own, after one warm-up round (pipeline compiles).
 *
 * QLoRA (`--qlora`, also part of the default run): the small config written as an f16 checkpoint
 * and loaded twice in the same run, as f16 and quantized to int4 at load (the base frozen and
 * packed, dx through the packed weights), LoRA r 8 on query_key_value, batch 1 × 128; the ratio
 * int4 / f16 of the step time is the number to read.
 */

import {
  attachAdapter,
  beginRecording,
  buildTrainBatch,
  type ChatGLMConfig,
  type ChatGLMModel,
  getGpu,
  initLoraAdapter,
  linearModules,
  loadChatGLM as loadModel,
  parseLoraConfig,
  prepareTraining,
  randomChatGLM,
  submit,
  type TrainBatch,
  type TrainingModel,
  writeSyntheticCheckpoint,
} from "../core/mod.ts";
import { smallConfig } from "./small_model.ts";
import { createOptimizer, runMicroStep, trainableTensors } from "../train/mod.ts";

const TINY_DIR = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;

/** A batch of `b` rows of `s` ids: a prompt of s/4 ids ending in [gMASK] <sop>, then targets. */
export function syntheticBatch(config: ChatGLMConfig, b: number, s: number): TrainBatch {
  const ids: number[][] = [], labels: number[][] = [];
  const ctx = Math.max(2, Math.floor(s / 4));
  for (let r = 0; r < b; r++) {
    const row = Array.from({ length: s }, (_, i) => 5 + ((i * 131 + r * 17) % 1500));
    row[ctx - 2] = config.gmaskTokenId;
    row[ctx - 1] = config.bosTokenId;
    ids.push(row);
    labels.push(row.map((v, i) => (i < ctx - 1 ? -100 : v)));
  }
  return buildTrainBatch(ids, labels, config);
}

export function withAdapter(model: ChatGLMModel): void {
  const cfg = parseLoraConfig({
    peft_type: "LORA",
    r: 8,
    lora_alpha: 32,
    lora_dropout: 0.1,
    target_modules: ["query_key_value"],
    bias: "none",
    fan_in_fan_out: false,
  });
  let x = 7;
  const rand = () => ((x = (x * 1103515245 + 12345) >>> 0) / 4294967296);
  const adapter = initLoraAdapter(cfg, { linearModules: linearModules(model.config) }, rand);
  // peft starts B at 0; random B makes the backward through the branch non-trivial.
  for (const m of adapter.modules.values()) {
    for (let i = 0; i < m.b.length; i++) m.b[i] = rand() - 0.5;
  }
  attachAdapter(model, adapter);
}

interface Row {
  name: string;
  tokens: number;
  forwardMs: number;
  backwardMs: number;
  optimizerMs: number;
}

async function timeIt(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

async function measure(name: string, tm: TrainingModel, batch: TrainBatch, rounds: number) {
  const gpu = tm.model.gpu;
  const opt = createOptimizer(gpu, trainableTensors(tm), {});
  try {
    let fwd = Infinity, fb = Infinity, op = Infinity;
    for (let i = 0; i <= rounds; i++) {
      const f = await timeIt(() => runMicroStep(tm, batch, { evalOnly: true }));
      const b = await timeIt(() => runMicroStep(tm, batch, { zeroGrads: true, dropout: 0 }));
      const o = await timeIt(async () => {
        const rec = beginRecording(gpu);
        opt.recordStep(rec, { lr: 1e-4, maxGradNorm: 1 });
        await submit(rec);
        await opt.finishStep();
      });
      if (i === 0) continue; // warm-up: pipeline compiles
      fwd = Math.min(fwd, f);
      fb = Math.min(fb, b);
      op = Math.min(op, o);
    }
    return {
      name,
      tokens: batch.batch * batch.seq,
      forwardMs: fwd,
      backwardMs: Math.max(0, fb - fwd),
      optimizerMs: op,
    } satisfies Row;
  } finally {
    opt.destroy();
  }
}

function table(rows: Row[]): string {
  const head =
    "| case | tokens | forward ms | backward ms | optimizer ms | step ms | step / forward | train tok/s |";
  const lines = rows.map((r) => {
    const step = r.forwardMs + r.backwardMs + r.optimizerMs;
    return `| ${r.name} | ${r.tokens} | ${r.forwardMs.toFixed(1)} | ${r.backwardMs.toFixed(1)} | ${
      r.optimizerMs.toFixed(1)
    } | ${step.toFixed(1)} | ${(step / r.forwardMs).toFixed(2)}× | ${
      (r.tokens / (step / 1000)).toFixed(0)
    } |`;
  });
  return [head, "| --- | --- | --- | --- | --- | --- | --- | --- |", ...lines].join("\n");
}

/** LoRA steps on the small config: f16 base vs the same weights quantized to int4 at load. */
async function qloraRows(): Promise<Row[]> {
  const c = smallConfig();
  const dir = await Deno.makeTempDir({ prefix: "medglm-bench-qlora-" });
  const rows: Row[] = [];
  try {
    await writeSyntheticCheckpoint(dir, {
      sizes: {
        hiddenSize: c.hiddenSize,
        numHeads: c.numHeads,
        innerHiddenSize: c.innerHiddenSize,
        vocabSize: c.vocabSize,
        numLayers: c.numLayers,
        maxSequenceLength: c.maxSequenceLength,
      },
      format: "safetensors",
      omitLmHead: true,
      shards: 1,
    });
    for (const quantize of [undefined, 4 as const]) {
      const model = await loadModel(dir, {
        log: () => {},
        progressBar: false,
        dtype: "f16",
        quantize,
        trainable: true,
      });
      try {
        withAdapter(model);
        const lora = prepareTraining(model, "lora");
        const name = `small LoRA qkv, ${quantize ? "int4" : "f16"} base (b1 × s128)`;
        rows.push(await measure(name, lora, syntheticBatch(model.config, 1, 128), 2));
        lora.dispose();
      } finally {
        model.dispose();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return rows;
}

function qloraRatio(rows: Row[]): string {
  const step = (r: Row) => r.forwardMs + r.backwardMs + r.optimizerMs;
  const f16 = rows.find((r) => r.name.includes("f16 base"));
  const int4 = rows.find((r) => r.name.includes("int4 base"));
  return f16 && int4
    ? `\n\nQLoRA: int4-base step / f16-base step = ${(step(int4) / step(f16)).toFixed(2)}× ` +
      `(forward ${(int4.forwardMs / f16.forwardMs).toFixed(2)}×, backward ${
        (int4.backwardMs / f16.backwardMs).toFixed(2)
      }×), same run.`
    : "";
}

export async function bench(
  options: { small?: boolean; qlora?: boolean; only?: "qlora" } = {},
): Promise<void> {
  const gpu = await getGpu();
  const rows: Row[] = [];
  const quiet = { log: () => {}, progressBar: false };
  if (options.only === "qlora") {
    const q = await qloraRows();
    console.log(
      `\n## QLoRA training step (bench/train_step.ts --qlora), ${
        gpu.adapterInfo.description || "GPU"
      }\n\n` + table(q) + qloraRatio(q),
    );
    return;
  }
  {
    const model = await loadModel(TINY_DIR, { ...quiet, dtype: "f32", trainable: true });
    const batch = syntheticBatch(model.config, 4, 64);
    const full = prepareTraining(model, "full");
    rows.push(await measure("tiny full (b4 × s64)", full, batch, 3));
    full.dispose();
    withAdapter(model);
    const lora = prepareTraining(model, "lora");
    rows.push(await measure("tiny LoRA qkv (b4 × s64)", lora, batch, 3));
    lora.dispose();
    model.dispose();
  }
  if (options.small ?? true) {
    const config = smallConfig();
    const model = randomChatGLM(gpu, config, { dtype: "f16" });
    withAdapter(model);
    const lora = prepareTraining(model, "lora");
    rows.push(await measure("small LoRA qkv (b4 × s256)", lora, syntheticBatch(config, 4, 256), 1));
    lora.dispose();
    model.dispose();
  }
  const q = (options.qlora ?? true) ? await qloraRows() : [];
  rows.push(...q);
  console.log(
    "\n## Training step (bench/train_step.ts) — forward / backward / optimizer, " +
      `${gpu.adapterInfo.description || "GPU"}\n\n` + table(rows) +
      "\n\nstep / forward: DESIGN.md target ≤ 3×." + qloraRatio(q),
  );
}

if (import.meta.main) {
  await bench({
    small: !Deno.args.includes("--tiny"),
    qlora: !Deno.args.includes("--tiny"),
    only: Deno.args.includes("--qlora") ? "qlora" : undefined,
  });
}
