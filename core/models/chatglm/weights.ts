/**
 * Streams a ChatGLM checkpoint to the GPU: checks names and shapes against config.json first
 * (nothing is uploaded for a wrong checkpoint), then reads one tensor at a time, shard by shard,
 * converts it to the run's dtype and uploads it, so host memory stays near one tensor.
 */

import type { Gpu } from "../../gpu/device.ts";
import { type Checkpoint, iterateTensors } from "../../io/checkpoint.ts";
import { bytesToF32, convertBytes, viewAs } from "../../io/dtype.ts";
import { createProgress } from "../../io/progress.ts";
import { releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import type { ChatGLMConfig } from "./config.ts";
import { checkParameters, isIgnoredTensor } from "./params.ts";

export type WeightDtype = "f32" | "f16";

export interface LoadProgress {
  /** Bytes read from the checkpoint so far (stored dtype). */
  loadedBytes: number;
  totalBytes: number;
  /** The tensor just uploaded. */
  tensor: string;
}

export interface LoadWeightsOptions {
  dtype: WeightDtype;
  onProgress?: (p: LoadProgress) => void;
  /** Draw a progress bar on stderr (default: when stderr is a terminal). */
  progressBar?: boolean;
}

/**
 * Uploads every parameter of the checkpoint as a GPU tensor keyed by checkpoint name. In f16 runs
 * every float parameter is stored as f16 (compute stays f32); in f32 runs as f32.
 */
export async function uploadChatGLMWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  config: ChatGLMConfig,
  options: LoadWeightsOptions,
): Promise<Map<string, Tensor>> {
  const stored = ckpt.tensorNames.map((name) => ({
    name,
    shape: ckpt.locate.get(name)!.tensor.shape,
  }));
  checkParameters(config, stored, ckpt.dir);
  return await uploadWeights(gpu, ckpt, (name) => !isIgnoredTensor(name, config), options);
}

/**
 * Uploads the checkpoint's tensors that `wanted` selects (any architecture; names and shapes
 * already checked), one at a time, converted to the run's dtype.
 */
export async function uploadWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  wanted: (name: string) => boolean,
  options: LoadWeightsOptions,
): Promise<Map<string, Tensor>> {
  for (const name of ckpt.tensorNames) {
    const dt = ckpt.locate.get(name)!.tensor.dtype;
    if (wanted(name) && dt !== "F32" && dt !== "F16" && dt !== "BF16") {
      throw new Error(`${ckpt.dir}: tensor ${name} is stored as ${dt}; expected F32, F16 or BF16`);
    }
  }
  const totalBytes = ckpt.tensorNames.filter(wanted)
    .reduce((n, name) => n + ckpt.locate.get(name)!.tensor.byteLength, 0);
  const bar = (options.progressBar ?? Deno.stderr.isTerminal())
    ? createProgress({ label: `loading ${options.dtype} weights`, total: totalBytes, unit: "B" })
    : undefined;
  const tensors = new Map<string, Tensor>();
  let loadedBytes = 0;
  try {
    for await (const t of iterateTensors(ckpt, { names: wanted })) {
      let tensor: Tensor;
      if (options.dtype === "f16") {
        const bits = viewAs(convertBytes(t.data, t.dtype, "F16"), Uint16Array);
        tensor = uploadTensor(gpu, bits, t.shape, "f16", { label: t.name });
      } else {
        tensor = uploadTensor(gpu, bytesToF32(t.data, t.dtype), t.shape, "f32", { label: t.name });
      }
      tensors.set(t.name, tensor);
      loadedBytes += t.data.byteLength;
      bar?.tick(t.data.byteLength);
      options.onProgress?.({ loadedBytes, totalBytes, tensor: t.name });
    }
  } catch (err) {
    for (const t of tensors.values()) releaseTensor(t);
    throw err;
  } finally {
    bar?.done();
  }
  gpu.checkErrors();
  return tensors;
}
