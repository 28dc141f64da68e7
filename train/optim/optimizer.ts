/**
 * The optimizer step as the trainer uses it: global-norm clipping, the NaN/Inf guard and AdamW
 * over every trainable tensor, recorded into the step's single command encoder, with one small
 * readback (norm, clip coefficient, skipped) after the submit.
 *
 * State lives on the GPU in f32 (m, v per tensor, zero-initialised), with a step count per tensor
 * on the host. A skipped step (non-finite gradients) changes nothing, not even the step counts,
 * as PyTorch's GradScaler skips `optimizer.step()`.
 *
 * Gradient accumulation (see accumulate.ts): the backward passes of the micro-batches add into the
 * same gradient buffers; `gradScale` = 1 / accumulation steps turns that sum into the mean of the
 * micro-batch mean losses' gradients (HF Trainer's semantics) without a separate scaling pass.
 */

import {
  type Gpu,
  markWritten,
  recordClear,
  recordCopy,
  type Recording,
  type Tensor,
} from "../../core/mod.ts";
import { ADAMW_DEFAULTS, type AdamWHyper } from "./adamw_reference.ts";
import { type AdamWTensor, recordAdamW } from "./adamw.ts";
import { type BufferRegion, checkRegion, maxChunkElements, splitChunks } from "./chunks.ts";
import {
  nonFiniteTensors,
  type NormPlanEntry,
  parseClipResult,
  planNorm,
  recordGradNorm,
} from "./clip.ts";
import { readRegions, writeRegion } from "./readback.ts";

/**
 * A trainable parameter and its gradient on the GPU (flat f32; `shape` for checkpoints). A tensor
 * stored in several buffers (core tensors larger than one binding are chunked by rows) gives its
 * parts as lists, param and grad split the same way.
 */
export interface TrainableTensor {
  name: string;
  shape: number[];
  param: BufferRegion | readonly BufferRegion[];
  grad: BufferRegion | readonly BufferRegion[];
  /**
   * The core tensor the parameter regions belong to, if any: each step marks it written, so that
   * copies derived from its contents (packed textures, transposed weights) are rebuilt.
   */
  tensor?: Tensor;
}

/** The regions of a core `Tensor` (core/tensor), for {@link TrainableTensor}; f32 only. */
export function tensorRegions(
  t: {
    dtype: string;
    chunks: readonly { buffer: GPUBuffer; byteOffset: number; byteLength: number }[];
  },
): BufferRegion[] {
  if (t.dtype !== "f32") throw new Error(`trainable tensors must be f32 (got ${t.dtype})`);
  return t.chunks.map((c) => ({
    buffer: c.buffer,
    byteOffset: c.byteOffset,
    length: c.byteLength / 4,
  }));
}

export interface StepOptions {
  /** Learning rate of this step (from the schedule). */
  lr: number;
  /** Clip the global norm to this; 0 or less disables clipping (the guard still runs). */
  maxGradNorm: number;
  /** Multiplies every gradient before the norm and the update (1 / accumulation steps). */
  gradScale?: number;
}

export interface StepReport {
  /** Optimizer steps taken so far (after this one, if it was not skipped). */
  step: number;
  gradNorm: number;
  clipCoef: number;
  skipped: boolean;
  /** When skipped: which tensors held NaN/Inf and a sentence saying so. */
  nonFinite?: string[];
  message?: string;
}

/** Optimizer state as stored in a checkpoint (`optimizer.safetensors`). */
export interface OptimizerState {
  hyper: Omit<AdamWHyper, "lr">;
  tensors: { name: string; shape: number[]; step: number; m: Float32Array; v: Float32Array }[];
}

export interface Optimizer {
  readonly tensors: readonly TrainableTensor[];
  readonly hyper: Omit<AdamWHyper, "lr">;
  /** Completed (not skipped) optimizer steps of the first tensor (all share it in the trainer). */
  readonly step: number;
  /** Records norm, guard, AdamW and the result copy. Call `finishStep()` after submitting. */
  recordStep(rec: Recording, options: StepOptions): void;
  /** Reads the step's verdict (one mapAsync) and advances the step counts unless skipped. */
  finishStep(): Promise<StepReport>;
  /** Records zeroing of every gradient (start of the next accumulation window). */
  recordZeroGrads(rec: Recording): void;
  exportState(): Promise<OptimizerState>;
  importState(state: OptimizerState): void;
  /** Bytes of the GPU buffers it owns: m, v and the step's scratch (not params or grads). */
  readonly stateBytes: number;
  /** Frees m, v and the scratch buffers (the params and grads belong to the caller). */
  destroy(): void;
}

interface Slot {
  tensor: TrainableTensor;
  parts: AdamWTensor[];
  numel: number;
  step: number;
}

const asList = (r: BufferRegion | readonly BufferRegion[]): readonly BufferRegion[] =>
  Array.isArray(r) ? r : [r as BufferRegion];

const STATE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Creates AdamW state for `tensors` (m = v = 0, step 0). */
export function createOptimizer(
  gpu: Gpu,
  tensors: readonly TrainableTensor[],
  hyper: Partial<Omit<AdamWHyper, "lr">> = {},
  options: { maxChunkElements?: number } = {},
): Optimizer {
  const h = { ...ADAMW_DEFAULTS, ...hyper };
  const names = new Set<string>();
  // Tests force small chunks to exercise the split path on small tensors.
  const maxChunk = options.maxChunkElements ?? maxChunkElements(gpu);
  const owned: GPUBuffer[] = [];
  const slots: Slot[] = tensors.map((t) => {
    if (names.has(t.name)) throw new Error(`optimizer: duplicate tensor name ${t.name}`);
    names.add(t.name);
    const params = asList(t.param), grads = asList(t.grad);
    if (params.length !== grads.length) {
      throw new RangeError(`${t.name}: param in ${params.length} parts, grad in ${grads.length}`);
    }
    const make = (n: number, label: string) => {
      const buffer = gpu.device.createBuffer({ size: n * 4, usage: STATE_USAGE, label });
      owned.push(buffer);
      return { buffer, length: n };
    };
    let numel = 0;
    const parts = params.map((param, k) => {
      const grad = grads[k];
      checkRegion(gpu, param, `${t.name} (param part ${k})`);
      checkRegion(gpu, grad, `${t.name} (grad part ${k})`);
      if (param.length !== grad.length) {
        throw new RangeError(
          `${t.name} part ${k}: param has ${param.length} values, grad ${grad.length}`,
        );
      }
      numel += param.length;
      return {
        param,
        grad,
        m: make(param.length, `${t.name}.m`),
        v: make(param.length, `${t.name}.v`),
        chunks: splitChunks(param.length, maxChunk),
      };
    });
    const expected = t.shape.reduce((a, b) => a * b, 1);
    if (expected !== numel) {
      throw new RangeError(
        `${t.name}: shape [${t.shape}] has ${expected} values, buffers ${numel}`,
      );
    }
    return { tensor: t, parts, numel, step: 0 };
  });
  const { plan, partials: partialCount } = planNorm(
    slots.flatMap((s) =>
      s.parts.map((p) => ({ name: s.tensor.name, grad: p.grad, chunks: p.chunks }))
    ),
  );
  const partials = gpu.device.createBuffer({
    size: Math.max(16, partialCount * 4),
    usage: STATE_USAGE,
    label: "grad-norm-partials",
  });
  const result = gpu.device.createBuffer({ size: 16, usage: STATE_USAGE, label: "step-result" });
  const staging = gpu.device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    label: "step-result-staging",
  });
  owned.push(partials, result, staging);
  let pending = false;
  let destroyed = false;

  const alive = () => {
    if (destroyed) throw new Error("optimizer: used after destroy()");
  };

  return {
    tensors,
    hyper: h,
    stateBytes: owned.reduce((n, b) => n + b.size, 0),
    get step() {
      return slots.length ? slots[0].step : 0;
    },
    recordStep(rec, options) {
      alive();
      for (const t of tensors) if (t.tensor) markWritten(t.tensor);
      if (pending) throw new Error("optimizer: finishStep() was not called for the previous step");
      const scale = options.gradScale ?? 1;
      if (!(scale > 0 && Number.isFinite(scale))) {
        throw new RangeError(`gradScale must be a positive number (got ${scale})`);
      }
      if (!(options.lr >= 0 && Number.isFinite(options.lr))) {
        throw new RangeError(`lr must be a non-negative number (got ${options.lr})`);
      }
      recordGradNorm(rec, plan, partials, partialCount, result, options.maxGradNorm, scale);
      const full = { ...h, lr: options.lr };
      for (const s of slots) for (const p of s.parts) recordAdamW(rec, p, result, full, s.step + 1);
      recordCopy(rec, result, 0, staging, 0, 16);
      pending = true;
    },
    async finishStep() {
      alive();
      if (!pending) throw new Error("optimizer: finishStep() without recordStep()");
      pending = false;
      await staging.mapAsync(GPUMapMode.READ);
      const values = new Float32Array(staging.getMappedRange().slice(0));
      staging.unmap();
      gpu.checkErrors();
      const r = parseClipResult(values);
      if (!r.skipped) {
        for (const s of slots) s.step++;
        return { step: slots[0]?.step ?? 0, gradNorm: r.norm, clipCoef: r.coef, skipped: false };
      }
      const [parts] = await readRegions(gpu, [{ buffer: partials, length: partialCount }]);
      const bad = nonFiniteTensors(plan as NormPlanEntry[], parts);
      const step = slots[0]?.step ?? 0;
      return {
        step,
        gradNorm: r.norm,
        clipCoef: r.coef,
        skipped: true,
        nonFinite: bad,
        message: `optimizer step ${step + 1} skipped: gradient norm is ${r.norm}; ` +
          (bad.length
            ? `non-finite values in ${bad.slice(0, 5).join(", ")}${bad.length > 5 ? ", …" : ""}`
            : "the sum of squares overflowed f32"),
      };
    },
    recordZeroGrads(rec) {
      alive();
      for (const s of slots) {
        for (const p of s.parts) {
          recordClear(rec, p.grad.buffer, p.grad.byteOffset ?? 0, p.grad.length * 4);
        }
      }
    },
    async exportState() {
      alive();
      const regions = slots.flatMap((s) => s.parts.flatMap((p) => [p.m, p.v]));
      const data = await readRegions(gpu, regions);
      let i = 0;
      return {
        hyper: { ...h },
        tensors: slots.map((s) => {
          const m = new Float32Array(s.numel), v = new Float32Array(s.numel);
          let off = 0;
          for (const p of s.parts) {
            m.set(data[i++], off);
            v.set(data[i++], off);
            off += p.param.length;
          }
          return { name: s.tensor.name, shape: [...s.tensor.shape], step: s.step, m, v };
        }),
      };
    },
    importState(state) {
      alive();
      const byName = new Map(state.tensors.map((t) => [t.name, t]));
      const extra = [...byName.keys()].filter((n) => !names.has(n));
      if (extra.length) {
        throw new Error(
          `optimizer state has tensors the model does not train: ${extra.join(", ")}`,
        );
      }
      for (const s of slots) {
        const t = byName.get(s.tensor.name);
        if (!t) throw new Error(`optimizer state has no entry for ${s.tensor.name}`);
        if (t.m.length !== s.numel || t.v.length !== s.numel) {
          throw new Error(
            `optimizer state for ${s.tensor.name}: ${t.m.length} values, expected ${s.numel}`,
          );
        }
        if (!(Number.isInteger(t.step) && t.step >= 0)) {
          throw new Error(`optimizer state for ${s.tensor.name}: bad step ${t.step}`);
        }
      }
      for (const s of slots) {
        const t = byName.get(s.tensor.name)!;
        let off = 0;
        for (const p of s.parts) {
          writeRegion(gpu, p.m, t.m.subarray(off, off + p.param.length));
          writeRegion(gpu, p.v, t.v.subarray(off, off + p.param.length));
          off += p.param.length;
        }
        s.step = t.step;
      }
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      for (const b of owned) b.destroy();
    },
  };
}
