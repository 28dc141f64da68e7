// The Llama-family training pass (core/models/llama/train.ts) against the fixture's `train`
// golden (tests/fixtures/llama-family/README.md §8, §10) for each tiny model: the base and LoRA
// losses, every LoRA gradient, and the full gradients of layer 0, the final norm and the
// embedding / lm_head rows (tied heads: both uses summed in one matrix).

import assert from "node:assert/strict";
import { backward, unref } from "../core/autograd/tape.ts";
import { beginRecording, submit } from "../core/gpu/recording.ts";
import { readTensor } from "../core/tensor/tensor.ts";
import { trainingTape } from "../core/models/chatglm/train_forward.ts";
import { loadLlamaModel } from "../core/models/llama/load.ts";
import type { LlamaModel } from "../core/models/llama/model.ts";
import {
  buildLlamaTrainBatch,
  llamaTrainForward,
  prepareLlamaTraining,
  uploadLlamaTrainBatch,
} from "../core/models/llama/train.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";
import { loadModel } from "../core/models/load.ts";
import { buildTrainBatchFor, prepareTrainingFor } from "../core/models/training.ts";
import { runMicroStep } from "../train/loop/step.ts";

const MODELS = ["qwen2-tiny", "qwen3-tiny", "llama3-tiny"];
// f32 weights: the goldens are f32 numbers (a plain load takes f16 where the adapter has it).
const quiet = { log: () => {}, progressBar: false, dtype: "f32" as const };

interface TrainValues {
  input_ids: number[][];
  labels: number[][];
  n_supervised: number;
  base_loss: number;
  lora_loss: number;
  embedding_rows: number[];
}

interface Named {
  name: string;
  offset: number;
  shape: number[];
}

/** Runs forward + backward once; returns the loss and each trainable tensor's gradient. */
async function gradients(model: LlamaModel, mode: "lora" | "full", v: TrainValues) {
  const tm = prepareLlamaTraining(model, mode);
  const batch = buildLlamaTrainBatch(v.input_ids, v.labels, model.config);
  const input = uploadLlamaTrainBatch(model, batch);
  try {
    const rec = beginRecording(model.gpu);
    const tape = trainingTape(rec, tm, { grads: true });
    tm.zeroGrads(rec);
    const loss = llamaTrainForward(tape, tm, input);
    backward(tape, loss, loss.value);
    await submit(rec);
    const [mean, count] = await readTensor(loss.value) as Float32Array;
    unref(tape, loss);
    const grads = new Map<string, Float32Array>();
    for (const p of tm.params) grads.set(p.name, await readTensor(p.grad) as Float32Array);
    return { mean, count, grads };
  } finally {
    input.free();
    tm.dispose();
  }
}

function check(name: string, actual: ArrayLike<number>, golden: ArrayLike<number>) {
  const r = compareRule(actual, golden, 1e-4, 1e-6);
  assert.ok(r.ok, `${name}: max |diff| ${r.maxDiff} > ${r.limit} (max |golden| ${r.maxGolden})`);
}

function rowsOf(m: Float32Array, rows: number[], h: number): Float32Array {
  const out = new Float32Array(rows.length * h);
  rows.forEach((r, i) => out.set(m.subarray(r * h, (r + 1) * h), i * h));
  return out;
}

for (const name of MODELS) {
  const dir = new URL(`./fixtures/llama-family/${name}`, import.meta.url).pathname;
  const goldens = loadGoldens(dir);
  const tc = goldens.cases.get("train")!;
  const v = tc.values as unknown as TrainValues;
  const tensorsOf = (key: string) =>
    (tc.files.find((f) => f.key === key) as unknown as { tensors: Named[] }).tensors;

  Deno.test(`${name}: train golden, LoRA loss and gradients`, async () => {
    const model = await loadLlamaModel(dir, { ...quiet, adapter: `${dir}/adapter` });
    try {
      const { mean, count, grads } = await gradients(model, "lora", v);
      assert.equal(count, v.n_supervised);
      check("lora_loss", [mean], [v.lora_loss]);
      const data = goldens.read("train", "lora_grads").data as Float32Array;
      const names = tensorsOf("lora_grads");
      assert.equal(names.length, grads.size);
      for (const t of names) {
        const n = t.shape.reduce((a, b) => a * b, 1);
        const mine = grads.get(t.name);
        assert.ok(mine, `no gradient for ${t.name}`);
        check(t.name, mine, data.subarray(t.offset, t.offset + n));
      }
    } finally {
      model.dispose();
    }
  });

  Deno.test(`${name}: train golden through the trainer's micro-step (LoRA)`, async () => {
    const model = await loadModel(dir, { ...quiet, adapter: `${dir}/adapter` });
    const tm = prepareTrainingFor(model, "lora");
    try {
      const batch = buildTrainBatchFor(model, v.input_ids, v.labels);
      const r = await runMicroStep(tm, batch, { zeroGrads: true, dropout: 0 });
      assert.equal(r.tokens, v.n_supervised);
      check("lora_loss", [r.loss], [v.lora_loss]);
      const data = goldens.read("train", "lora_grads").data as Float32Array;
      const byName = new Map(tm.params.map((p) => [p.name, p.grad]));
      for (const t of tensorsOf("lora_grads")) {
        const n = t.shape.reduce((a, b) => a * b, 1);
        const grad = byName.get(t.name);
        assert.ok(grad, `no gradient for ${t.name}`);
        check(
          t.name,
          await readTensor(grad) as Float32Array,
          data.subarray(t.offset, t.offset + n),
        );
      }
    } finally {
      tm.dispose();
      model.dispose();
    }
  });

  Deno.test(`${name}: train golden, full gradients`, async () => {
    const model = await loadLlamaModel(dir, quiet);
    try {
      const { mean, grads } = await gradients(model, "full", v);
      check("base_loss", [mean], [v.base_loss]);
      const data = goldens.read("train", "full_grads").data as Float32Array;
      const h = model.config.hiddenSize;
      for (const t of tensorsOf("full_grads")) {
        const n = t.shape.reduce((a, b) => a * b, 1);
        const golden = data.subarray(t.offset, t.offset + n);
        const rowsMatch = /^(.*)\[rows\]$/.exec(t.name);
        let mine: Float32Array | undefined;
        if (rowsMatch) {
          // A tied head is the embedding matrix: its gradient holds both uses.
          const full = grads.get(rowsMatch[1]) ?? grads.get("model.embed_tokens.weight");
          mine = full && rowsOf(full, v.embedding_rows, h);
        } else mine = grads.get(t.name);
        assert.ok(mine, `no gradient for ${t.name}`);
        check(t.name, mine, golden);
      }
    } finally {
      model.dispose();
    }
  });
}
