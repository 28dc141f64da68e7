/**
 * A freshly initialised ChatGLM-6B-architecture model directory, as HF initialises one: every
 * weight matrix (and the embedding) normal(0, 0.02), biases 0, LayerNorm weights 1 and biases 0;
 * seeded, so the same seed writes the same file. Used to start the demo model from scratch
 * (`writeModelDir` also for the Qwen3 demo's).
 */

import { writeJsonAtomic } from "../base/mod.ts";
import { parseChatGLMConfig, randomChatGLMWeights, writeSafetensors } from "../core/mod.ts";

/** Writes `<dir>/config.json` and a random `<dir>/model.safetensors` (F32). */
export async function writeRandomChatGLM(
  dir: string,
  configJson: Record<string, unknown>,
  seed: number,
  std = 0.02,
): Promise<void> {
  const config = parseChatGLMConfig(configJson, `${dir}/config.json`);
  await writeModelDir(dir, configJson, randomChatGLMWeights(config, seed, std));
}

/** `<dir>/config.json` and `<dir>/model.safetensors` (F32) of freshly initialised tensors. */
export async function writeModelDir(
  dir: string,
  configJson: Record<string, unknown>,
  weights: Iterable<{ name: string; shape: number[]; data: Float32Array }>,
): Promise<void> {
  const tensors = [...weights].map((t) => ({
    name: t.name,
    dtype: "F32" as const,
    shape: t.shape,
    data: t.data,
  }));
  await Deno.mkdir(dir, { recursive: true });
  await writeJsonAtomic(`${dir}/config.json`, configJson);
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
}
