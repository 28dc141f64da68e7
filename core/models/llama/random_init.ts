/**
 * Fresh Llama-family weights as HF initialises them: weight matrices and the embedding
 * normal(0, std), biases 0, RMSNorm weights 1; seeded. For benchmarks and from-scratch demos,
 * which need the real shapes but no checkpoint.
 */
import { createRng } from "../../../base/mod.ts";
import type { Gpu } from "../../gpu/device.ts";
import { type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import type { RandomModelOptions, RandomTensor } from "../chatglm/random_init.ts";
import type { LlamaConfig } from "./config.ts";
import { assembleLlamaWeights } from "./load.ts";
import { assembleLlama, type LlamaModel } from "./model.ts";
import { llamaParameters } from "./params.ts";
import { llamaInvFreq } from "./rotary.ts";

/** Every parameter of the config, by checkpoint name, freshly initialised. */
export function* randomLlamaWeights(
  config: LlamaConfig,
  seed: number,
  std = 0.02,
): Generator<RandomTensor> {
  const rng = createRng(seed);
  const normal = () => {
    const u = 1 - rng.next(), v = rng.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  for (const { name, shape } of llamaParameters(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith("norm.weight")) data.fill(1);
    else if (shape.length === 2) { for (let i = 0; i < data.length; i++) data[i] = std * normal(); }
    yield { name, shape, data };
  }
}

/** A model with fresh weights, built in GPU memory without any file. */
export function randomLlama(
  gpu: Gpu,
  config: LlamaConfig,
  options: RandomModelOptions,
): LlamaModel {
  const weights = new Map<string, Tensor>();
  for (const t of randomLlamaWeights(config, options.seed ?? 1234, options.std)) {
    weights.set(t.name, uploadTensor(gpu, t.data, t.shape, options.dtype, { label: t.name }));
  }
  return assembleLlama({
    config,
    dtype: options.dtype,
    gpu,
    maxContext: options.maxContext ?? Math.min(config.maxPositionEmbeddings, 4096),
    source: `random (seed ${options.seed ?? 1234})`,
    ...assembleLlamaWeights(config, weights),
    invFreq: llamaInvFreq(config.headDim, config.rope),
    adapter: null,
  });
}
