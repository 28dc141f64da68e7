/**
 * Merge-and-unload (README §7): W' = W + scaling · (B · A) into each targeted linear weight, bias
 * unchanged; and the export of a merged model directory as safetensors.
 */

import { createProgress, writeFileAtomic } from "../../base/mod.ts";
import { openCheckpoint, readTensor } from "../io/checkpoint.ts";
import { bytesToF32, type Dtype } from "../io/dtype.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { readChatGLMConfig } from "../models/chatglm/config.ts";
import { linearModules } from "../models/chatglm/params.ts";
import { loadLoraAdapter, type LoraAdapter, type LoraModuleWeights } from "./lora_weights.ts";

/** Returns W + scaling · (B · A) for one module ([out, in], f32), rounding as torch does. */
export function mergeLoraWeight(
  weight: Float32Array,
  m: LoraModuleWeights,
  scaling: number,
): Float32Array {
  const { r, inFeatures: inF, outFeatures: out } = m;
  if (weight.length !== out * inF) {
    throw new Error(
      `merge ${m.module}: weight has ${weight.length} values, expected ${out}×${inF}`,
    );
  }
  const merged = new Float32Array(weight.length);
  const s = Math.fround(scaling);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += m.b[o * r + k] * m.a[k * inF + i];
      merged[o * inF + i] = weight[o * inF + i] + Math.fround(Math.fround(acc) * s);
    }
  }
  return merged;
}

export interface ExportMergedOptions {
  /** Stored dtype of the written weights; default: each tensor keeps the base file's dtype. */
  dtype?: "F32" | "F16" | "BF16";
  /** Show a progress bar on stderr. */
  progress?: boolean;
}

const WEIGHT_FILE = /(\.safetensors|\.bin|\.index\.json)$/;

/**
 * Writes `outDir/model.safetensors`: the base model's tensors with the adapter merged into every
 * targeted weight, reading and writing one tensor at a time; copies config.json and the
 * tokenizer files alongside. Returns the adapter that was merged.
 */
export async function exportMergedModel(
  baseDir: string,
  adapterDir: string | LoraAdapter,
  outDir: string,
  options: ExportMergedOptions = {},
): Promise<LoraAdapter> {
  const config = await readChatGLMConfig(baseDir);
  const adapter = typeof adapterDir === "string"
    ? await loadLoraAdapter(adapterDir, { linearModules: linearModules(config), name: baseDir })
    : adapterDir;
  const ckpt = await openCheckpoint(baseDir);
  for (const module of adapter.modules.keys()) {
    if (!ckpt.locate.has(`${module}.weight`)) {
      throw new Error(`${baseDir}: the base has no ${module}.weight to merge the adapter into`);
    }
  }
  await Deno.mkdir(outDir, { recursive: true });
  const total = ckpt.totalBytes;
  const progress = options.progress
    ? createProgress({ label: "merging", total, unit: "B" })
    : undefined;
  const tensors = ckpt.tensorNames.map((name) => {
    const stored = ckpt.locate.get(name)!.tensor;
    const dtype: Dtype = options.dtype && /^(F32|F16|BF16|F64)$/.test(stored.dtype)
      ? options.dtype
      : stored.dtype;
    return {
      name,
      dtype,
      shape: stored.shape,
      data: async () => {
        const t = await readTensor(ckpt, name);
        progress?.tick(stored.byteLength);
        const module = name.endsWith(".weight") ? name.slice(0, -".weight".length) : null;
        const lora = module ? adapter.modules.get(module) : undefined;
        if (!lora && dtype === t.dtype) return t.data;
        const values = bytesToF32(t.data, t.dtype);
        // writeSafetensors converts a Float32Array to the F16/BF16 it is written as.
        return lora ? mergeLoraWeight(values, lora, adapter.scaling) : values;
      },
    };
  });
  await writeSafetensors(`${outDir}/model.safetensors`, tensors, { format: "pt" });
  progress?.done();
  for await (const e of Deno.readDir(baseDir)) {
    if (!e.isFile || WEIGHT_FILE.test(e.name)) continue;
    await writeFileAtomic(`${outDir}/${e.name}`, await Deno.readFile(`${baseDir}/${e.name}`));
  }
  return adapter;
}
