// Resume of the optimizer side of training: 6 AdamW steps in one go equal 3 steps, a checkpoint
// written to disk (optimizer.safetensors, scheduler.json, adapter), a fresh optimizer loaded from
// it, and 3 more steps — bit for bit.
import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { beginRecording, submit } from "../core/gpu/recording.ts";
import { loadCheckpoint, saveCheckpoint } from "../train/checkpoint.ts";
import { createOptimizer, type TrainableTensor } from "../train/optim/optimizer.ts";
import { readRegions } from "../train/optim/readback.ts";
import { lrAt, type ScheduleConfig, schedulerState } from "../train/schedule.ts";
import { createTrainerState } from "../train/trainer_state.ts";
import { parseLoraConfig } from "../core/adapters/peft_config.ts";

const SHAPES: Record<string, [number, number]> = {
  "transformer.layers.0.attention.query_key_value.lora_A": [4, 32],
  "transformer.layers.0.attention.query_key_value.lora_B": [96, 4],
};

/** Deterministic "data": the gradient of a step depends only on the step and the tensor. */
function gradFor(step: number, k: number, n: number): Float32Array<ArrayBuffer> {
  return Float32Array.from(
    { length: n },
    (_, i) => Math.sin(0.37 * i + 1.3 * step + k) * (1 + step % 3),
  );
}

async function run(
  params: Map<string, Float32Array>,
  fromStep: number,
  toStep: number,
  schedule: ScheduleConfig,
  state?: Awaited<ReturnType<ReturnType<typeof createOptimizer>["exportState"]>>,
) {
  const gpu = await getGpu();
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const tensors: TrainableTensor[] = [...params].map(([name, p]) => {
    const pb = gpu.device.createBuffer({ size: p.byteLength, usage });
    gpu.device.queue.writeBuffer(pb, 0, p as Float32Array<ArrayBuffer>);
    const gb = gpu.device.createBuffer({ size: p.byteLength, usage });
    return {
      name,
      shape: SHAPES[name],
      param: { buffer: pb, length: p.length },
      grad: { buffer: gb, length: p.length },
    };
  });
  const opt = createOptimizer(gpu, tensors, { weightDecay: 0.01 });
  if (state) opt.importState(state);
  for (let step = fromStep; step < toStep; step++) {
    tensors.forEach((t, k) =>
      gpu.device.queue.writeBuffer(
        (t.grad as { buffer: GPUBuffer }).buffer,
        0,
        gradFor(step, k, params.get(t.name)!.length),
      )
    );
    const rec = beginRecording(gpu);
    opt.recordStep(rec, { lr: lrAt(schedule, step), maxGradNorm: 5, gradScale: 0.5 });
    await submit(rec);
    assert.equal((await opt.finishStep()).skipped, false);
  }
  const values = await readRegions(
    gpu,
    tensors.map((t) => t.param as { buffer: GPUBuffer; length: number }),
  );
  const out = new Map(tensors.map((t, i) => [t.name, values[i]]));
  const exported = await opt.exportState();
  opt.destroy();
  for (const t of tensors) {
    (t.param as { buffer: GPUBuffer }).buffer.destroy();
    (t.grad as { buffer: GPUBuffer }).buffer.destroy();
  }
  return { params: out, state: exported };
}

Deno.test("optimizer + schedule resumed from a checkpoint on disk equal an uninterrupted run", async () => {
  const schedule: ScheduleConfig = { kind: "cosine", lr: 1e-2, warmupSteps: 2, totalSteps: 6 };
  const init = new Map(
    Object.entries(SHAPES).map(([name, [a, b]], k) => [
      name,
      Float32Array.from({ length: a * b }, (_, i) => Math.cos(i * 0.11 + k) * 0.05),
    ]),
  );
  const straight = await run(init, 0, 6, schedule);

  const first = await run(init, 0, 3, schedule);
  const out = await Deno.makeTempDir();
  const module = "transformer.layers.0.attention.query_key_value";
  const [r, inF] = SHAPES[`${module}.lora_A`];
  const dir = await saveCheckpoint(out, {
    step: 3,
    weights: {
      kind: "lora",
      adapter: {
        source: null,
        config: parseLoraConfig({
          peft_type: "LORA",
          r,
          lora_alpha: 8,
          lora_dropout: 0,
          target_modules: ["query_key_value"],
          bias: "none",
        }),
        scaling: 2,
        modules: new Map([[module, {
          module,
          r,
          inFeatures: inF,
          outFeatures: SHAPES[`${module}.lora_B`][0],
          a: first.params.get(`${module}.lora_A`)!,
          b: first.params.get(`${module}.lora_B`)!,
        }]]),
      },
    },
    optimizer: first.state,
    scheduler: schedulerState(schedule, 3),
    rng: null,
    trainerState: createTrainerState({
      maxSteps: 6,
      epochs: 1,
      loggingSteps: 1,
      evalSteps: 0,
      saveSteps: 3,
      batchSize: 1,
    }),
  });
  const back = await loadCheckpoint(dir);
  assert.equal(back.weights.kind, "lora");
  if (back.weights.kind !== "lora") return;
  const m = back.weights.adapter.modules.get(module)!;
  const resumedParams = new Map([[`${module}.lora_A`, m.a], [`${module}.lora_B`, m.b]]);
  const { kind, lr, warmupSteps, totalSteps, numCycles, step } = back.scheduler;
  const resumed = await run(resumedParams, step, 6, {
    kind,
    lr,
    warmupSteps,
    totalSteps,
    numCycles,
  }, back.optimizer);
  for (const [name, p] of straight.params) {
    assert.deepEqual(resumed.params.get(name), p, `${name} bit for bit`);
  }
  assert.deepEqual(resumed.state, straight.state);
  await Deno.remove(out, { recursive: true });
});
