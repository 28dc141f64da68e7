// What the loop writes is usable: an adapter saved by a LoRA run loads back (through loadModel)
// to the very logits the trained model gives, merging it equals running with it, a run killed
// (SIGKILL) in the middle of a save leaves the previous checkpoint intact and resumable, and LoRA
// over frozen f16 base weights allocates gradients for the adapter only.

import {
  buildTinyTrainData,
  TINY_MODEL as MODEL,
  tinyTrainConfig,
} from "./helpers/tiny_training.ts";
import assert from "node:assert/strict";
import type { TrainConfig } from "../train/config.ts";
import { train } from "../train/train.ts";
import { findLatestCheckpoint } from "../train/checkpoint.ts";
import { loadModel, mergeAdapter } from "../core/models/chatglm/load.ts";
import { buildTrainBatch } from "../core/models/chatglm/train_batch.ts";
import { prepareTraining } from "../core/models/chatglm/train_forward.ts";
import { readTensor } from "../core/tensor/tensor.ts";
import { runMicroStep } from "../train/loop/step.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";

const quiet = { log: () => {}, progressStream: { writeSync: (b: Uint8Array) => b.length } };
const loadQuiet = { log: () => {}, progressBar: false, dtype: "f32" as const };

const dataDir = await buildTinyTrainData("train-adapter", 10);

function config(out: string, extra: Partial<TrainConfig> = {}): TrainConfig {
  return tinyTrainConfig(dataDir, out, {
    lr: 1e-2,
    warmupSteps: 0,
    gradAccumulation: 1,
    maxSteps: 3,
    evalSteps: 0,
    saveSteps: 2,
    keepCheckpoints: 2,
    targetModules: ["query_key_value", "dense"],
    ...extra,
  });
}

const prompts = [[5, 1009, 336, 1974, 1872, 1657, 1660, 1009, 37], [
  1023,
  961,
  1657,
  1660,
  82,
  1096,
  1975,
  1931,
  1917,
]];

Deno.test("train: a saved adapter reloads to identical logits; merged equals with-adapter", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-train-adapter-" });
  try {
    const r = await train(config(out), quiet);
    const ckpt = r.lastCheckpoint!;
    const withAdapter = await loadModel(MODEL, { ...loadQuiet, adapter: ckpt });
    const base = await loadModel(MODEL, loadQuiet);
    try {
      const a = await withAdapter.forward(prompts);
      const b0 = await base.forward(prompts);
      let changed = 0;
      for (let i = 0; i < a.length; i++) if (a[i] !== b0[i]) changed++;
      assert.ok(changed > a.length / 2, "the trained adapter changes the logits");
      // a second load of the same files gives bit-identical logits
      const again = await loadModel(MODEL, { ...loadQuiet, adapter: ckpt });
      assert.deepEqual(await again.forward(prompts), a);
      again.dispose();
      await mergeAdapter(withAdapter);
      const merged = await withAdapter.forward(prompts);
      const cmp = compareRule(merged, a, 1e-4, 1e-6);
      assert.ok(cmp.ok, `merged vs adapter: ${cmp.maxDiff} > ${cmp.limit}`);
    } finally {
      withAdapter.dispose();
      base.dispose();
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("train: SIGKILL in the middle of a save leaves the previous checkpoint intact", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-train-kill-" });
  try {
    const cfg = config(out, { maxSteps: 4, saveSteps: 2 });
    const script = `
      import { train } from ${JSON.stringify(new URL("../train/train.ts", import.meta.url).href)};
      let saves = 0;
      await train(${JSON.stringify(cfg)}, {
        log: () => {},
        progressStream: { writeSync: (b) => b.length },
        saveHooks: {
          afterFile: (name) => {
            if (name === "adapter_model.safetensors" && ++saves === 2) Deno.kill(Deno.pid, "SIGKILL");
          },
        },
      });`;
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--unstable-webgpu", script],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(child.signal, "SIGKILL", new TextDecoder().decode(child.stderr));
    const latest = await findLatestCheckpoint(out);
    assert.ok(latest?.endsWith("checkpoint-2"), `latest complete checkpoint: ${latest}`);
    const names = [...Deno.readDirSync(out)].map((e) => e.name);
    assert.ok(names.some((n) => n.startsWith("checkpoint-4.tmp-")), `leftover temp: ${names}`);
    // the run resumes from checkpoint-2 and ends like an uninterrupted one
    const rest = await train({ ...cfg, resume: "" }, quiet);
    const whole = await train({ ...cfg, outputDir: `${out}/whole` }, quiet);
    assert.deepEqual(rest.losses.map((l) => l.loss), whole.losses.slice(2).map((l) => l.loss));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("LoRA over frozen f16 base weights: gradients for the adapter only, close to f32", async () => {
  const goldens = loadGoldens(MODEL);
  const v = goldens.cases.get("train")!.values as { input_ids: number[][]; labels: number[][] };
  const grads: Float32Array[][] = [];
  for (const dtype of ["f32", "f16"] as const) {
    const model = await loadModel(MODEL, {
      ...loadQuiet,
      dtype,
      adapter: `${MODEL}/adapter-qkv`,
      trainable: true,
    });
    const tm = prepareTraining(model, "lora");
    try {
      assert.deepEqual(
        tm.params.map((p) => p.name.replace(/^.*layers\.(\d+)\..*lora_(A|B).*$/, "$1$2")),
        ["0A", "0B", "1A", "1B"],
      );
      assert.ok(tm.params.every((p) => p.grad.dtype === "f32" && p.param.dtype === "f32"));
      const batch = buildTrainBatch(v.input_ids, v.labels, model.config);
      await runMicroStep(tm, batch, { zeroGrads: true, dropout: 0 });
      grads.push(
        await Promise.all(tm.params.map(async (p) => await readTensor(p.grad) as Float32Array)),
      );
      if (dtype === "f16") assert.equal(model.layers[0].queryKeyValue.weight.dtype, "f16");
    } finally {
      tm.dispose();
      model.dispose();
    }
  }
  grads[0].forEach((g32, i) => {
    const cmp = compareRule(grads[1][i], g32, 2e-2, 1e-6);
    assert.ok(cmp.ok, `tensor ${i}: f16-base grads differ by ${cmp.maxDiff} (limit ${cmp.limit})`);
  });
});

Deno.test("train: Ctrl-C (SIGINT) saves a checkpoint at the step boundary and stops", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-train-int-" });
  try {
    const cfg = config(out, { maxSteps: 200, saveSteps: 1000 });
    const script = `
      import { train } from ${JSON.stringify(new URL("../train/train.ts", import.meta.url).href)};
      const r = await train(${JSON.stringify(cfg)}, { log: () => {} });
      Deno.exit(r.interrupted ? 130 : 0);`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--unstable-webgpu", script],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/step 2\/200/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    child.kill("SIGINT");
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const status = await child.status;
    assert.equal(status.code, 130, text);
    const latest = await findLatestCheckpoint(out);
    assert.ok(latest, `no checkpoint after Ctrl-C:\n${text}`);
    const step = Number(latest!.split("-").pop());
    assert.ok(step >= 2 && step < 200, `checkpoint step ${step}`);
    assert.match(text, /continue with --resume/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
