/**
 * Memory planning before a load: what the weights, LoRA branches, KV cache and the largest
 * step's activations take for a dtype and context on the GPU, what the process holds in host
 * memory (on a software adapter the GPU's memory is host memory), the peak of each during the
 * load and after, and whether each buffer fits the adapter's binding limits. WebGPU does not
 * report free device memory, so the total is checked only against a budget the user gives.
 */

import type { GpuLimits } from "../../gpu/device.ts";
import type { LoraAdapter } from "../../adapters/lora_weights.ts";
import type { ChatGLMConfig } from "./config.ts";
import { parameterTable } from "./params.ts";
import {
  CHATGLM_QUANT_LAYOUT,
  groupSizeOf,
  isQuantizedWeight,
  quantizedBytes,
  type QuantLayout,
  type QuantSpec,
} from "../../quant/format.ts";
import { describeQuant } from "./quantized.ts";
import { WRITE_PIECE_BYTES } from "../../kernels/mod.ts";
import { READ_PIECE_BYTES, READS_AHEAD, type WeightDtype } from "./weights.ts";

export interface MemoryPlanOptions {
  dtype: WeightDtype;
  maxContext: number;
  batch: number;
  adapter?: Pick<LoraAdapter, "modules">;
  /** `lm_head.weight` is absent and the output layer reads the embedding table. */
  tiedHead?: boolean;
  /**
   * The adapter is a software one (llvmpipe): GPU buffers and textures are host memory.
   * Default true when `packedWeights` is set, else false.
   */
  software?: boolean;
  /**
   * Linear weights live only as packed textures (software adapter, not trainable). When false on
   * a software adapter, each linear weight is held twice once the forward packed it.
   */
  packedWeights?: boolean;
  /** The largest tensor of the checkpoint in its stored dtype (the load reads it whole). */
  largestStoredTensorBytes?: number;
  /** Host memory of the runtime itself (Deno, the WebGPU driver, compiled kernels). */
  runtimeBytes?: number;
  /** int8/int4 linears (and embeddings), core/quant; absent: float weights. */
  quant?: QuantSpec | null;
}

/** Deno with a software WebGPU device and the model's kernels compiled, measured here. */
export const RUNTIME_HOST_BYTES = 200 * 2 ** 20;

/** One GPU buffer that must fit a single storage binding. */
export interface PlannedBinding {
  what: string;
  bytes: number;
  /** Split into row chunks by core/tensor when larger than one binding (embedding, lm_head). */
  chunked: boolean;
  /**
   * One row of a full-context prefill's activations: a step checks its own input against the
   * limit (`rowsPerPassOf`), so a long context need not stop a load.
   */
  perRow?: boolean;
}

export interface MemoryPlan {
  dtype: WeightDtype;
  quant: QuantSpec | null;
  maxContext: number;
  batch: number;
  weightsBytes: number;
  loraBytes: number;
  kvCacheBytes: number;
  /** Peak transient tensors of a full-context prefill (last-position logits). */
  activationBytes: number;
  totalBytes: number;
  /** The largest buffers, each of which must fit one binding (unless chunked). */
  bindings: PlannedBinding[];
  /** Whether GPU memory is host memory (software adapter). */
  software: boolean;
  /** Weights as the kernels hold them (a tied embedding packed for the head counts twice). */
  residentWeightsBytes: number;
  /** What the load adds on top of the weights already uploaded, at its worst moment. */
  loadTransientBytes: number;
  /** GPU memory after the load (weights, LoRA) and at the peak of a full-context step. */
  gpuAfterLoadBytes: number;
  gpuPeakBytes: number;
  /** Host memory (resident set): after the load, at the load's worst moment, and at the peak. */
  hostAfterLoadBytes: number;
  hostLoadPeakBytes: number;
  hostPeakBytes: number;
}

/**
 * What the planner needs of an architecture: its parameter table and quantized layout, the sizes
 * of one layer's KV cache and of a step's live activations, and the buffers that must fit a binding.
 */
export interface PlanArch {
  parameters: readonly { name: string; shape: number[] }[];
  layout: QuantLayout;
  numLayers: number;
  /** Values of k (or of v) one token adds to one layer's cache (heads held × head size). */
  kvValuesPerToken: number;
  /** f32 values live per token at the peak of a layer (x, normed, projections, MLP). */
  activationValuesPerToken: number;
  vocabSize: number;
  hiddenSize: number;
  /** The largest linear weight's element count (the MLP's). */
  largestLinear: number;
  /** The weights that must fit a binding (chunked by core/tensor): name and element count. */
  weightBindings: { what: string; values: number }[];
  /** The widest per-token activations of a layer (one row of a prefill must fit a binding). */
  rowBindings: { what: string; values: number }[];
}

/** ChatGLM-6B's {@link PlanArch}. */
export function chatglmPlanArch(config: ChatGLMConfig): PlanArch {
  const h = config.hiddenSize, inner = config.innerHiddenSize, V = config.vocabSize;
  return {
    parameters: parameterTable(config),
    layout: CHATGLM_QUANT_LAYOUT,
    numLayers: config.numLayers,
    kvValuesPerToken: h,
    // Live at the peak of a layer: x, a, qkv, q, attention output, the two MLP tensors.
    activationValuesPerToken: 3 * h + 3 * h + h + 2 * inner,
    vocabSize: V,
    hiddenSize: h,
    largestLinear: inner * h,
    weightBindings: [
      { what: "word_embeddings", values: V * h },
      { what: "lm_head", values: V * h },
      { what: "mlp weights", values: inner * h },
      { what: "query_key_value weight", values: 3 * h * h },
    ],
    rowBindings: [
      { what: "qkv activations of one row", values: 3 * h },
      { what: "MLP activations of one row", values: inner },
    ],
  };
}

export function planMemory(config: ChatGLMConfig, options: MemoryPlanOptions): MemoryPlan {
  return planMemoryOf(chatglmPlanArch(config), options);
}

/** {@link planMemory} for any architecture. */
export function planMemoryOf(arch: PlanArch, options: MemoryPlanOptions): MemoryPlan {
  const { dtype, maxContext: T, batch: b } = options;
  const el = dtype === "f16" ? 2 : 4;
  const h = arch.hiddenSize, V = arch.vocabSize, { layout } = arch;
  const head = `${layout.head}.weight`, embedding = `${layout.embedding}.weight`;
  let weightsBytes = 0;
  const quant = options.quant ?? null;
  for (const p of arch.parameters) {
    if (p.name === head && options.tiedHead) continue;
    if (quant && isQuantizedWeight(p.name, quant, layout)) {
      // Packed values plus one f16 scale per row (and group).
      const [out, inp] = p.shape;
      const group = groupSizeOf(p.name.slice(0, -".weight".length), quant, layout);
      weightsBytes += quantizedBytes(out, inp, quant.bits, group);
    } else weightsBytes += p.shape.reduce((a, d) => a * d, 1) * el;
  }
  let loraBytes = 0;
  for (const m of options.adapter?.modules.values() ?? []) {
    loraBytes += (m.r * m.inFeatures + m.outFeatures * m.r) * 4;
  }
  const kvLayer = b * T * arch.kvValuesPerToken * 4; // one of k or v, one layer, f32
  const kvCacheBytes = 2 * arch.numLayers * kvLayer;
  const tokens = b * T;
  const activationBytes = tokens * arch.activationValuesPerToken * 4 + b * V * 4 + b * h * 4;
  const bindings: PlannedBinding[] = [
    ...arch.weightBindings.map((w) => ({ what: w.what, bytes: w.values * el, chunked: true })),
    { what: "KV cache (one layer's k or v)", bytes: kvLayer, chunked: false },
    // A long batched prefill runs row by row (model.ts), so one row must fit.
    ...arch.rowBindings.map((r) => ({
      what: r.what,
      bytes: T * r.values * 4,
      chunked: false,
      perRow: true,
    })),
  ];
  const software = options.software ?? options.packedWeights ?? false;
  const packed = options.packedWeights ?? false;
  const tied = options.tiedHead ?? false;
  const headBytes = V * h * el;
  let linearBytes = 0;
  for (const p of arch.parameters) {
    // int8/int4 weights live once, in the form their kernels read, whatever the adapter.
    if (quant && isQuantizedWeight(p.name, quant, layout)) continue;
    if (p.shape.length === 2 && p.name !== embedding) {
      linearBytes += p.shape[0] * p.shape[1] * el;
    }
  }
  // (weightsBytes skipped a tied head above.)
  // A float tied table is read as a buffer by the lookup and as a texture by the head.
  const tiedTwice = tied && !(quant && isQuantizedWeight(head, quant, layout));
  if (tiedTwice) linearBytes -= headBytes;
  // On a software adapter the forward reads linear weights as packed textures (same bytes).
  // Packed-only: one copy, a tied table too (its lookup reads the head's texture). Not packed
  // (trainable): buffer and texture both, once the forward packed them.
  const residentWeightsBytes = !software
    ? weightsBytes
    : packed
    ? weightsBytes
    : weightsBytes + linearBytes + (tiedTwice ? headBytes : 0);
  const largestRun = Math.max(
    headBytes,
    arch.largestLinear * el,
    options.largestStoredTensorBytes ?? 0,
  );
  // The load reads in pieces of READ_PIECE_BYTES (never more than the largest tensor): it holds
  // the piece being uploaded and READS_AHEAD being read, as mapped file pages (resident while
  // mapped, like a buffer) or in reused buffers where it reads instead. It hands them to the
  // GPU in pieces of WRITE_PIECE_BYTES, each submitted, whose staging copies the runtime recycles
  // (measured on a mid-size checkpoint: the load's peak is the read pieces and two staging
  // pieces). Weights never exist twice while loading.
  const piece = Math.min(largestRun, READ_PIECE_BYTES);
  const loadTransientBytes = (READS_AHEAD + 1) * piece + 2 * WRITE_PIECE_BYTES;
  const gpuAfterLoadBytes = residentWeightsBytes + loraBytes;
  const gpuPeakBytes = gpuAfterLoadBytes + kvCacheBytes + activationBytes;
  const runtime = options.runtimeBytes ?? RUNTIME_HOST_BYTES;
  const hostAfterLoadBytes = runtime + (software ? gpuAfterLoadBytes : 0);
  const hostLoadPeakBytes = hostAfterLoadBytes + loadTransientBytes;
  const hostPeakBytes = Math.max(hostLoadPeakBytes, runtime + (software ? gpuPeakBytes : 0));
  return {
    dtype,
    quant,
    maxContext: T,
    batch: b,
    weightsBytes,
    loraBytes,
    kvCacheBytes,
    activationBytes,
    totalBytes: weightsBytes + loraBytes + kvCacheBytes + activationBytes,
    bindings,
    software,
    residentWeightsBytes,
    loadTransientBytes,
    gpuAfterLoadBytes,
    gpuPeakBytes,
    hostAfterLoadBytes,
    hostLoadPeakBytes,
    hostPeakBytes,
  };
}

export function gib(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 2 ** 10).toFixed(1)} KiB`;
}

/** A few lines for the terminal. */
export function formatMemoryPlan(plan: MemoryPlan): string {
  return [
    `GPU memory plan (${
      plan.quant
        ? `${describeQuant(plan.quant)}, other weights ${plan.dtype}`
        : `${plan.dtype} weights`
    }, context ${plan.maxContext}, batch ${plan.batch}):`,
    `  weights ${gib(plan.weightsBytes)}, LoRA ${gib(plan.loraBytes)}, KV cache ${
      gib(plan.kvCacheBytes)
    }, activations ${gib(plan.activationBytes)}; total ${gib(plan.totalBytes)}`,
    `  GPU: ${gib(plan.gpuAfterLoadBytes)} after the load, peak ${gib(plan.gpuPeakBytes)}` +
    (plan.residentWeightsBytes !== plan.weightsBytes
      ? ` (weights held as ${gib(plan.residentWeightsBytes)})`
      : ""),
    `  host${plan.software ? " (the software GPU's memory included)" : ""}: ${
      gib(plan.hostAfterLoadBytes)
    } after the load, peak ${gib(plan.hostPeakBytes)} (the load adds up to ${
      gib(plan.loadTransientBytes)
    })`,
  ].join("\n");
}

/**
 * Throws (with the plan in the message) when a buffer that cannot be chunked exceeds the binding
 * limit, a chunked one cannot be split into buffers, or the total exceeds the given budget.
 */
export function assertPlanFits(plan: MemoryPlan, limits: GpuLimits, budgetBytes?: number): void {
  const binding = limits.maxStorageBufferBindingSize;
  const problems: string[] = [];
  for (const p of plan.bindings) {
    if (!p.chunked && p.bytes > binding) {
      problems.push(`${p.what} needs ${gib(p.bytes)} in one binding (limit ${gib(binding)})`);
    }
  }
  if (budgetBytes !== undefined && plan.totalBytes > budgetBytes) {
    problems.push(
      `total ${gib(plan.totalBytes)} exceeds the GPU memory budget of ${gib(budgetBytes)}`,
    );
  }
  if (problems.length > 0) {
    throw new Error(
      `the model does not fit this GPU: ${problems.join("; ")}.\n${formatMemoryPlan(plan)}\n` +
        "Use a smaller maxContext or batch, or f16 weights.",
    );
  }
}
