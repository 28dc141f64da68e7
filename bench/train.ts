/**
 * Training benchmarks (the optimizer side; training tokens/s joins once the trainer loop exists).
 *
 * The optimizer step on the real ChatGLM-6B LoRA shapes (r 8 on query_key_value: 56 tensors,
 * 3.67M parameters) and on a larger set (all four linear modules, r 16): the WGSL step (global
 * norm, clip, NaN guard, AdamW, one readback) against the same AdamW as a plain f32 JS loop on the
 * CPU, measured in the same run.
 */

import { beginRecording, getGpu, submit } from "../core/mod.ts";
import { createOptimizer, type TrainableTensor } from "../train/mod.ts";

interface Case {
  name: string;
  shapes: [number, number][];
}

function loraShapes(modules: [number, number][], r: number, layers: number): [number, number][] {
  const out: [number, number][] = [];
  for (let l = 0; l < layers; l++) {
    for (const [o, i] of modules) out.push([r, i], [o, r]);
  }
  return out;
}

const H = 4096, INNER = 16384, LAYERS = 28;
const CASES: Case[] = [
  { name: "LoRA r8 qkv (seed)", shapes: loraShapes([[3 * H, H]], 8, LAYERS) },
  {
    name: "LoRA r16 all linear",
    shapes: loraShapes([[3 * H, H], [H, H], [INNER, H], [H, INNER]], 16, LAYERS),
  },
];

function cpuAdamW(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  t: number,
  lr: number,
): void {
  const b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  const stepSize = lr / (1 - b1 ** t), bc2 = Math.sqrt(1 - b2 ** t);
  let sum = 0;
  for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  const coef = Math.min(1, 1 / (Math.sqrt(sum) + 1e-6));
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * coef;
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    p[i] = p[i] * (1 - lr * wd) - stepSize * m[i] / (Math.sqrt(v[i]) / bc2 + eps);
  }
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  console.log(`train: optimizer step (${gpu.adapterInfo.description || "unknown adapter"})`);
  console.log(
    `${"case".padEnd(22)} ${"params".padStart(10)} ${"GPU ms".padStart(9)} ${
      "CPU ms".padStart(9)
    } ` +
      `${"ratio".padStart(7)}`,
  );
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  for (const c of CASES) {
    const tensors: TrainableTensor[] = c.shapes.map(([a, b], k) => {
      const n = a * b;
      const init = Float32Array.from({ length: n }, (_, i) => Math.sin(i + k) * 0.01);
      const param = gpu.device.createBuffer({ size: n * 4, usage });
      const grad = gpu.device.createBuffer({ size: n * 4, usage });
      gpu.device.queue.writeBuffer(param, 0, init);
      gpu.device.queue.writeBuffer(grad, 0, init);
      return {
        name: `t${k}`,
        shape: [a, b],
        param: { buffer: param, length: n },
        grad: { buffer: grad, length: n },
      };
    });
    const params = c.shapes.reduce((s, [a, b]) => s + a * b, 0);
    const opt = createOptimizer(gpu, tensors);
    const step = async () => {
      const rec = beginRecording(gpu);
      opt.recordStep(rec, { lr: 1e-4, maxGradNorm: 1 });
      await submit(rec);
      await opt.finishStep();
    };
    await step(); // compile pipelines
    const reps = 5;
    let t0 = performance.now();
    for (let i = 0; i < reps; i++) await step();
    const gpuMs = (performance.now() - t0) / reps;

    const p = new Float32Array(params).fill(0.01), g = new Float32Array(params).fill(0.001);
    const m = new Float32Array(params), v = new Float32Array(params);
    cpuAdamW(p, g, m, v, 1, 1e-4);
    t0 = performance.now();
    for (let i = 0; i < reps; i++) cpuAdamW(p, g, m, v, i + 2, 1e-4);
    const cpuMs = (performance.now() - t0) / reps;
    console.log(
      `${c.name.padEnd(22)} ${(params / 1e6).toFixed(2).padStart(9)}M ${
        gpuMs.toFixed(2).padStart(9)
      } ` +
        `${cpuMs.toFixed(2).padStart(9)} ${(cpuMs / gpuMs).toFixed(2).padStart(6)}×`,
    );
    opt.destroy();
    for (const t of tensors) {
      (t.param as { buffer: GPUBuffer }).buffer.destroy();
      (t.grad as { buffer: GPUBuffer }).buffer.destroy();
    }
  }
  console.log("ratio = CPU f32 JS loop time / GPU step time (higher is better)");
}

if (import.meta.main) await bench();
