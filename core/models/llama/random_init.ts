/**
 * Fresh Llama-family weights as HF initialises them: weight matrices and the embedding
 * normal(0, std), biases 0, RMSNorm weights 1; seeded. For benchmarks and from-scratch demos,
 * which need the real shapes but no checkpoint.
 */
import type { Gpu } from "../../gpu/device.ts";
import {
  type RandomModelOptions,
  type RandomTensor,
  randomTensors,
  uploadRandom,
} from "../chatglm/random_init.ts";
import type { LlamaConfig } from "./config.ts";
import { assembleLlamaWeights } from "./load.ts";
import { assembleLlama, type LlamaModel } from "./model.ts";
import { llamaParameters } from "./params.ts";
import { llamaInvFreq } from "./rotary.ts";

/** Every parameter of the config, by checkpoint name, freshly initialised. */
export function randomLlamaWeights(
  config: LlamaConfig,
  seed: number,
  std = 0.02,
): Generator<RandomTensor> {
  return randomTensors(llamaParameters(config), seed, std, (n) => n.endsWith("norm.weight"));
}

/** A model with fresh weights, built in GPU memory without any file. */
export function randomLlama(
  gpu: Gpu,
  config: LlamaConfig,
  options: RandomModelOptions,
): LlamaModel {
  const seed = options.seed ?? 1234;
  const weights = uploadRandom(gpu, randomLlamaWeights(config, seed, options.std), options.dtype);
  return assembleLlama({
    config,
    dtype: options.dtype,
    gpu,
    maxContext: options.maxContext ?? Math.min(config.maxPositionEmbeddings, 4096),
    source: `random (seed ${seed})`,
    ...assembleLlamaWeights(config, weights),
    invFreq: llamaInvFreq(config.headDim, config.rope),
    adapter: null,
  });
}
