/**
 * `--dry-run` of infer and serve: the memory plan of a model directory from its config.json alone
 * (no weights, no tokenizer, no GPU), for f16 weights and for int8 and int4 weights side by side,
 * each as GPU memory after the load and at a full-context step's peak, and host memory at its
 * peak on a hardware GPU and on a software adapter (whose GPU memory is host memory). Any
 * architecture `loadModel` takes: the plan's shapes come from the architecture's table.
 */

import { readJsonFile } from "../../base/mod.ts";
import { type ChatGLMConfig, readChatGLMConfig } from "./chatglm/config.ts";
import {
  chatglmPlanArch,
  formatMemoryPlan,
  gib,
  type MemoryPlan,
  type PlanArch,
  planMemoryOf,
} from "./chatglm/memory_plan.ts";
import {
  describeQuant,
  type QuantizeOption,
  quantSpecOf,
  resolveQuantization,
} from "./chatglm/quantized.ts";
import { defaultWeightDtype, type WeightDtype } from "./chatglm/weights.ts";
import { type LlamaConfig, readLlamaConfig } from "./llama/config.ts";
import { defaultLlamaContext } from "./llama/load.ts";
import { llamaPlanArch } from "./llama/memory_plan.ts";
import { modelTypeOf } from "./load.ts";
import { groupSizeOf, isQuantizedWeight, type QuantSpec } from "../quant/format.ts";

export interface DryRunOptions {
  /** Context the plan reserves (default: what a load takes by default). */
  maxContext?: number;
  /** Rows of KV cache (default 1; serve: its --max-concurrent). */
  batch?: number;
  /**
   * The run's float dtype (default: what a load takes by default on a GPU with shader-f16, f16
   * for every architecture, `defaultWeightDtype`). The f16 / int8 / int4 rows keep other weights
   * f16.
   */
  dtype?: WeightDtype;
  /** The run's --quantize: planned beside f16 / int8 / int4. */
  quantize?: QuantizeOption;
}

/** One row of the comparison: a weight format's plan on a hardware GPU and on a software one. */
export interface DryRunRow {
  label: string;
  /** The float weights' dtype (all of them, or those left unquantized). */
  dtype: WeightDtype;
  quant: QuantSpec | null;
  hardware: MemoryPlan;
  software: MemoryPlan;
}

export interface DryRunReport {
  modelType: string;
  /** Parameters as stored (a tied head counted once). */
  parameters: number;
  maxContext: number;
  batch: number;
  rows: DryRunRow[];
  text: string;
}

/** The int4 group size planned by default: 128 (the usual one) where it divides every width. */
const INT4_GROUP = 128;

/** The shapes, default context, stored quantization and a one-line description of `dir`'s model. */
async function describeModel(dir: string): Promise<{
  modelType: string;
  arch: PlanArch;
  maxContext: number;
  tiedHead: boolean;
  stored: QuantSpec | null;
  /** A load packs float linear weights into textures (one copy on a software adapter). */
  packsAtLoad: boolean;
  summary: string;
}> {
  const modelType = await modelTypeOf(dir);
  if (modelType === "chatglm") {
    const c = await readChatGLMConfig(dir);
    return {
      modelType,
      arch: chatglmPlanArch(c),
      maxContext: c.maxSequenceLength,
      // The release stores lm_head (equal to the embeddings): planned as stored.
      tiedHead: false,
      stored: c.quantization ?? null,
      packsAtLoad: true,
      summary: `${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} heads, MLP ` +
        `${c.innerHiddenSize}, vocabulary ${c.vocabSize}`,
    };
  }
  const c = await readLlamaConfig(dir);
  return {
    modelType,
    arch: llamaPlanArch(c),
    maxContext: defaultLlamaContext(c),
    tiedHead: c.tieWordEmbeddings,
    stored: c.quantization,
    // loadLlamaModel uploads float weights as buffers; the forward packs textures beside them.
    packsAtLoad: false,
    summary:
      `${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} query / ${c.numKvHeads} ` +
      `key-value heads of ${c.headDim}, MLP ${c.intermediateSize}, vocabulary ${c.vocabSize}, ` +
      `output layer ${c.tieWordEmbeddings ? "tied to the embeddings" : "untied"}`,
  };
}

/** Whether `group` divides the input width of every weight `spec` quantizes. */
function groupFits(arch: PlanArch, spec: QuantSpec): boolean {
  return arch.parameters.every((p) => {
    if (!isQuantizedWeight(p.name, spec, arch.layout)) return true;
    const g = groupSizeOf(p.name.slice(0, -".weight".length), spec, arch.layout);
    return g === null || p.shape[1] % g === 0;
  });
}

/**
 * The quantized formats a dry run plans beside float weights: int8 per row, and int4 with group
 * size 128 (the usual one) where it divides every width, else per row.
 */
export function plannedQuantFormats(arch: PlanArch): QuantSpec[] {
  const int4: QuantSpec = { bits: 4, groupSize: INT4_GROUP, embeddings: false };
  return [quantSpecOf(8), groupFits(arch, int4) ? int4 : quantSpecOf(4)];
}

/** The planner's shapes of a parsed config of either architecture. */
export function planArchOf(config: ChatGLMConfig | LlamaConfig): PlanArch {
  return "modelType" in config ? llamaPlanArch(config) : chatglmPlanArch(config);
}

/** Plans `dir`'s model (config.json only) for f16, int8 and int4 weights and the run's choice. */
export async function dryRunPlans(dir: string, options: DryRunOptions = {}): Promise<DryRunReport> {
  const root = dir.replace(/\/+$/, "") || dir;
  // Nothing but config.json is read: say so when it is missing, before anything else.
  await readJsonFile(`${root}/config.json`, {
    notFoundHint: "--dry-run needs the model directory's config.json (weights are not read)",
  });
  const m = await describeModel(root);
  const { arch } = m;
  const maxContext = options.maxContext ?? m.maxContext;
  const batch = options.batch ?? 1;
  // A load's default on a GPU with shader-f16, the same for every architecture.
  const runDtype = options.dtype ?? defaultWeightDtype({ hasF16: true });
  const tiedHead = m.tiedHead;
  let parameters = 0;
  for (const p of arch.parameters) {
    if (tiedHead && p.name === `${arch.layout.head}.weight`) continue;
    parameters += p.shape.reduce((a, d) => a * d, 1);
  }
  const resolved = resolveQuantization({ quantization: m.stored }, options.quantize, root);
  // f16, int8 and int4 (other weights f16), then the run as asked when it is none of those.
  const formats: { dtype: WeightDtype; quant: QuantSpec | null }[] = resolved?.prequantized
    ? [] // stored: the one way it loads
    : [null, ...plannedQuantFormats(arch)].map((quant) => ({ dtype: "f16", quant }));
  const asked = { dtype: runDtype, quant: resolved?.spec ?? null };
  const same = (a: typeof asked, b: typeof asked) =>
    a.dtype === b.dtype &&
    (a.quant === null ? b.quant === null : b.quant !== null && a.quant.bits === b.quant.bits &&
      a.quant.groupSize === b.quant.groupSize && a.quant.embeddings === b.quant.embeddings);
  if (!formats.some((f) => same(f, asked))) formats.push(asked);
  // The largest stored tensor (the load reads it whole): in the checkpoint's usual bf16/f16.
  const largestStored = Math.max(
    ...arch.parameters.map((p) => p.shape.reduce((a, d) => a * d, 1) * 2),
  );
  const plan = (f: typeof asked, software: boolean) =>
    planMemoryOf(arch, {
      dtype: f.dtype,
      maxContext,
      batch,
      tiedHead,
      quant: f.quant,
      software,
      packedWeights: software && m.packsAtLoad,
      largestStoredTensorBytes: largestStored,
    });
  const rows: DryRunRow[] = formats.map((f) => ({
    label: f.quant
      ? `${describeQuant(f.quant)}${f.dtype === "f16" ? "" : `, other weights ${f.dtype}`}`
      : f.dtype,
    ...f,
    hardware: plan(f, false),
    software: plan(f, true),
  }));
  const chosen = rows.find((r) => same(r, asked))!;
  const count = parameters.toLocaleString("en-US");
  const billions = parameters >= 1e8
    ? `${(parameters / 1e9).toFixed(2)}B`
    : `${(parameters / 1e6).toFixed(2)}M`;
  const col = (s: string, w: number) => s.padStart(w);
  const lines = [
    `dry run (config.json only; no weights, tokenizer or GPU used): ${root} (${m.modelType})`,
    `  parameters ${count} (${billions}): ${m.summary}`,
    `  context ${maxContext}, batch ${batch}; the int8/int4 rows keep the other weights in f16`,
    "",
    `  ${"weights".padEnd(34)}${col("weights", 11)}${col("GPU after load", 16)}${
      col("GPU peak", 11)
    }` +
    `${col("host peak", 11)}${col("host peak (software GPU)", 26)}`,
    ...rows.map((r) =>
      `  ${r.label.padEnd(34)}${col(gib(r.hardware.weightsBytes), 11)}${
        col(gib(r.hardware.gpuAfterLoadBytes), 16)
      }${col(gib(r.hardware.gpuPeakBytes), 11)}${col(gib(r.hardware.hostPeakBytes), 11)}${
        col(gib(r.software.hostPeakBytes), 26)
      }`
    ),
    "",
    "  (host peak: a hardware GPU holds the weights, the host the runtime and one tensor being read;",
    "  on a software adapter such as llvmpipe the GPU's memory is host memory.)",
    "",
    `the run as asked (${chosen.label}), on a hardware GPU:`,
    formatMemoryPlan(chosen.hardware),
  ];
  return { modelType: m.modelType, parameters, maxContext, batch, rows, text: lines.join("\n") };
}
