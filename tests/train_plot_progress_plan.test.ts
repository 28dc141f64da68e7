// Loss plots (SVG + PNG), the progress line and summary, and the dry-run memory plan.
import assert from "node:assert/strict";
import { parseChatGLMConfig } from "../core/models/chatglm/config.ts";
import { crc32, encodePng, PNG_SIGNATURE } from "../train/plot/png.ts";
import { lossPlotSpec, writeLossPlots } from "../train/plot/loss_plot.ts";
import { niceTicks } from "../train/plot/axes.ts";
import { plotMain } from "../train/plot_cli.ts";
import { createCanvas } from "../train/plot/raster.ts";
import { createTrainerState, logEval, logTrain } from "../train/trainer_state.ts";
import { saveCheckpoint } from "../train/checkpoint.ts";
import { createTrainProgress, formatStepLine, formatTrainSummary } from "../train/progress.ts";
import { CHATGLM_6B_CONFIG_URL, dryRunReport, readModelConfig } from "../train/dry_run.ts";
import { formatTrainPlanSummary, limitWarnings, trainMemoryPlan } from "../train/memory_plan.ts";
import { preset } from "../train/config.ts";
import { schedulerState } from "../train/schedule.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;

function runState() {
  const st = createTrainerState({
    maxSteps: 200,
    epochs: 1,
    loggingSteps: 10,
    evalSteps: 50,
    saveSteps: 100,
    batchSize: 4,
  });
  for (let s = 10; s <= 200; s += 10) {
    logTrain(st, {
      step: s,
      epoch: s / 200,
      loss: 3 * Math.exp(-s / 100) + 1,
      learning_rate: 1e-3,
    });
    if (s % 50 === 0) {
      logEval(st, { step: s, epoch: s / 200, eval_loss: 3 * Math.exp(-s / 120) + 1.2 });
    }
  }
  return st;
}

Deno.test("CRC-32 matches the standard check value and PNG chunks verify", async () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const png = await encodePng(createCanvas(3, 2, [10, 20, 30]));
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
  // walk the chunks and check each CRC
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const types: string[] = [];
  for (let off = 8; off < png.length;) {
    const len = view.getUint32(off);
    const type = new TextDecoder().decode(png.subarray(off + 4, off + 8));
    types.push(type);
    assert.equal(
      view.getUint32(off + 8 + len),
      crc32(png.subarray(off + 4, off + 8 + len)),
      `${type} CRC`,
    );
    off += 12 + len;
  }
  assert.deepEqual(types, ["IHDR", "IDAT", "IEND"]);
  // the IDAT inflates back to the filtered rows
  const idatLen = view.getUint32(8 + 25);
  const z = png.subarray(8 + 25 + 8, 8 + 25 + 8 + idatLen);
  const raw = new Uint8Array(
    await new Response(
      new Blob([z.slice() as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
        new DecompressionStream("deflate"),
      ),
    )
      .arrayBuffer(),
  );
  assert.deepEqual([...raw], [
    0,
    10,
    20,
    30,
    10,
    20,
    30,
    10,
    20,
    30,
    0,
    10,
    20,
    30,
    10,
    20,
    30,
    10,
    20,
    30,
  ]);
});

Deno.test("loss plots: SVG with both series, PNG with the right size, written beside the checkpoints", async () => {
  const dir = await Deno.makeTempDir();
  const st = runState();
  const spec = lossPlotSpec(st);
  assert.deepEqual(spec.series.map((s) => [s.name, s.points.length]), [["train loss", 20], [
    "eval loss",
    4,
  ]]);
  const files = await writeLossPlots(dir, st, "loss: test");
  const svg = await Deno.readTextFile(files.svg);
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="800" height="480"/);
  assert.match(svg, /data-name="train loss"/);
  assert.match(svg, /data-name="eval loss"/);
  assert.equal((svg.match(/<circle /g) ?? []).length, 4, "one marker per eval");
  assert.match(svg, />step</);
  const png = await Deno.readFile(files.png);
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
  const ihdr = new DataView(png.buffer, png.byteOffset + 16, 13);
  assert.equal(ihdr.getUint32(0), 800);
  assert.equal(ihdr.getUint32(4), 480);
  assert.equal(ihdr.getUint8(9), 2, "RGB");
  // an empty run says so
  await assert.rejects(
    () => writeLossPlots(dir, { log_history: [] }),
    /no loss values to plot yet/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("deno task plot RUN_DIR finds the newest checkpoint's trainer state", async () => {
  const dir = await Deno.makeTempDir();
  assert.equal(await plotMain([dir]), 1, "no trainer state yet");
  await saveCheckpoint(dir, {
    step: 200,
    weights: { kind: "full", tensors: [{ name: "w", shape: [1], data: new Float32Array([1]) }] },
    optimizer: { hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, tensors: [] },
    scheduler: schedulerState({ kind: "constant", lr: 1, warmupSteps: 0, totalSteps: 0 }, 200),
    rng: null,
    trainerState: runState(),
  });
  assert.equal(await plotMain([dir]), 0);
  assert.ok((await Deno.stat(`${dir}/loss.png`)).size > 1000);
  assert.match(await Deno.readTextFile(`${dir}/loss.svg`), /eval loss/);
  assert.equal(await plotMain([]), 2, "usage error");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("nice ticks cover the range with 1/2/5 steps", () => {
  const t = niceTicks(1.93, 3.47, 5);
  assert.equal(t.step, 0.5);
  assert.deepEqual(t.values, [1.5, 2, 2.5, 3, 3.5]);
  const x = niceTicks(0, 1000);
  assert.equal(x.step, 200);
  assert.equal(x.values[x.values.length - 1], 1000);
  assert.ok(niceTicks(2, 2).values.length >= 2, "a flat series still gets an axis");
});

Deno.test("progress: carriage-return line on a TTY, plain lines otherwise, ETA and tokens/s", () => {
  let clock = 0;
  const chunks: string[] = [];
  const stream = {
    writeSync: (b: Uint8Array) => (chunks.push(new TextDecoder().decode(b)), b.length),
  };
  const p = createTrainProgress({ stream, tty: true, now: () => clock });
  clock = 2000;
  let st = p.step({
    step: 1,
    totalSteps: 11,
    epoch: 0.1,
    loss: 2.5,
    lr: 5e-4,
    gpuBytes: 3 * 1024 ** 3,
  }, 1000);
  assert.equal(st.tokensPerSecond, 500);
  assert.equal(st.etaSeconds, 20);
  clock = 4000;
  st = p.step({ step: 2, totalSteps: 11, epoch: 0.2, loss: 2.25, lr: 5e-4, gpuBytes: null }, 1000);
  assert.equal(st.etaSeconds, 18);
  p.note("eval loss 2.1");
  p.done();
  assert.ok(chunks[0].startsWith("\r"));
  assert.match(
    chunks[0],
    /step 1\/11 \(9\.1%\) \| epoch 0\.10 \| loss 2\.5000 \| lr 5\.00e-4 \| 500 tok\/s \| GPU 3\.0 GiB \| ETA 0:20/,
  );
  assert.match(chunks[2], /eval loss 2\.1\n.*step 2\/11/);
  assert.equal(chunks[chunks.length - 1], "\n");

  const lines: string[] = [];
  const plain = createTrainProgress({
    stream: { writeSync: (b: Uint8Array) => (lines.push(new TextDecoder().decode(b)), b.length) },
    tty: false,
    lineEvery: 5,
    now: () => clock,
  });
  for (let s = 1; s <= 7; s++) {
    clock += 100;
    plain.step({ step: s, totalSteps: 7, epoch: s / 7, loss: 1, lr: 1e-3, gpuBytes: 0 }, 10);
  }
  assert.deepEqual(lines.map((l) => l.split(" |")[0]), ["step 5/7 (71.4%)", "step 7/7 (100.0%)"]);
  assert.ok(lines.every((l) => l.endsWith("\n") && !l.includes("\r")));
  assert.match(
    formatStepLine({
      step: 0,
      totalSteps: 0,
      epoch: 0,
      loss: NaN,
      lr: 0,
      tokensPerSecond: 0,
      gpuBytes: null,
      etaSeconds: null,
    }),
    /loss - .*GPU \? \| ETA \?/,
  );
  const summary = formatTrainSummary({
    steps: 100,
    epochs: 1,
    trainLoss: 1.5,
    bestEvalLoss: 1.4,
    bestCheckpoint: "runs/x/checkpoint-100",
    lastEvalLoss: 1.45,
    runtimeSeconds: 3725,
    tokensPerSecond: 1234.5,
    samplesPerSecond: 2,
    skippedSteps: 1,
    gpuMemory: {
      weights: 1024 ** 3,
      adapters: 4 * 1024 ** 2,
      gradients: 4 * 1024 ** 2,
      optimizer: 8 * 1024 ** 2,
      temporaries: 512 * 1024 ** 2,
      total: 1024 ** 3 + 528 * 1024 ** 2,
    },
    outputDir: "runs/x",
  });
  assert.match(summary, /best checkpoint\s+runs\/x\/checkpoint-100/);
  assert.match(summary, /runtime\s+1:02:05/);
  assert.match(summary, /last eval perplexity\s+4\.263/);
  assert.match(summary, /peak GPU memory\s+.* resident: weights .* \+ optimizer .* at their peak /);
});

Deno.test("memory plan for the real ChatGLM-6B config is sane", async () => {
  const { config } = await readModelConfig(null);
  assert.equal(config.hiddenSize, 4096);
  const plan = trainMemoryPlan({
    model: config,
    weightDtype: "f16",
    full: false,
    loraR: 8,
    targetModules: ["query_key_value"],
    batchSize: 8,
    seqLen: 512,
  });
  // 6.7B parameters; f16 weights ≈ 13.4 GB (the real checkpoint's tensors hold 13,415,859,968 bytes
  // including 1792 bytes of rotary inv_freq buffers, which are not parameters)
  assert.equal(plan.weights.bytes, 13_415_859_968 - 28 * 32 * 2);
  assert.ok(plan.weights.bytes > 12.3e9 && plan.weights.bytes < 13.5e9);
  assert.equal(plan.trainableParams, 28 * 8 * (4096 + 3 * 4096)); // peft's 3,670,016
  assert.equal(plan.optimizer.bytes, plan.trainableParams * 8);
  assert.equal(plan.targetedModules.length, 28);
  // attention probabilities: 8 · 32 · 512² f32 per layer
  assert.ok(plan.activations.bytes > 28 * 8 * 32 * 512 * 512 * 4);
  assert.ok(plan.activationsRecompute.bytes < plan.activations.bytes / 5);
  assert.ok(plan.totalWithRecompute < plan.totalWithoutRecompute);
  assert.equal(plan.logits.bytes, 2 * 8 * 512 * 130528 * 4 + 8 * 512 * 8);
  const full = trainMemoryPlan({ ...plan.input, full: true });
  assert.equal(full.trainableParams, full.baseParams);
  assert.equal(full.weights.bytes, full.baseParams * 4);
  assert.ok(full.optimizer.bytes > 50e9);
  // other targets change the LoRA size; targets that match nothing are refused
  const multi = trainMemoryPlan({ ...plan.input, targetModules: ["query_key_value", "dense"] });
  assert.equal(multi.trainableParams, plan.trainableParams + 28 * 8 * (4096 + 4096));
  assert.throws(
    () => trainMemoryPlan({ ...plan.input, targetModules: ["q_proj"] }),
    /match no linear module/,
  );
  const warnings = limitWarnings(plan, {
    maxBufferSize: 2 ** 31 - 1,
    maxStorageBufferBindingSize: 2 ** 27,
  });
  assert.ok(warnings.some((w) => /word_embeddings.*bound in 8 chunks/.test(w)));
  assert.deepEqual(
    limitWarnings(plan, { maxBufferSize: 2 ** 40, maxStorageBufferBindingSize: 2 ** 40 }),
    [],
  );
});

Deno.test("dry-run report for a model directory also shows the real config", async () => {
  const c = { ...preset("demo"), model: TINY, dryRun: true };
  const text = await dryRunReport(c, {
    maxBufferSize: 2 ** 31 - 1,
    maxStorageBufferBindingSize: 2 ** 27,
  });
  assert.match(text, /memory plan: .*chatglm6b-tiny\/config\.json/);
  assert.match(text, /memory plan: ChatGLM-6B \(bundled config\)/);
  assert.match(text, /total with recompute/);
  const tinyConfig = parseChatGLMConfig(JSON.parse(await Deno.readTextFile(`${TINY}/config.json`)));
  const tinyPlan = trainMemoryPlan({
    model: tinyConfig,
    weightDtype: "f32",
    full: false,
    loraR: c.loraR,
    targetModules: c.targetModules,
    batchSize: c.batchSize,
    seqLen: c.maxLength,
  });
  // computed from the config, not assumed
  const h = tinyConfig.hiddenSize,
    V = tinyConfig.vocabSize,
    L = tinyConfig.numLayers,
    I = tinyConfig.innerHiddenSize;
  assert.equal(
    tinyPlan.baseParams,
    2 * V * h + L * (4 * h + 3 * h * h + 3 * h + h * h + h + 2 * I * h + I + h) + 2 * h,
  );
  await assert.rejects(
    () => readModelConfig(`${TINY}/nope`),
    /--model .*nope: no such directory or file/,
  );
  assert.ok(CHATGLM_6B_CONFIG_URL.href.endsWith("train/configs/chatglm-6b.config.json"));
});

Deno.test("the training plan states the run's batch, accumulation, length and real adapter", async () => {
  const DEMO = new URL("../models/demo", import.meta.url).pathname;
  // The flags say r 4; the initial adapter (the quick start's) is r 16 on all four linear types:
  // the plan counts the adapter the run trains (it used to say "LoRA 0.0 KiB" or the flags' r).
  const c = { ...preset("demo"), model: DEMO, loraR: 4, adapterInit: `${DEMO}/adapter` };
  const text = await dryRunReport(c, null);
  const demoPart = text.split("memory plan: ChatGLM-6B")[0];
  assert.match(demoPart, /batch 4 × 2 accumulation, length 128/);
  assert.match(
    demoPart,
    /LoRA r 16 on query_key_value, dense, dense_h_to_4h, dense_4h_to_h \(8 modules\)/,
  );
  // 2 layers × r 16 × ((128 + 384) + (128 + 128) + 2 × (128 + 512)) = 65,536 values, f32 w + grad
  assert.match(demoPart, /LoRA weights \+ grads +512 KiB +65\.5K params in 8 modules \(r 16\)/);
  const model = parseChatGLMConfig(JSON.parse(await Deno.readTextFile(`${TINY}/config.json`)));
  const input = {
    model,
    weightDtype: "f32" as const,
    full: false,
    loraR: 8,
    targetModules: ["query_key_value"],
    batchSize: 4,
    gradAccumulation: 2,
    seqLen: 128,
  };
  const line = formatTrainPlanSummary(trainMemoryPlan(input));
  assert.match(line, /^GPU memory plan \(training: batch 4 × 2 accumulation, length 128, LoRA r 8/);
  assert.doesNotMatch(line, /context|batch 1\b|0\.0 KiB/);
  const full = formatTrainPlanSummary(trainMemoryPlan({ ...input, full: true, batchSize: 8 }));
  assert.match(full, /training: batch 8 × 2 accumulation, length 128, full fine-tuning, f32/);
});
