// The training golden of fixture README §12 (`train`): the §8 batch layout, the LoRA loss and
// gradients, every base parameter's gradient under full fine-tuning, and three AdamW steps, all
// through the tape autograd and the backward kernels (with and without per-layer recompute).

import assert from "node:assert/strict";
import { readTensor } from "../core/tensor/tensor.ts";
import { loadModel, type LoadModelOptions } from "../core/models/chatglm/load.ts";
import { buildTrainBatch } from "../core/models/chatglm/train_batch.ts";
import { prepareTraining } from "../core/models/chatglm/train_forward.ts";
import { createOptimizer } from "../train/optim/optimizer.ts";
import { runMicroStep, trainableTensors } from "../train/loop/step.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const goldens = loadGoldens(DIR);
const train = goldens.cases.get("train")!;
const values = train.values as {
  input_ids: number[][];
  labels: number[][];
  base_loss: number;
  lora_loss: number;
  lora_grad_global_l2_norm: number;
  loss_before_step: number[];
  embedding_rows: number[];
  adamw: { lr: number; betas: number[]; eps: number; weight_decay: number };
};
const quiet = { log: () => {}, progressBar: false, dtype: "f32" } satisfies LoadModelOptions;

function tensorsOf(key: string): { name: string; data: Float32Array }[] {
  const file = train.files.find((f) => f.key === key)!;
  const all = goldens.read("train", key).data as Float32Array;
  return file.tensors!.map((t) => ({
    name: t.name,
    data: all.subarray(t.offset, t.offset + t.shape.reduce((a, b) => a * b, 1)),
  }));
}

function assertClose(name: string, actual: ArrayLike<number>, golden: ArrayLike<number>) {
  assert.equal(actual.length, golden.length, `${name}: length`);
  const r = compareRule(actual, golden, goldens.rtol, goldens.atol);
  assert.ok(r.ok, `${name}: max diff ${r.maxDiff} > ${r.limit} (max golden ${r.maxGolden})`);
}

function assertLoss(name: string, actual: number, golden: number) {
  assert.ok(
    Math.abs(actual - golden) <= 1e-4 * Math.abs(golden) + 1e-6,
    `${name}: ${actual} vs golden ${golden}`,
  );
}

Deno.test("train golden: §8 batch layout matches the golden masks and positions", async () => {
  const model = await loadModel(DIR, quiet);
  try {
    const batch = buildTrainBatch(values.input_ids, values.labels, model.config);
    const pos = goldens.read("train", "position_ids");
    assert.deepEqual([...batch.pos], [...pos.data]);
    const mask = goldens.read("train", "attention_mask").data;
    const s = batch.seq;
    for (let r = 0; r < batch.batch; r++) {
      const ctx = batch.maskInfo[r * 2 + 1];
      for (let i = 0; i < s; i++) {
        for (let j = 0; j < s; j++) {
          const masked = !(j < ctx || j <= i) ? 1 : 0;
          assert.equal(masked, mask[(r * s + i) * s + j], `row ${r} mask[${i}][${j}]`);
        }
      }
    }
  } finally {
    model.dispose();
  }
});

for (const recompute of [false, true]) {
  Deno.test(`train golden: LoRA loss, gradients and 3 AdamW steps (recompute ${recompute})`, async () => {
    const model = await loadModel(DIR, {
      ...quiet,
      adapter: `${DIR}/adapter-qkv`,
      trainable: true,
    });
    const tm = prepareTraining(model, "lora");
    try {
      const batch = buildTrainBatch(values.input_ids, values.labels, model.config);
      const first = await runMicroStep(tm, batch, { zeroGrads: true, dropout: 0, recompute });
      assertLoss("lora_loss", first.loss, values.lora_loss);
      assert.equal(first.tokens, batch.tokens);
      const golden = tensorsOf("lora_grads");
      let sumsq = 0;
      for (const g of golden) {
        const p = tm.params.find((p) => p.name === g.name);
        assert.ok(p, `trainable ${g.name}`);
        const got = await readTensor(p.grad) as Float32Array;
        assertClose(`grad ${g.name}`, got, g.data);
        for (const v of got) sumsq += v * v;
      }
      assert.equal(tm.params.length, golden.length);
      assert.ok(
        Math.abs(Math.sqrt(sumsq) - values.lora_grad_global_l2_norm) <
          1e-4 * values.lora_grad_global_l2_norm,
      );

      const h = values.adamw;
      const opt = createOptimizer(model.gpu, trainableTensors(tm), {
        beta1: h.betas[0],
        beta2: h.betas[1],
        eps: h.eps,
        weightDecay: h.weight_decay,
      });
      try {
        for (let step = 1; step <= 3; step++) {
          const r = await runMicroStep(tm, batch, {
            zeroGrads: true,
            dropout: 0,
            recompute,
            optimizer: opt,
            lr: h.lr,
            maxGradNorm: 0,
          });
          assertLoss(`loss before step ${step}`, r.loss, values.loss_before_step[step - 1]);
          assert.equal(r.report?.skipped, false);
          for (const g of tensorsOf(`lora_after_step${step}`)) {
            const p = tm.params.find((p) => p.name === g.name)!;
            assertClose(`step ${step} ${g.name}`, await readTensor(p.param), g.data);
          }
        }
      } finally {
        opt.destroy();
      }
    } finally {
      tm.dispose();
      model.dispose();
    }
  });
}

Deno.test("train golden: full fine-tuning gradients of every base parameter", async () => {
  const model = await loadModel(DIR, { ...quiet, trainable: true });
  const tm = prepareTraining(model, "full");
  try {
    const batch = buildTrainBatch(values.input_ids, values.labels, model.config);
    const r = await runMicroStep(tm, batch, { zeroGrads: true, recompute: true });
    assertLoss("base_loss", r.loss, values.base_loss);
    const golden = tensorsOf("full_grads");
    const rows = values.embedding_rows;
    for (const g of golden) {
      if (g.name.startsWith("transformer.word_embeddings.weight")) {
        const p = tm.params.find((p) => p.name === "transformer.word_embeddings.weight")!;
        const all = await readTensor(p.grad) as Float32Array;
        const h = p.shape[1];
        const picked = new Float32Array(rows.length * h);
        rows.forEach((row, i) => picked.set(all.subarray(row * h, (row + 1) * h), i * h));
        assertClose("grad word_embeddings[rows]", picked, g.data);
        const inBatch = new Set(rows);
        for (let row = 0; row < p.shape[0]; row++) {
          if (inBatch.has(row)) continue;
          for (let j = 0; j < h; j++) {
            assert.equal(all[row * h + j], 0, `embedding grad row ${row} must be exactly 0`);
          }
        }
        continue;
      }
      const p = tm.params.find((p) => p.name === g.name);
      assert.ok(p, `trainable ${g.name}`);
      assertClose(`grad ${g.name}`, await readTensor(p.grad), g.data);
    }
  } finally {
    tm.dispose();
    model.dispose();
  }
});
