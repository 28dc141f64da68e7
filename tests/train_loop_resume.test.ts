// The training loop `train(config)` on the tiny fixture model and a data set built from the
// dataset fixtures: the loss falls, a run stopped and resumed gives the same losses and the same
// adapter as an uninterrupted one, checkpoints rotate, and full fine-tuning runs too.

import { buildTinyTrainData, tinyTrainConfig } from "./helpers/tiny_training.ts";
import assert from "node:assert/strict";
import type { TrainConfig } from "../train/config.ts";
import { train } from "../train/train.ts";
import { listCheckpoints } from "../train/checkpoint.ts";

const quiet = { log: () => {}, progressStream: { writeSync: (b: Uint8Array) => b.length } };

const dataDir = await buildTinyTrainData("train-loop", 12);

function config(out: string, extra: Partial<TrainConfig> = {}): TrainConfig {
  return tinyTrainConfig(dataDir, out, {
    lr: 5e-3,
    warmupSteps: 1,
    gradAccumulation: 2,
    maxSteps: 6,
    evalSteps: 3,
    saveSteps: 3,
    keepCheckpoints: 1,
    loraDropout: 0.1,
    ...extra,
  });
}

Deno.test("train: LoRA loss falls on a small set", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-train-" });
  try {
    const r = await train(config(out, { maxSteps: 12, lr: 2e-2, saveSteps: 100 }), quiet);
    assert.equal(r.steps, 12);
    const first = (r.losses[0].loss + r.losses[1].loss) / 2;
    const last = (r.losses[10].loss + r.losses[11].loss) / 2;
    assert.ok(r.losses.every((l) => Number.isFinite(l.loss)));
    assert.ok(last < first - 0.5, `loss ${first} -> ${last}`);
    assert.ok(r.evals.length >= 1);
    assert.ok(r.lastCheckpoint?.endsWith("checkpoint-12"));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train: stop at step 2 + --resume equals the uninterrupted run (LoRA, dropout, recompute)", async () => {
  const a = await Deno.makeTempDir({ prefix: "medglm-train-a-" });
  const b = await Deno.makeTempDir({ prefix: "medglm-train-b-" });
  try {
    const whole = await train(config(a, { recompute: true }), quiet);
    const part = await train(config(b, { recompute: true }), { ...quiet, stopAfterSteps: 2 });
    assert.equal(part.interrupted, true);
    assert.equal(part.steps, 2);
    const rest = await train(config(b, { recompute: true, resume: "" }), quiet);
    assert.equal(rest.steps, 6);
    const resumed = [...part.losses, ...rest.losses];
    assert.deepEqual(resumed.map((l) => l.step), [1, 2, 3, 4, 5, 6]);
    // same losses to the last digit, and the same final adapter bytes
    assert.deepEqual(resumed.map((l) => l.loss), whole.losses.map((l) => l.loss));
    const fa = await Deno.readFile(`${a}/checkpoint-6/adapter_model.safetensors`);
    const fb = await Deno.readFile(`${b}/checkpoint-6/adapter_model.safetensors`);
    assert.deepEqual(fb, fa);
    // keep 1 plus the best by eval loss
    const kept = (await listCheckpoints(a)).map((c) => c.step);
    assert.ok(kept.length <= 2, `kept ${JSON.stringify(kept)}`);
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("train: --full trains every base parameter and resumes", async () => {
  const a = await Deno.makeTempDir({ prefix: "medglm-train-full-" });
  try {
    const c = config(a, { full: true, maxSteps: 4, saveSteps: 2, lr: 1e-3, evalSteps: 0 });
    const part = await train(c, { ...quiet, stopAfterSteps: 2 });
    const rest = await train({ ...c, resume: "" }, quiet);
    const whole = await train({ ...c, outputDir: `${a}/whole` }, quiet);
    assert.deepEqual(
      [...part.losses, ...rest.losses].map((l) => l.loss),
      whole.losses.map((l) => l.loss),
    );
    const st = await Deno.stat(`${a}/checkpoint-4/model.safetensors`);
    assert.ok(st.size > 0);
  } finally {
    await Deno.remove(a, { recursive: true });
  }
});
