/**
 * Writes a quantized copy of a model directory (what `deno task quantize` does), in the layout of
 * its architecture's table (format.ts): the block linears as int8/int4 + f16 `weight_scale`,
 * `lm_head.weight` left out when tied, config.json with the architecture's
 * quantization keys (ChatGLM: the original's `quantization_bit` and our group-size key; the Llama
 * family: our `medglm_quantization`), the tokenizer and other non-weight files copied. The other
 * float tensors are f16 for ChatGLM (its releases' layout) and stay as stored (bf16, f16 or f32)
 * for the Llama family, so that the written model equals the one quantized at load. A torch
 * `.bin` zip (ChatGLM's default, like THUDM's `chatglm-6b-int4` / `-int8` releases) or
 * safetensors (the Llama family's default).
 *
 * Streaming: the writer asks for each tensor when it reaches it, which reads and quantizes that
 * one tensor (host memory ≈ one tensor). Atomic: everything goes to a temporary sibling
 * directory, renamed to `out` at the end; an existing non-empty `out` is refused.
 */

import { type Checkpoint, openCheckpoint, readTensor } from "../io/checkpoint.ts";
import { convertBytes, type Dtype, type FloatDtype, viewAs } from "../io/dtype.ts";
import { createProgress, writeJsonAtomic } from "../../base/mod.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { writeTorchStateDict } from "../io/torch_writer.ts";
import { checkQuantShape, type QuantizedMatrix, quantizeF16, storedBytes } from "./arith.ts";
import {
  describeQuant,
  groupSizeOf,
  isQuantizedWeight,
  type QuantLayout,
  quantLayoutOf,
  type QuantSpec,
} from "./format.ts";

export interface QuantizeCheckpointOptions {
  /**
   * "torch" (pytorch_model.bin) or "safetensors" (model.safetensors); default: torch for
   * ChatGLM-6B (like its releases), safetensors for the Llama family.
   */
  format?: "torch" | "safetensors";
  /** Progress bar on stderr (default: when stderr is a terminal). */
  progressBar?: boolean;
  onProgress?: (doneBytes: number, totalBytes: number, tensor: string) => void;
}

/** The files of a model directory that are weights (not copied: they are rewritten). */
const WEIGHT_FILE = /\.(bin|safetensors)$|\.index\.json$/;

async function isNonEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return true;
    return false;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Quantizes the model at `modelDir` into `outDir`; returns the written weights file's path. */
export async function quantizeCheckpoint(
  modelDir: string,
  outDir: string,
  spec: QuantSpec,
  options: QuantizeCheckpointOptions = {},
): Promise<string> {
  const src = modelDir.replace(/\/+$/, "") || modelDir;
  const out = outDir.replace(/\/+$/, "") || outDir;
  const configJson = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
  const modelType = configJson?.model_type;
  let layout: QuantLayout;
  try {
    // ChatGLM-6B's own config.json names its type; one without any is read as ChatGLM's.
    layout = quantLayoutOf(modelType === undefined ? "chatglm" : String(modelType));
  } catch (err) {
    throw new Error(`${src}/config.json: ${(err as Error).message}`);
  }
  if (layout.readSpec(configJson, `${src}/config.json`)) {
    throw new Error(
      `${src}/config.json: the model is already quantized; quantize its full-precision checkpoint`,
    );
  }
  if (await isNonEmptyDir(out)) {
    throw new Error(`--out ${out}: the directory exists and is not empty (nothing was written)`);
  }
  const ckpt = await openCheckpoint(src);
  const EMB = `${layout.embedding}.weight`, HEAD = `${layout.head}.weight`;
  if (!ckpt.locate.has(EMB)) {
    throw new Error(`${src}: no tensor ${EMB} (is this a ${layout.architecture} checkpoint?)`);
  }
  // A stored head equal to the embeddings is left out (tied), as in ChatGLM's quantized
  // releases; a head that differs (trained untied) is kept. The Llama family ties only when
  // config.json says tie_word_embeddings: true (absent means untied there).
  const mayTie = layout.tiedByDefault
    ? configJson.tie_word_embeddings !== false
    : configJson.tie_word_embeddings === true;
  const tied = !ckpt.locate.has(HEAD) || (mayTie && await sameTensor(ckpt, HEAD, EMB));
  const names = ckpt.tensorNames.filter((n) =>
    !(tied && n === HEAD) && !/\.rotary_emb\.inv_freq$/.test(n)
  );
  // Every weight must take the spec (group size dividing its input width) before a byte is written.
  const problems: string[] = [];
  for (const name of names) {
    if (!isQuantizedWeight(name, spec, layout)) continue;
    const [rows, cols] = ckpt.locate.get(name)!.tensor.shape;
    const group = groupSizeOf(name.slice(0, -".weight".length), spec, layout);
    try {
      checkQuantShape(name, spec.bits, rows, cols, group ?? cols);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `${src}: cannot quantize as ${describeQuant(spec)} (nothing was written): ` +
        problems.slice(0, 4).join("; ") +
        (problems.length > 4 ? `; and ${problems.length - 4} more` : ""),
    );
  }
  const format = options.format ?? (layout.tiedByDefault ? "torch" : "safetensors");
  const parent = out.includes("/") ? out.slice(0, out.lastIndexOf("/")) || "/" : ".";
  await Deno.mkdir(parent, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: parent, prefix: ".quantize-" });
  try {
    const entries = planEntries(ckpt, names, spec, layout, options);
    const weightsName = format === "torch" ? "pytorch_model.bin" : "model.safetensors";
    if (format === "torch") await writeTorchStateDict(`${tmp}/${weightsName}`, entries);
    else await writeSafetensors(`${tmp}/${weightsName}`, entries, { format: "pt" });
    // Tokenizer, generation config, modeling code: everything that is not weights.
    for await (const e of Deno.readDir(src)) {
      if (!e.isFile || e.name === "config.json" || WEIGHT_FILE.test(e.name)) continue;
      await Deno.copyFile(`${src}/${e.name}`, `${tmp}/${e.name}`);
    }
    // ChatGLM's float weights are f16 now (torch_dtype says so); the Llama family's keep theirs.
    const config = {
      ...configJson,
      ...layout.configKeys(spec),
      ...(layout.floatsAsStored ? {} : { torch_dtype: "float16" }),
    };
    await writeJsonAtomic(`${tmp}/config.json`, config);
    await Deno.remove(out).catch(() => {}); // an empty directory may stand in the way
    await Deno.rename(tmp, out);
    return `${out}/${weightsName}`;
  } catch (err) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw err;
  }
}

/** Whether two stored tensors hold the same values (reads both: two tensors of host memory). */
async function sameTensor(ckpt: Checkpoint, a: string, b: string): Promise<boolean> {
  const [x, y] = [await readTensor(ckpt, a), await readTensor(ckpt, b)];
  if (x.shape.join() !== y.shape.join()) return false;
  const fx = convertBytes(x.data, x.dtype, "F16"), fy = convertBytes(y.data, y.dtype, "F16");
  if (fx.length !== fy.length) return false;
  for (let i = 0; i < fx.length; i++) if (fx[i] !== fy[i]) return false;
  return true;
}

interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  data: () => Promise<Uint8Array>;
}

/** The tensors to write, each with a lazy reader (weight and its scale share one quantization). */
function planEntries(
  ckpt: Checkpoint,
  names: string[],
  spec: QuantSpec,
  layout: QuantLayout,
  options: QuantizeCheckpointOptions,
): Entry[] {
  const total = names.reduce((n, name) => n + ckpt.locate.get(name)!.tensor.byteLength, 0);
  const bar = (options.progressBar ?? Deno.stderr.isTerminal())
    ? createProgress({ label: `quantizing to int${spec.bits}`, total, unit: "B" })
    : undefined;
  let done = 0;
  const tick = (name: string) => {
    const bytes = ckpt.locate.get(name)!.tensor.byteLength;
    done += bytes;
    bar?.tick(bytes);
    options.onProgress?.(done, total, name);
    if (done === total) bar?.done();
  };
  // The last quantized module: its scale is asked for right after its weight (torch order), or
  // later (safetensors sorts by dtype), in which case it is quantized again (same result).
  let last: { name: string; m: QuantizedMatrix } | null = null;
  const quantized = async (name: string): Promise<QuantizedMatrix> => {
    if (last?.name === name) return last.m;
    const t = await readTensor(ckpt, name);
    const [rows, cols] = t.shape;
    const group = groupSizeOf(name.slice(0, -".weight".length), spec, layout) ?? cols;
    const w16 = viewAs(convertBytes(t.data, t.dtype, "F16"), Uint16Array);
    const m = quantizeF16(w16, rows, cols, spec.bits, group, name);
    last = { name, m };
    return m;
  };
  const entries: Entry[] = [];
  for (const name of names) {
    const stored = ckpt.locate.get(name)!.tensor;
    if (isQuantizedWeight(name, spec, layout)) {
      const [rows, cols] = stored.shape;
      const module = name.slice(0, -".weight".length);
      const group = groupSizeOf(module, spec, layout);
      const groups = group === null ? null : cols / group;
      entries.push({
        name,
        dtype: "I8",
        shape: spec.bits === 8 ? [rows, cols] : [rows, cols / 2],
        data: async () => {
          const m = await quantized(name);
          const b = storedBytes(m);
          return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
        },
      });
      entries.push({
        name: `${module}.weight_scale`,
        dtype: "F16",
        shape: groups === null ? [rows] : [rows, groups],
        data: async () => {
          const m = await quantized(name);
          tick(name);
          return new Uint8Array(m.scales.buffer, m.scales.byteOffset, m.scales.byteLength);
        },
      });
    } else {
      const dtype: FloatDtype = layout.floatsAsStored ? stored.dtype as FloatDtype : "F16";
      entries.push({
        name,
        dtype,
        shape: stored.shape,
        data: async () => {
          const t = await readTensor(ckpt, name);
          tick(name);
          return convertBytes(t.data, t.dtype, dtype);
        },
      });
    }
  }
  return entries;
}
