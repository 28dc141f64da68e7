/**
 * Loading ChatGLM-6B with int8/int4 weights: a pre-quantized checkpoint in the original's layout
 * (config `quantization_bit`, see core/quant/format.ts), or a full-precision one quantized at load
 * (`loadModel(dir, { quantize: 8 | 4 })`) with the original's f16 arithmetic. Checks every tensor's
 * name, dtype and shape before uploading anything; then streams tensor by tensor (a quantized
 * weight waits only for its scale), so host memory stays near one tensor. The tied `lm_head`
 * (absent from the checkpoint) is the embedding tensor itself.
 *
 * The checks and the upload read an architecture's table (`QuantArch`: its layout from
 * core/quant/format.ts and its parameter table), so the Llama family loads through the same code
 * (`llamaQuantArch` in ../llama/load.ts); `chatglmQuantArch` is ChatGLM-6B's.
 */

import type { Gpu } from "../../gpu/device.ts";
import { type Checkpoint, iterateTensors } from "../../io/checkpoint.ts";
import { bytesToF32, convertBytes, viewAs } from "../../io/dtype.ts";
import { createProgress } from "../../../base/mod.ts";
import { releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import { checkQuantShape, quantizeF16, storedBytes } from "../../quant/arith.ts";
import {
  CHATGLM_QUANT_LAYOUT,
  describeQuant,
  groupSizeOf,
  isQuantizedWeight,
  type QuantLayout,
  type QuantSpec,
  storedShapes,
} from "../../quant/format.ts";
import { type QuantDesign, uploadQuantWeight } from "../../quant/gpu_weight.ts";
import type { ChatGLMConfig } from "./config.ts";
import { isIgnoredTensor, parameterTable } from "./params.ts";
import { ChunkReader, type LoadProgress, type WeightDtype } from "./weights.ts";

export { describeQuant };

/**
 * What the quantized load needs to know of an architecture: its layout table (core/quant/format.ts),
 * its parameter table, the stored tensors it skips, and whether the head may be tied.
 */
export interface QuantArch {
  layout: QuantLayout;
  parameters: readonly { name: string; shape: number[] }[];
  isIgnored(name: string): boolean;
  /** false: the checkpoint must store its own `lm_head.weight`. */
  tieWordEmbeddings?: boolean | null;
}

/** ChatGLM-6B's {@link QuantArch}. */
export function chatglmQuantArch(config: ChatGLMConfig): QuantArch {
  return {
    layout: CHATGLM_QUANT_LAYOUT,
    parameters: parameterTable(config),
    isIgnored: (name) => isIgnoredTensor(name, config),
    tieWordEmbeddings: config.tieWordEmbeddings,
  };
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** What `--quantize` / `loadModel({ quantize })` asks for. */
export type QuantizeOption = 4 | 8 | {
  bits: 4 | 8;
  /** Input columns per scale (default: per row, the original's layout). */
  groupSize?: number | null;
  /** Quantize the embeddings and the tied head too (the original's `quantization_embeddings`). */
  embeddings?: boolean;
};

/** The spec of a quantize option. */
export function quantSpecOf(q: QuantizeOption): QuantSpec {
  if (typeof q === "number") return { bits: q, groupSize: null, embeddings: false };
  return { bits: q.bits, groupSize: q.groupSize ?? null, embeddings: q.embeddings ?? false };
}

/** How a load quantizes: the checkpoint's own spec, or the one asked for (never both differing). */
export function resolveQuantization(
  config: { quantization?: QuantSpec | null },
  quantize: QuantizeOption | undefined,
  source: string,
): { spec: QuantSpec; prequantized: boolean } | null {
  const stored = config.quantization ?? null;
  if (stored) {
    if (quantize !== undefined) {
      const want = quantSpecOf(quantize);
      if (
        want.bits !== stored.bits || want.groupSize !== stored.groupSize ||
        want.embeddings !== stored.embeddings
      ) {
        throw new Error(
          `${source}: the checkpoint is already quantized (${
            describeQuant(stored)
          }); it cannot be ` +
            `re-quantized as ${
              describeQuant(want)
            } (quantize its full-precision checkpoint instead)`,
        );
      }
    }
    return { spec: stored, prequantized: true };
  }
  if (quantize === undefined) return null;
  const spec = quantSpecOf(quantize);
  if (spec.bits !== 4 && spec.bits !== 8) {
    throw new Error(`quantize: ${spec.bits} bits is not supported (4 or 8)`);
  }
  if (
    spec.groupSize !== null &&
    (!Number.isInteger(spec.groupSize) || spec.groupSize < 8 || spec.groupSize % 8 !== 0)
  ) {
    throw new Error(`quantize: group size ${spec.groupSize} must be a positive multiple of 8`);
  }
  return { spec, prequantized: false };
}

/**
 * What a loaded model's weights are and take on the GPU: "int4 (per-row scales), 3.6 GiB" or
 * "f16, 12.5 GiB" (for logs, /v1/models, the web page).
 */
export function describeModelWeights(model: {
  // Any architecture's model (every config has vocabSize and its quantization).
  config: { vocabSize: number; quantization?: QuantSpec | null };
  parameters(): Map<string, Tensor>;
}): string {
  let bytes = 0;
  const floats = new Set<string>();
  for (const t of new Set(model.parameters().values())) {
    bytes += t.byteLength;
    // Scales: one f16 per row and group, counted as the checkpoint stores them.
    if (t.quant) bytes += t.shape[0] * (t.shape[1] / t.quant.groupSize) * 2;
    else floats.add(t.dtype);
  }
  const gib = (bytes / 2 ** 30).toFixed(bytes >= 2 ** 30 ? 2 : 4);
  const q = model.config.quantization;
  const rest = [...floats].join("/");
  return `${q ? `${describeQuant(q)} (other weights ${rest})` : rest}, ${gib} GiB`;
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

/**
 * Checks the checkpoint's tensors against the quantized layout: names, shapes, dtypes (I8
 * weights, F16 scales of the right length, float everything else). Throws naming the tensor and
 * the rule.
 */
export function checkQuantizedCheckpoint(
  config: ChatGLMConfig,
  ckpt: Checkpoint,
  spec: QuantSpec,
  prequantized: boolean,
): { tied: boolean } {
  return checkQuantizedWeights(chatglmQuantArch(config), ckpt, spec, prequantized);
}

/** {@link checkQuantizedCheckpoint} for any architecture. */
export function checkQuantizedWeights(
  arch: QuantArch,
  ckpt: Checkpoint,
  spec: QuantSpec,
  prequantized: boolean,
): { tied: boolean } {
  const problems: string[] = [];
  const seen = new Set<string>();
  const expected = new Map<string, { shape: number[]; dtype: "float" | "I8" | "F16" }>();
  // Quantizing at load: every weight must take the spec (group size dividing its input width)
  // before anything is uploaded.
  const unquantizable: string[] = [];
  for (const p of arch.parameters) {
    if (isQuantizedWeight(p.name, spec, arch.layout)) {
      const [out, inp] = p.shape;
      const module = p.name.slice(0, -".weight".length);
      const group = groupSizeOf(module, spec, arch.layout);
      try {
        checkQuantShape(p.name, spec.bits, out, inp, group ?? inp);
      } catch (err) {
        (prequantized ? problems : unquantizable).push((err as Error).message);
        continue;
      }
      if (!prequantized) {
        expected.set(p.name, { shape: p.shape, dtype: "float" });
        continue;
      }
      const s = storedShapes(out, inp, spec.bits, group);
      expected.set(p.name, { shape: s.weight, dtype: "I8" });
      expected.set(`${module}.weight_scale`, { shape: s.scale, dtype: "F16" });
    } else expected.set(p.name, { shape: p.shape, dtype: "float" });
  }
  if (unquantizable.length > 0) {
    throw new Error(
      `${ckpt.dir}: cannot quantize the weights as ${describeQuant(spec)}: ` +
        unquantizable.slice(0, 4).join("; ") +
        (unquantizable.length > 4 ? `; and ${unquantizable.length - 4} more` : ""),
    );
  }
  const hasHead = ckpt.locate.has("lm_head.weight");
  if (!hasHead && arch.tieWordEmbeddings === false) {
    problems.push("missing tensor lm_head.weight (config.json says tie_word_embeddings: false)");
  }
  // An absent head is the embedding table itself (the original's pre-quantized releases).
  const tied = !hasHead;
  if (tied) {
    expected.delete("lm_head.weight");
    expected.delete("lm_head.weight_scale");
  }
  for (const name of ckpt.tensorNames) {
    if (arch.isIgnored(name)) continue;
    const want = expected.get(name);
    const t = ckpt.locate.get(name)!.tensor;
    if (!want) {
      problems.push(`unexpected tensor ${name} ${shapeText(t.shape)}`);
      continue;
    }
    seen.add(name);
    const rule = name.endsWith(".weight_scale")
      ? " (one f16 scale per output row" +
        (spec.groupSize ? ` and group of ${spec.groupSize}` : "") +
        ")"
      : want.dtype === "I8"
      ? ` (int${spec.bits}: ${
        spec.bits === 4 ? "two columns packed per byte" : "one byte per weight"
      })`
      : "";
    if (
      want.shape.length !== t.shape.length || want.shape.some((v, i) => v !== t.shape[i])
    ) {
      problems.push(
        `${name} has shape ${shapeText(t.shape)}, expected ${shapeText(want.shape)}${rule}`,
      );
    }
    const okDtype = want.dtype === "float"
      ? ["F32", "F16", "BF16"].includes(t.dtype)
      : t.dtype === want.dtype;
    if (!okDtype) {
      problems.push(
        `${name} is stored as ${t.dtype}, expected ${
          want.dtype === "float" ? "F32, F16 or BF16" : want.dtype
        }${rule}`,
      );
    }
  }
  for (const name of expected.keys()) if (!seen.has(name)) problems.push(`missing tensor ${name}`);
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ");
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : "";
    throw new Error(
      `${ckpt.dir}: weights do not match the ${
        describeQuant(spec)
      } layout of config.json: ${shown}${more}`,
    );
  }
  return { tied };
}

export interface LoadQuantizedOptions {
  dtype: WeightDtype;
  spec: QuantSpec;
  prequantized: boolean;
  /** Storage of the quantized weights (default: textures on software adapters, else buffers). */
  design?: QuantDesign;
  onProgress?: (p: LoadProgress) => void;
  progressBar?: boolean;
}

/**
 * Uploads a quantized ChatGLM model's parameters keyed by checkpoint name (quantized weights as
 * q8/q4 tensors; `lm_head.weight` is the embedding tensor when tied).
 */
export async function uploadQuantizedChatGLM(
  gpu: Gpu,
  ckpt: Checkpoint,
  config: ChatGLMConfig,
  options: LoadQuantizedOptions,
): Promise<Map<string, Tensor>> {
  return await uploadQuantizedWeights(gpu, ckpt, chatglmQuantArch(config), options);
}

/**
 * {@link uploadQuantizedChatGLM} for any architecture: parameters keyed by checkpoint name,
 * quantized weights as q8/q4 tensors, `lm_head.weight` the embedding tensor when tied.
 */
export async function uploadQuantizedWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  arch: QuantArch,
  options: LoadQuantizedOptions,
): Promise<Map<string, Tensor>> {
  const { spec, prequantized } = options;
  const { layout } = arch;
  const EMB = `${layout.embedding}.weight`, HEAD = `${layout.head}.weight`;
  const { tied } = checkQuantizedWeights(arch, ckpt, spec, prequantized);
  const wanted = (name: string) => !arch.isIgnored(name) && !(tied && name === HEAD);
  const totalBytes = ckpt.tensorNames.filter(wanted)
    .reduce((n, name) => n + ckpt.locate.get(name)!.tensor.byteLength, 0);
  const label = `loading ${describeQuant(spec)} weights`;
  const bar = (options.progressBar ?? Deno.stderr.isTerminal())
    ? createProgress({ label, total: totalBytes, unit: "B" })
    : undefined;
  const tensors = new Map<string, Tensor>();
  // A stored quantized weight waits for its scale (or the scale for its weight).
  const pending = new Map<string, { q?: Int8Array; scales?: Uint16Array }>();
  let loadedBytes = 0;
  const digests = new Map<string, string>();
  let tiedLate = false;
  const floatTensor = (data: Uint8Array, dtype: string, shape: number[], name: string) =>
    options.dtype === "f16"
      ? uploadTensor(
        gpu,
        viewAs(convertBytes(data, dtype as "F32", "F16"), Uint16Array),
        shape,
        "f16",
        {
          label: name,
        },
      )
      : uploadTensor(gpu, bytesToF32(data, dtype as "F32"), shape, "f32", { label: name });
  const staging = new ChunkReader();
  const shapes = new Map(arch.parameters.map((p) => [p.name, p.shape]));
  const shapeOf = (name: string) => shapes.get(name)!;
  try {
    for await (const t of iterateTensors(ckpt, { names: wanted })) {
      loadedBytes += t.data.byteLength;
      bar?.tick(t.data.byteLength);
      options.onProgress?.({ loadedBytes, totalBytes, tensor: t.name });
      // The original's full-precision release stores an lm_head equal to the embeddings: keep
      // one tensor (what tying means), found by content, in either order.
      if (
        !prequantized && arch.tieWordEmbeddings !== false && (t.name === EMB || t.name === HEAD)
      ) {
        const digest = await sha256(t.data);
        const other = t.name === EMB ? HEAD : EMB;
        const same = digests.get(other) === digest;
        digests.set(t.name, digest);
        if (same && t.name === HEAD) {
          tensors.set(HEAD, tensors.get(EMB)!);
          continue;
        }
        if (same) tiedLate = true; // the head came first: replaced by the embeddings below
      }
      const isScale = t.name.endsWith(".weight_scale");
      const weightName = isScale ? t.name.replace(/_scale$/, "") : t.name;
      if (isQuantizedWeight(weightName, spec, layout)) {
        const module = weightName.slice(0, -".weight".length);
        const group = groupSizeOf(module, spec, layout);
        const [out, inp] = shapeOf(weightName);
        if (prequantized) {
          const p = pending.get(module) ?? {};
          if (isScale) p.scales = viewAs(t.data, Uint16Array);
          else p.q = new Int8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
          pending.set(module, p);
          if (p.q && p.scales) {
            tensors.set(
              weightName,
              uploadQuantWeight(gpu, {
                bits: spec.bits,
                rows: out,
                cols: inp,
                groupSize: group ?? inp,
                stored: p.q,
                scales: p.scales,
              }, { design: options.design, label: module }),
            );
            pending.delete(module);
          }
        } else {
          const w16 = viewAs(convertBytes(t.data, t.dtype, "F16"), Uint16Array);
          const m = quantizeF16(w16, out, inp, spec.bits, group ?? inp, weightName);
          tensors.set(
            weightName,
            uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, {
              design: options.design,
              label: module,
            }),
          );
        }
      } else tensors.set(t.name, floatTensor(t.data, t.dtype, t.shape, t.name));
      if (tiedLate && t.name === EMB) {
        releaseTensor(tensors.get(HEAD)!);
        tensors.set(HEAD, tensors.get(EMB)!);
        tiedLate = false;
      }
      // Let the driver copy the upload out of its staging memory as the load goes (as the float
      // loader does): without it a 6B int4 model's staging copies piled up until the first
      // forward, which then held the weights twice (4.3 → 7.9 GB RSS measured at full size).
      await staging.flush(gpu, t.data.byteLength);
    }
    if (tied) tensors.set(HEAD, tensors.get(EMB)!);
  } catch (err) {
    for (const t of new Set(tensors.values())) releaseTensor(t);
    throw err;
  } finally {
    bar?.done();
  }
  gpu.checkErrors();
  return tensors;
}
