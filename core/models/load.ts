/**
 * `loadModel(dir, options)`: the architecture from `config.json`'s `model_type` (ChatGLM-6B or
 * the Llama family: Qwen2 / Qwen2.5, Qwen3, Llama 3); any other type is refused with the list of
 * known ones. Both models implement the same interface for the engine and the trainer
 * (`CausalLM`): forward, KV cache steps, slots, parameters, adapter, dispose, profiler.
 */

import { readJsonFile } from "../../base/mod.ts";
import type { ChatGLMModel } from "./chatglm/model.ts";
import { loadModel as loadChatGLM, type LoadModelOptions } from "./chatglm/load.ts";
import { LLAMA_MODEL_TYPES } from "./llama/config.ts";
import { loadLlamaModel } from "./llama/load.ts";
import type { LlamaModel } from "./llama/model.ts";

/** A loaded causal language model of any supported architecture. */
export type CausalLM = ChatGLMModel | LlamaModel;

/** The `model_type` values `loadModel` accepts. */
export const KNOWN_MODEL_TYPES: readonly string[] = ["chatglm", ...LLAMA_MODEL_TYPES];

/** The architecture of the model directory `dir` (its config.json `model_type`). */
export async function modelTypeOf(dir: string): Promise<string> {
  const root = dir.replace(/\/+$/, "") || dir;
  const path = `${root}/config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a model directory needs an HF config.json",
  });
  const type = (json as Record<string, unknown> | null)?.model_type;
  if (typeof type !== "string" || !KNOWN_MODEL_TYPES.includes(type)) {
    throw new Error(
      `${path}: model_type ${JSON.stringify(type)} is not supported (known: ` +
        `${KNOWN_MODEL_TYPES.join(", ")})`,
    );
  }
  return type;
}

export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<CausalLM> {
  return (await modelTypeOf(dir)) === "chatglm"
    ? await loadChatGLM(dir, options)
    : await loadLlamaModel(dir, options);
}

/** Whether `model` is of the Llama family. */
export function isLlamaModel(model: CausalLM): model is LlamaModel {
  return (model as Partial<LlamaModel>).architecture === "llama";
}
