/**
 * One measured LoRA training run for bench/qlora.ts, in its own process so that its peak resident
 * memory (VmHWM; on a software adapter GPU buffers are host memory) is its own:
 * `deno run -A bench/qlora_child.ts MODEL_DIR BASE SEQ STEPS` with BASE `f16` (the stored f16
 * weights) or a `--quantize` value (`4`, `8`, `4,group=32`). LoRA r 8 on query_key_value, batch 1 ×
 * SEQ, recompute on, one warm-up step, then STEPS timed steps (each: zero grads, forward, backward,
 * AdamW, one submission, as the trainer runs a micro-step). Prints one JSON line.
 */

import {
  getGpu,
  loadChatGLM as loadModel,
  parseQuantizeFlag,
  prepareTraining,
  type QuantizeOption,
} from "../core/mod.ts";
import { createOptimizer, runMicroStep, trainableTensors } from "../train/mod.ts";
import { syntheticBatch, withAdapter } from "./train_step.ts";
import { vmHwmBytes } from "./child_json.ts";

const [dir, base, seqArg, stepsArg] = Deno.args;
const seq = Number(seqArg ?? 128);
const steps = Number(stepsArg ?? 2);
const quantize = base === "f16" ? undefined : parseQuantizeFlag(base) as QuantizeOption;
const gpu = await getGpu();
const t0 = performance.now();
const model = await loadModel(dir, {
  log: () => {},
  progressBar: false,
  gpu,
  dtype: "f16",
  quantize,
  trainable: true,
});
const loadS = (performance.now() - t0) / 1000;
const loadPeakRss = vmHwmBytes();
withAdapter(model);
const tm = prepareTraining(model, "lora");
const opt = createOptimizer(gpu, trainableTensors(tm), {});
const batch = syntheticBatch(model.config, 1, seq);
const times: number[] = [];
const losses: number[] = [];
for (let i = 0; i <= steps; i++) {
  const s = performance.now();
  const r = await runMicroStep(tm, batch, {
    zeroGrads: true,
    optimizer: opt,
    lr: 1e-4,
    maxGradNorm: 1,
    recompute: true,
    dropout: 0,
  });
  if (i > 0) times.push(performance.now() - s); // step 0 warms up (pipeline compiles)
  losses.push(r.loss);
}
console.log(JSON.stringify({
  base,
  loadS,
  stepMs: times,
  losses,
  loadPeakRss,
  peakRss: vmHwmBytes(),
}));
opt.destroy();
tm.dispose();
model.dispose();
