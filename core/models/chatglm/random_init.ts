/**
 * Fresh ChatGLM weights as HF initialises them: every weight matrix (and the embedding)
 * normal(0, std), biases 0, LayerNorm weights 1 and biases 0; seeded, so the same seed gives the
 * same numbers. For training from scratch (the demo model) and for benchmarks, which need the
 * real shapes but no checkpoint.
 */
import { createRng } from "../../../base/mod.ts";
import type { Gpu } from "../../gpu/device.ts";
import { type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import type { ChatGLMConfig } from "./config.ts";
import { assembleWeights } from "./load.ts";
import { assembleChatGLM, type ChatGLMModel } from "./model.ts";
import { parameterTable } from "./params.ts";
import type { WeightDtype } from "./weights.ts";

export interface RandomTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Every parameter of the config, by checkpoint name, freshly initialised. */
export function randomChatGLMWeights(
  config: ChatGLMConfig,
  seed: number,
  std = 0.02,
): Generator<RandomTensor> {
  return randomTensors(parameterTable(config), seed, std, (n) => n.endsWith("layernorm.weight"));
}

/**
 * Fresh tensors for a parameter table (any architecture): `ones(name)` ones (norm weights), other
 * matrices normal(0, std) from the seeded stream in table order, everything else (biases) zero.
 */
export function* randomTensors(
  table: Iterable<{ name: string; shape: number[] }>,
  seed: number,
  std: number,
  ones: (name: string) => boolean,
): Generator<RandomTensor> {
  const rng = createRng(seed);
  // Box–Muller over the seeded uniform stream.
  const normal = () => {
    const u = 1 - rng.next(), v = rng.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  for (const { name, shape } of table) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (ones(name)) data.fill(1);
    else if (shape.length === 2) { for (let i = 0; i < data.length; i++) data[i] = std * normal(); }
    yield { name, shape, data };
  }
}

/** Uploads fresh tensors in the run's dtype, by checkpoint name. */
export function uploadRandom(
  gpu: Gpu,
  tensors: Iterable<RandomTensor>,
  dtype: WeightDtype,
): Map<string, Tensor> {
  const weights = new Map<string, Tensor>();
  for (const t of tensors) {
    weights.set(t.name, uploadTensor(gpu, t.data, t.shape, dtype, { label: t.name }));
  }
  return weights;
}

export interface RandomModelOptions {
  dtype: WeightDtype;
  seed?: number;
  std?: number;
  maxContext?: number;
}

/** A model with fresh weights, built in GPU memory without any file. */
export function randomChatGLM(
  gpu: Gpu,
  config: ChatGLMConfig,
  options: RandomModelOptions,
): ChatGLMModel {
  const seed = options.seed ?? 1234;
  const weights = uploadRandom(gpu, randomChatGLMWeights(config, seed, options.std), options.dtype);
  return assembleChatGLM({
    config,
    dtype: options.dtype,
    gpu,
    maxContext: options.maxContext ?? config.maxSequenceLength,
    source: `random (seed ${seed})`,
    ...assembleWeights(config, weights),
    adapter: null,
  });
}
