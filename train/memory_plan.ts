/**
 * The dry-run memory plan: how much GPU memory a training run needs, from the model's HF config
 * and the run's batch, before anything is loaded.
 *
 * Accounting (bytes):
 * - base weights in the storage dtype (f16 where supported, else f32); with full fine-tuning the
 *   weights are trainable and kept in f32;
 * - trainable parameters: f32 weights, f32 gradients, AdamW's m and v in f32 (16 bytes each);
 * - activations kept for the backward pass, f32 (our path keeps activations and gradients in f32,
 *   see optim/accumulate.ts). Per layer and token, what the backward of each op needs:
 *     LayerNorm 1: its input x (h) and mean/rstd (2)          — for the LN gradient
 *     a = LN1(x) (h)                                         — LoRA A / qkv weight grads
 *     q, k (after rotary) and v (3h)                         — attention backward
 *     softmax probabilities p (heads · seq per token)        — softmax backward, the big one
 *     ctx (h)          only if attention.dense is trainable  — its weight / LoRA grads
 *     LayerNorm 2: input hmid (h) and mean/rstd (2)
 *     m = LN2(hmid) (h) only if dense_h_to_4h is trainable
 *     z = h→4h pre-activation (inner)                        — GeLU backward
 *     gelu(z) (inner) only if dense_4h_to_h is trainable
 *     LoRA: x·Aᵀ (r) per targeted module                      — lora_B grads
 *   (the residual branches add LN outputs times a constant, which needs nothing stored; dropout
 *   masks are regenerated from the RNG seed instead of stored).
 *   With recompute only each layer's input (h per token) is kept, plus one layer's full set while
 *   that layer runs its backward.
 * - logits and their gradient (f32, batch · seq · vocab each) and the loss's per-row statistics;
 * - the backward's working gradients: about one layer's activations at a time;
 * - for reference, the KV cache an inference run of the same batch and length would hold.
 *
 * The Llama family (Qwen2 / Qwen2.5, Qwen3, Llama 3) keeps, per layer and token: RMSNorm 1's input
 * and 1/rms (h + 1), its output (h), q, k, v after the rotary (nh·d + 2·nkv·d; Qwen3 also q, k
 * before their norm and one 1/rms per head), the probabilities (nh · seq per token), ctx (nh·d)
 * only if o_proj trains, RMSNorm 2's input and 1/rms (h + 1), its output (h) only if gate/up
 * train, gate and up (2·inner) for the SiLU gate's backward, silu(gate)·up (inner) only if
 * down_proj trains, and LoRA's x·Aᵀ (r per targeted module). The KV cache holds nkv heads.
 */

import {
  type ChatGLMConfig,
  chatglmPlanArch,
  describeQuant,
  isTargetModule,
  LINEAR_MODULES,
  linearModuleName,
  linearShape,
  LLAMA_LINEARS,
  type LlamaConfig,
  llamaLinearShapes,
  llamaPlanArch,
  type PlanArch,
  planMemoryOf,
  type QuantSpec,
} from "../core/mod.ts";
import type { TrainConfig } from "./config.ts";

/** What the training plan needs of an architecture. */
interface TrainArch {
  numLayers: number;
  vocabSize: number;
  /** Attention heads whose probabilities the backward keeps. */
  numHeads: number;
  plan: PlanArch;
  tiedHead: boolean;
  /** An int8/int4 base has no stored head (ChatGLM's quantized layout ties it; Llama: the config). */
  quantTiedHead: boolean;
  quantization: QuantSpec | null;
  /** Linear modules of one layer (suffixes) and their full names / shapes. */
  modules: readonly string[];
  moduleName(layer: number, module: string): string;
  moduleShape(module: string): readonly [number, number];
  /** f32 values one layer keeps per token for the backward (LoRA's r not included). */
  keptPerToken(trains: ReadonlySet<string>): number;
  /** The largest weight buffers: name, element count, and whether it is an embedding table. */
  largestWeights: { name: string; values: number; table?: boolean }[];
}

function chatglmTrainArch(c: ChatGLMConfig): TrainArch {
  const h = c.hiddenSize, inner = c.innerHiddenSize;
  return {
    numLayers: c.numLayers,
    vocabSize: c.vocabSize,
    numHeads: c.numHeads,
    plan: chatglmPlanArch(c),
    // The bundled release stores lm_head (equal to the embeddings): counted as stored; its
    // quantized layout leaves it out (tied).
    tiedHead: false,
    quantTiedHead: true,
    quantization: c.quantization ?? null,
    modules: LINEAR_MODULES,
    moduleName: (l, m) => linearModuleName(l, m as (typeof LINEAR_MODULES)[number]),
    moduleShape: (m) => linearShape(c, m as (typeof LINEAR_MODULES)[number]),
    keptPerToken: (trains) =>
      h + 2 + h + 3 * h + h + 2 + inner + (trains.has("attention.dense") ? h : 0) +
      (trains.has("mlp.dense_h_to_4h") ? h : 0) + (trains.has("mlp.dense_4h_to_h") ? inner : 0),
    largestWeights: [
      { name: "transformer.word_embeddings.weight", values: c.vocabSize * h, table: true },
      { name: "lm_head.weight", values: c.vocabSize * h, table: true },
      { name: "mlp.dense_h_to_4h.weight", values: inner * h },
    ],
  };
}

function llamaTrainArch(c: LlamaConfig): TrainArch {
  const h = c.hiddenSize, inner = c.intermediateSize;
  const qo = c.numHeads * c.headDim, kvo = c.numKvHeads * c.headDim;
  const shapes = llamaLinearShapes(c);
  return {
    numLayers: c.numLayers,
    vocabSize: c.vocabSize,
    numHeads: c.numHeads,
    plan: llamaPlanArch(c),
    tiedHead: c.tieWordEmbeddings,
    quantTiedHead: c.tieWordEmbeddings,
    quantization: c.quantization,
    modules: LLAMA_LINEARS,
    moduleName: (l, m) => `model.layers.${l}.${m}`,
    moduleShape: (m) => shapes.get(`model.layers.0.${m}`)!,
    keptPerToken: (trains) =>
      h + 1 + h + qo + 2 * kvo + (c.qkNorm ? qo + kvo + c.numHeads + c.numKvHeads : 0) +
      (trains.has("self_attn.o_proj") ? qo : 0) + h + 1 +
      (trains.has("mlp.gate_proj") || trains.has("mlp.up_proj") ? h : 0) + 2 * inner +
      (trains.has("mlp.down_proj") ? inner : 0),
    largestWeights: [
      { name: "model.embed_tokens.weight", values: c.vocabSize * h, table: true },
      ...(c.tieWordEmbeddings
        ? []
        : [{ name: "lm_head.weight", values: c.vocabSize * h, table: true }]),
      { name: "mlp.gate_proj.weight", values: inner * h },
    ],
  };
}

function trainArchOf(model: ChatGLMConfig | LlamaConfig): TrainArch {
  return "modelType" in model ? llamaTrainArch(model) : chatglmTrainArch(model);
}

export interface TrainMemoryPlanInput {
  /** The model's config: ChatGLM-6B or the Llama family (with its quantization, if any). */
  model: ChatGLMConfig | LlamaConfig;
  /** Storage dtype of the frozen base weights. */
  weightDtype: "f16" | "f32";
  full: boolean;
  loraR: number;
  targetModules: readonly string[];
  /** Examples per micro-batch. */
  batchSize: number;
  /** Micro-batches summed into one optimizer step (memory holds one micro-batch; default 1). */
  gradAccumulation?: number;
  seqLen: number;
  /** Whether the run recomputes activations (`--recompute`): which total applies. */
  recompute?: boolean;
  /**
   * The run's actual adapter (from `--adapter-init` or a resumed checkpoint, whose r and modules
   * may differ from the flags): its modules' shapes are counted instead of `loraR` ×
   * `targetModules`.
   */
  adapter?: { modules: Map<string, { r: number; inFeatures: number; outFeatures: number }> };
}

export interface TrainMemoryPlanRow {
  name: string;
  bytes: number;
  detail: string;
}

export interface TrainMemoryPlan {
  input: TrainMemoryPlanInput;
  baseParams: number;
  trainableParams: number;
  /** Targeted linear modules (LoRA) — empty with full fine-tuning. */
  targetedModules: string[];
  weights: TrainMemoryPlanRow;
  trainable: TrainMemoryPlanRow;
  optimizer: TrainMemoryPlanRow;
  activations: TrainMemoryPlanRow;
  activationsRecompute: TrainMemoryPlanRow;
  logits: TrainMemoryPlanRow;
  workspace: TrainMemoryPlanRow;
  kvCache: TrainMemoryPlanRow;
  totalWithoutRecompute: number;
  totalWithRecompute: number;
  /** Largest single buffers (for the adapter's limits). */
  largest: { name: string; bytes: number }[];
}

const F32 = 4;

/** The plan input of a run's settings on `model` (the run's adapter when it has one). */
export function runPlanInput(
  config: Pick<
    TrainConfig,
    | "dtype"
    | "full"
    | "loraR"
    | "targetModules"
    | "batchSize"
    | "gradAccumulation"
    | "maxLength"
    | "recompute"
  >,
  model: ChatGLMConfig | LlamaConfig,
  adapter?: TrainMemoryPlanInput["adapter"],
): TrainMemoryPlanInput {
  return {
    model,
    weightDtype: config.dtype,
    full: config.full,
    loraR: config.loraR,
    targetModules: config.targetModules,
    batchSize: config.batchSize,
    gradAccumulation: config.gradAccumulation,
    seqLen: config.maxLength,
    recompute: config.recompute,
    adapter,
  };
}

export function trainMemoryPlan(input: TrainMemoryPlanInput): TrainMemoryPlan {
  const c = input.model;
  const { batchSize: b, seqLen: s } = input;
  if (!(Number.isInteger(b) && b >= 1)) throw new RangeError(`batch size must be >= 1 (got ${b})`);
  if (!(Number.isInteger(s) && s >= 1)) {
    throw new RangeError(`sequence length must be >= 1 (got ${s})`);
  }
  const arch = trainArchOf(c);
  const L = arch.numLayers, heads = arch.numHeads;
  const numel = (shape: readonly number[]) => shape.reduce((x, y) => x * y, 1);
  const headName = `${arch.plan.layout.head}.weight`;
  const baseParams = arch.plan.parameters.reduce(
    (n, p) => n + (arch.tiedHead && p.name === headName ? 0 : numel(p.shape)),
    0,
  );
  const wBytes = input.full ? F32 : input.weightDtype === "f16" ? 2 : 4;

  // which linear modules train (LoRA targets, or all with --full)
  const targeted: string[] = [];
  let loraParams = 0;
  let loraRanks = 0;
  const trainsModule = new Set<string>();
  for (let l = 0; l < L; l++) {
    for (const m of arch.modules) {
      const name = arch.moduleName(l, m);
      const real = input.adapter?.modules.get(name);
      const lora = !input.full &&
        (input.adapter ? real !== undefined : isTargetModule(name, input.targetModules));
      if (input.full || lora) trainsModule.add(m);
      if (!lora) continue;
      targeted.push(name);
      const [out, inF] = arch.moduleShape(m);
      const r = real?.r ?? input.loraR;
      loraParams += r * ((real?.inFeatures ?? inF) + (real?.outFeatures ?? out));
      loraRanks += r;
    }
  }
  if (!input.full && targeted.length === 0) {
    throw new Error(
      input.adapter
        ? "the adapter has no module of this model"
        : `target modules ${
          JSON.stringify(input.targetModules)
        } match no linear module of the model (its modules: ${
          arch.modules.map((m) => m.split(".").pop()).join(", ")
        })`,
    );
  }
  const trainableParams = input.full ? baseParams : loraParams;
  const loraPerLayerR = input.full ? 0 : loraRanks / L;

  // activations kept per layer per token (f32 values), see the module comment
  const tokens = b * s;
  const perToken = arch.keptPerToken(trainsModule) + loraPerLayerR;
  const probsPerLayer = b * heads * s * s * F32;
  const perLayer = tokens * perToken * F32 + probsPerLayer;
  const layerInputs = L * tokens * arch.plan.hiddenSize * F32;
  const logitsBytes = tokens * arch.vocabSize * F32;

  const row = (name: string, bytes: number, detail: string): TrainMemoryPlanRow => ({
    name,
    bytes,
    detail,
  });
  // An int8/int4 base (config quantization_bit): packed, frozen (core/quant); LoRA only.
  const quant = arch.quantization;
  if (quant && input.full) throw new Error("full fine-tuning needs float weights, not int8/int4");
  const weights = quant
    ? row(
      "base weights",
      planMemoryOf(arch.plan, {
        dtype: input.weightDtype,
        maxContext: 1,
        batch: 1,
        quant,
        tiedHead: arch.quantTiedHead,
      }).weightsBytes,
      `${fmtCount(baseParams)} params: ${describeQuant(quant)}, others ${input.weightDtype}`,
    )
    : row(
      "base weights",
      baseParams * wBytes,
      `${fmtCount(baseParams)} params × ${wBytes} B (${
        input.full ? "f32, trainable" : input.weightDtype
      })`,
    );
  const trainable = row(
    input.full ? "trainable: grads" : "LoRA weights + grads",
    input.full ? trainableParams * F32 : trainableParams * 2 * F32,
    input.full
      ? `${fmtCount(trainableParams)} f32 gradients (weights counted above)`
      : `${fmtCount(trainableParams)} params in ${targeted.length} modules (${
        loraRankText(input)
      }), f32 weight + grad`,
  );
  const optimizer = row(
    "AdamW m + v",
    trainableParams * 2 * F32,
    `${fmtCount(trainableParams)} × 2 × f32`,
  );
  const activations = row(
    "activations (no recompute)",
    L * perLayer,
    `${L} layers × ${fmtBytes(perLayer)} (${perToken} f32/token + attention probs ${
      fmtBytes(probsPerLayer)
    })`,
  );
  const activationsRecompute = row(
    "activations (recompute)",
    layerInputs + perLayer,
    `${L} layer inputs ${fmtBytes(layerInputs)} + one layer's set ${fmtBytes(perLayer)}`,
  );
  const logits = row(
    "logits + grad + loss",
    2 * logitsBytes + tokens * 2 * F32,
    `2 × ${b}·${s}·${arch.vocabSize} f32 + row max/sum`,
  );
  const workspace = row("backward workspace", perLayer, "about one layer's activation gradients");
  const kv = arch.plan.kvValuesPerToken;
  const kvCache = row(
    "KV cache (inference, ref.)",
    2 * L * tokens * kv * (input.weightDtype === "f16" ? 2 : 4),
    `2 × ${L} layers × ${b}·${s}·${kv} (${input.weightDtype})`,
  );
  const common = weights.bytes + trainable.bytes + optimizer.bytes + logits.bytes + workspace.bytes;

  // Bytes as stored: the block linears int8/int4 on a quantized base, the tables too with
  // `,embeddings`, everything else in the weight dtype.
  const storedBytes = (w: { values: number; table?: boolean }) =>
    quant && (w.table ? quant.embeddings : true) ? (w.values * quant.bits) / 8 : w.values * wBytes;
  const largest = [
    ...arch.largestWeights.map((w) => ({ name: w.name, bytes: storedBytes(w) })),
    { name: "logits (f32)", bytes: logitsBytes },
    { name: "attention probs of one layer (f32)", bytes: probsPerLayer },
  ].sort((x, y) => y.bytes - x.bytes);

  return {
    input,
    baseParams,
    trainableParams,
    targetedModules: targeted,
    weights,
    trainable,
    optimizer,
    activations,
    activationsRecompute,
    logits,
    workspace,
    kvCache,
    totalWithoutRecompute: common + activations.bytes,
    totalWithRecompute: common + activationsRecompute.bytes,
    largest,
  };
}

export function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)} ${units[i]}`;
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** Warnings for buffers the adapter cannot hold in one binding or one buffer. */
export function limitWarnings(
  plan: TrainMemoryPlan,
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number },
): string[] {
  const out: string[] = [];
  for (const t of plan.largest) {
    if (t.bytes > limits.maxBufferSize) {
      out.push(
        `${t.name}: ${fmtBytes(t.bytes)} exceeds maxBufferSize ${fmtBytes(limits.maxBufferSize)} ` +
          `— split into ${Math.ceil(t.bytes / limits.maxBufferSize)} buffers (or lower the batch)`,
      );
    } else if (t.bytes > limits.maxStorageBufferBindingSize) {
      out.push(
        `${t.name}: ${fmtBytes(t.bytes)} exceeds maxStorageBufferBindingSize ` +
          `${fmtBytes(limits.maxStorageBufferBindingSize)} — bound in ` +
          `${Math.ceil(t.bytes / limits.maxStorageBufferBindingSize)} chunks`,
      );
    }
  }
  return out;
}

/** "r 8", or the ranks of a loaded adapter ("r 4-8" when they differ). */
function loraRankText(input: TrainMemoryPlanInput): string {
  if (!input.adapter) return `r ${input.loraR}`;
  const ranks = [...input.adapter.modules.values()].map((m) => m.r);
  const lo = Math.min(...ranks), hi = Math.max(...ranks);
  return lo === hi ? `r ${lo}` : `r ${lo}-${hi}`;
}

/** Batch, accumulation and length as the run uses them: "batch 4 × 2 accumulation, length 128". */
function batchText(i: TrainMemoryPlanInput): string {
  const acc = i.gradAccumulation ?? 1;
  return `batch ${i.batchSize}${acc > 1 ? ` × ${acc} accumulation` : ""}, length ${i.seqLen}`;
}

/** What a run trains: "LoRA r 8 on query_key_value (2 modules)" or "full fine-tuning". */
function trainsText(plan: TrainMemoryPlan): string {
  const i = plan.input;
  if (i.full) return "full fine-tuning";
  const names = i.adapter
    ? [...new Set(plan.targetedModules.map((n) => n.split(".").slice(-1)[0]))]
    : i.targetModules;
  return `LoRA ${loraRankText(i)} on ${names.join(", ")} (${plan.targetedModules.length} modules)`;
}

/**
 * The two lines a training run prints before it starts: its own batch, accumulation and length,
 * and what it trains (the inference plan's "context, batch 1" says nothing about a training run).
 */
export function formatTrainPlanSummary(plan: TrainMemoryPlan): string {
  const i = plan.input;
  const total = i.recompute ? plan.totalWithRecompute : plan.totalWithoutRecompute;
  return [
    `GPU memory plan (training: ${batchText(i)}, ${trainsText(plan)}, ${
      i.full ? "f32" : i.weightDtype
    } weights${i.recompute ? ", recompute" : ""}):`,
    `  weights ${fmtBytes(plan.weights.bytes)}, ${
      i.full ? "gradients" : `LoRA ${fmtCount(plan.trainableParams)} params + grads`
    } ${fmtBytes(plan.trainable.bytes)}, AdamW ${fmtBytes(plan.optimizer.bytes)}, activations ${
      fmtBytes(i.recompute ? plan.activationsRecompute.bytes : plan.activations.bytes)
    }, logits ${fmtBytes(plan.logits.bytes)}; at most ${
      fmtBytes(total)
    } (every example at full length, all positions to the loss)`,
  ].join("\n");
}

/** The plan as a plain-text table. */
export function formatTrainMemoryPlan(plan: TrainMemoryPlan, title: string): string {
  const rows = [
    plan.weights,
    plan.trainable,
    plan.optimizer,
    plan.activations,
    plan.activationsRecompute,
    plan.logits,
    plan.workspace,
  ];
  const i = plan.input;
  const lines = [
    `memory plan: ${title}`,
    `  ${batchText(i)} (memory holds one micro-batch), ${trainsText(plan)}, weights ${
      i.full ? "f32" : i.weightDtype
    }`,
    "",
    `  ${"part".padEnd(28)} ${"bytes".padStart(11)}  detail`,
  ];
  for (const r of rows) {
    lines.push(`  ${r.name.padEnd(28)} ${fmtBytes(r.bytes).padStart(11)}  ${r.detail}`);
  }
  lines.push(`  ${"-".repeat(28)} ${"-".repeat(11)}`);
  lines.push(
    `  ${"total without recompute".padEnd(28)} ${
      fmtBytes(plan.totalWithoutRecompute).padStart(11)
    }`,
  );
  lines.push(
    `  ${"total with recompute".padEnd(28)} ${fmtBytes(plan.totalWithRecompute).padStart(11)}`,
  );
  lines.push(
    `  ${plan.kvCache.name.padEnd(28)} ${
      fmtBytes(plan.kvCache.bytes).padStart(11)
    }  ${plan.kvCache.detail}`,
  );
  return lines.join("\n");
}
