/**
 * Training entry points that pick the architecture of a loaded model (`CausalLM`): the trainer
 * (train/) calls these, so one loop trains ChatGLM-6B and the Llama family alike. Each forwards
 * to the architecture's own batch layout and training pass (chatglm/train_*.ts, llama/train.ts);
 * trainable parameters, gradient buffers and the tape are shared (chatglm/train_forward.ts).
 */

import type { Tape, Var } from "../autograd/tape.ts";
import type { LoraAdapter } from "../adapters/lora_weights.ts";
import { readChatGLMConfig } from "./chatglm/config.ts";
import { adapterFromLinears, modelLinears } from "./chatglm/load.ts";
import { linearModules } from "./chatglm/params.ts";
import { buildTrainBatch, type TrainBatch } from "./chatglm/train_batch.ts";
import {
  prepareTraining,
  type TrainBatchTensors,
  trainForward,
  type TrainForwardOptions,
  type TrainingModel,
  uploadTrainBatch,
} from "./chatglm/train_forward.ts";
import { readLlamaConfig } from "./llama/config.ts";
import { llamaLinears } from "./llama/load.ts";
import { linearShapes } from "./llama/params.ts";
import {
  buildLlamaTrainBatch,
  llamaTrainForward,
  prepareLlamaTraining,
  uploadLlamaTrainBatch,
} from "./llama/train.ts";
import type { LlamaModel } from "./llama/model.ts";
import type { ChatGLMModel } from "./chatglm/model.ts";
import { type CausalLM, isLlamaModel, modelTypeOf } from "./load.ts";

/** The linear modules ([out, in] by full name) of the model in `dir`: what an adapter targets. */
export async function linearModulesOf(
  dir: string,
): Promise<Map<string, readonly [number, number]>> {
  if ((await modelTypeOf(dir)) === "chatglm") {
    return new Map(linearModules(await readChatGLMConfig(dir)));
  }
  return linearShapes(await readLlamaConfig(dir));
}

export function prepareTrainingFor(
  model: CausalLM,
  mode: "lora" | "full",
): TrainingModel<CausalLM> {
  return isLlamaModel(model) ? prepareLlamaTraining(model, mode) : prepareTraining(model, mode);
}

/** The architecture's batch layout of examples' `input_ids` and `labels`. */
export function buildTrainBatchFor(
  model: CausalLM,
  inputIds: readonly (readonly number[])[],
  labels: readonly (readonly number[])[],
): TrainBatch {
  return isLlamaModel(model)
    ? buildLlamaTrainBatch(inputIds, labels, model.config)
    : buildTrainBatch(inputIds, labels, model.config);
}

export function uploadTrainBatchFor(model: CausalLM, batch: TrainBatch): TrainBatchTensors {
  return isLlamaModel(model) ? uploadLlamaTrainBatch(model, batch) : uploadTrainBatch(model, batch);
}

/** Records the architecture's training pass; the loss variable ([2] = mean, count). */
export function trainForwardFor(
  tape: Tape,
  tm: TrainingModel<CausalLM>,
  input: TrainBatchTensors,
  options: TrainForwardOptions & { gradScale?: number } = {},
): Var {
  const model = tm.model;
  return isLlamaModel(model)
    ? llamaTrainForward(tape, tm as TrainingModel<LlamaModel>, input, options)
    : trainForward(tape, tm as TrainingModel<ChatGLMModel>, input, options);
}

/** The attached adapter with its A, B read back from the GPU (e.g. after training). */
export async function adapterFromModelFor(model: CausalLM): Promise<LoraAdapter> {
  return await adapterFromLinears(
    model,
    isLlamaModel(model) ? llamaLinears(model) : modelLinears(model),
  );
}
