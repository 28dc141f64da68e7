// `train({ quantize })`, QLoRA-style, on the tiny f16 model quantized at load and on the
// pre-quantized int4 fixture: a run stopped and resumed gives the same losses and adapter bytes as
// an uninterrupted one (dropout, recompute, group-wise int4); resuming with another base is
// refused; the adapter's config records the base; and the adapter serves on the int4 base and on
// the full-precision base alike (in-process losses, and `deno task infer` with and without
// --quantize).

import assert from "node:assert/strict";
import { buildTinyTrainData, tinyTrainConfig } from "./helpers/tiny_training.ts";
import { runScript } from "./helpers/cli.ts";
import type { TrainConfig } from "../train/config.ts";
import { loadTrainConfig } from "../train/config.ts";
import { train } from "../train/train.ts";
import { loadExamples } from "../train/loop/examples.ts";
import { runMicroStep } from "../train/loop/step.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import type { QuantizeOption } from "../core/models/chatglm/quantized.ts";
import { buildTrainBatch } from "../core/models/chatglm/train_batch.ts";
import { prepareTraining } from "../core/models/chatglm/train_forward.ts";
import { baseQuantizationOf, readLoraConfig } from "../core/adapters/peft_config.ts";

const QDIR = new URL("./fixtures/chatglm6b-tiny-quantized", import.meta.url).pathname;
const F16 = `${QDIR}/f16-tied`;
const INT4 = `${QDIR}/int4`;
const quiet = { log: () => {}, progressStream: { writeSync: (b: Uint8Array) => b.length } };

const dataDir = await buildTinyTrainData("qlora-train", 12);

function config(out: string, extra: Partial<TrainConfig> = {}): TrainConfig {
  return tinyTrainConfig(dataDir, out, {
    model: F16,
    quantize: "4,group=16",
    lr: 5e-3,
    warmupSteps: 1,
    gradAccumulation: 2,
    maxSteps: 6,
    evalSteps: 3,
    saveSteps: 3,
    keepCheckpoints: 1,
    loraDropout: 0.1,
    recompute: true,
    ...extra,
  });
}

Deno.test("QLoRA: stop at step 2 + --resume equals the uninterrupted run (int4 group 16, recompute)", async () => {
  const a = await Deno.makeTempDir({ prefix: "medglm-qlora-a-" });
  const b = await Deno.makeTempDir({ prefix: "medglm-qlora-b-" });
  try {
    const whole = await train(config(a), quiet);
    const part = await train(config(b), { ...quiet, stopAfterSteps: 2 });
    assert.equal(part.interrupted, true);
    const rest = await train(config(b, { resume: "" }), quiet);
    assert.equal(rest.steps, 6);
    const resumed = [...part.losses, ...rest.losses];
    assert.deepEqual(resumed.map((l) => l.step), [1, 2, 3, 4, 5, 6]);
    assert.ok(whole.losses.every((l) => Number.isFinite(l.loss)));
    assert.deepEqual(resumed.map((l) => l.loss), whole.losses.map((l) => l.loss));
    const fa = await Deno.readFile(`${a}/checkpoint-6/adapter_model.safetensors`);
    const fb = await Deno.readFile(`${b}/checkpoint-6/adapter_model.safetensors`);
    assert.deepEqual(fb, fa);
    // the adapter says which base it was trained on (our key; peft ignores it)
    const saved = await readLoraConfig(`${a}/checkpoint-6`);
    const recorded = saved.raw.medglm_base_quantization as Record<string, unknown>;
    assert.deepEqual({ ...recorded }, { bits: 4, group_size: 16 });
    assert.deepEqual(baseQuantizationOf(saved), { bits: 4, groupSize: 16 });
    assert.equal(saved.raw.peft_type, "LORA");
    // another base cannot continue this run
    await assert.rejects(
      () => train(config(b, { resume: "", quantize: "8" }), quiet),
      /quantize/,
    );
    await assert.rejects(
      () => train(config(b, { resume: "", quantize: null }), quiet),
      /quantize/,
    );
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("QLoRA: flags — --quantize with --full is refused; a pre-quantized base cannot be re-quantized", async () => {
  await assert.rejects(
    () => loadTrainConfig(["--preset", "demo", "--quantize", "4", "--full"]),
    /--full .*cannot be combined with --quantize/,
  );
  assert.equal(
    (await loadTrainConfig(["--preset", "demo", "--quantize", "4, embeddings"])).config.quantize,
    "4,embeddings",
  );
  await assert.rejects(
    () => loadTrainConfig(["--preset", "demo", "--quantize", "5"]),
    /--quantize: bits must be 4 or 8/,
  );
  const seed = await loadTrainConfig([
    "--preset",
    "chatglm-lora-medical",
    "--quantize",
    "4",
    "--dry-run",
  ]);
  assert.equal(seed.config.quantize, "4");
  assert.equal(seed.config.loraR, 8);
  const out = await Deno.makeTempDir({ prefix: "medglm-qlora-refuse-" });
  try {
    await assert.rejects(
      () => train(config(out, { model: INT4, quantize: "8" }), quiet),
      /already quantized/,
    );
    await assert.rejects(
      () => train(config(out, { model: INT4, quantize: null, full: true }), quiet),
      /--full: .*int4/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

/** Mean loss over a few training examples (one per batch: no padding needed). */
async function meanLoss(
  dir: string,
  quantize: QuantizeOption | undefined,
  adapter: string | undefined,
): Promise<number> {
  const { examples } = await loadExamples(dataDir, "train", 96);
  const model = await loadModel(dir, {
    log: () => {},
    progressBar: false,
    dtype: "f32",
    quantize,
    adapter,
    trainable: adapter !== undefined,
  });
  const tm = adapter ? prepareTraining(model, "lora") : null;
  try {
    let sum = 0;
    const n = 4;
    for (const ex of examples.slice(0, n)) {
      const batch = buildTrainBatch([ex.inputIds], [ex.labels], model.config);
      const r = tm ? await runMicroStep(tm, batch, { evalOnly: true }) : await runMicroStep(
        { model, mode: "lora", params: [], zeroGrads: () => {}, dispose: () => {} },
        batch,
        { evalOnly: true },
      );
      sum += r.loss;
    }
    return sum / n;
  } finally {
    tm?.dispose();
    model.dispose();
  }
}

/** `deno task infer ARGS` in a subprocess. */
function infer(args: string[]) {
  return runScript("serve/infer_cli.ts", args);
}

Deno.test("QLoRA: an adapter trained on the pre-quantized int4 base serves on int4 and on f16", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-qlora-serve-" });
  try {
    const r = await train(
      config(out, {
        model: INT4,
        quantize: null,
        lr: 2e-2,
        maxSteps: 8,
        saveSteps: 8,
        evalSteps: 0,
        loraDropout: 0,
        recompute: false,
      }),
      quiet,
    );
    assert.equal(r.steps, 8);
    const ckpt = `${out}/checkpoint-8`;
    assert.deepEqual(baseQuantizationOf(await readLoraConfig(ckpt)), { bits: 4, groupSize: null });
    // The adapter helps on the base it was trained on, on the same base quantized at load (the
    // same weights: equal losses), and on the full-precision base.
    const int4Base = await meanLoss(INT4, undefined, undefined);
    const int4 = await meanLoss(INT4, undefined, ckpt);
    const atLoad = await meanLoss(F16, 4, ckpt);
    const f16Base = await meanLoss(F16, undefined, undefined);
    const f16 = await meanLoss(F16, undefined, ckpt);
    assert.ok(int4 < int4Base - 0.1, `int4 base: ${int4Base} -> ${int4} with the adapter`);
    assert.ok(Math.abs(atLoad - int4) <= 1e-4 * int4, `int4 at load ${atLoad} vs ${int4}`);
    assert.ok(f16 < f16Base - 0.1, `f16 base: ${f16Base} -> ${f16} with the adapter`);

    // `deno task infer --adapter` with and without --quantize
    const common = ["--model", F16, "--adapter", ckpt, "--prompt", "头痛怎么办"];
    const gen = ["--max-new-tokens", "6", "--temperature", "0"];
    for (const extra of [["--quantize", "4"], []]) {
      const res = await infer([...common, ...gen, ...extra]);
      assert.equal(res.code, 0, `infer ${extra.join(" ")}: ${res.stderr}`);
      assert.ok(res.stdout.trim().length > 0, `infer ${extra.join(" ")}: no answer`);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dataDir, { recursive: true });
  } catch { /* already gone */ }
});
