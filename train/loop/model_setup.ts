/**
 * The model a run trains: the base model loaded for LoRA (frozen base, f16 where configured) or
 * for full fine-tuning (f32, every parameter trainable), the adapter (from a checkpoint being
 * resumed, from `--adapter-init`, or fresh as peft initialises one, seeded), and the weights of a
 * resumed full fine-tuning run written back into the model.
 */

import {
  type CausalLM,
  getGpu,
  initLoraAdapter,
  linearModulesOf,
  loadLoraAdapter,
  loadModel,
  type LoraAdapter,
  modelTypeOf,
  parseLoraConfig,
  readChatGLMConfig,
  readLlamaConfig,
  writeTensor,
} from "../../core/mod.ts";
import type { LoadedCheckpoint } from "../checkpoint.ts";
import type { TrainConfig } from "../config.ts";
import { createRng } from "../../base/mod.ts";
import { formatTrainPlanSummary, runPlanInput, trainMemoryPlan } from "../memory_plan.ts";
import { trainQuantization, withBaseQuantization } from "../quantize.ts";

/** A fresh adapter config in peft's shape for the run's LoRA settings. */
export function freshLoraConfigJson(config: TrainConfig, baseModel: string): unknown {
  // medglm_base_quantization (added in setupModel) records the base the adapter is trained on.
  return {
    base_model_name_or_path: baseModel,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    lora_alpha: config.loraAlpha,
    lora_dropout: config.loraDropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: config.loraR,
    target_modules: config.targetModules,
    task_type: "CAUSAL_LM",
  };
}

export async function setupModel(
  config: TrainConfig,
  modelDir: string,
  resume: LoadedCheckpoint | null,
  log: (line: string) => void,
): Promise<CausalLM> {
  const gpu = await getGpu();
  // The training plan (this run's batch, accumulation, length, adapter) replaces the load's
  // inference plan (context, batch 1), which says nothing about a training run.
  const quiet = { log: () => {}, progressBar: false };
  // The base's config (either architecture) and how it will be loaded: quantized at load
  // (--quantize), pre-quantized, or float.
  const stored = await modelTypeOf(modelDir) === "chatglm"
    ? await readChatGLMConfig(modelDir)
    : await readLlamaConfig(modelDir);
  const { quantize, spec } = trainQuantization(config, stored, modelDir);
  const modelConfig = { ...stored, quantization: spec };
  const plan = (adapter?: LoraAdapter) =>
    log(formatTrainPlanSummary(trainMemoryPlan(runPlanInput(config, modelConfig, adapter))));
  if (config.full) {
    plan();
    const model = await loadModel(modelDir, { ...quiet, dtype: "f32", gpu, trainable: true });
    if (resume) {
      if (resume.weights.kind !== "full") {
        model.dispose();
        throw new Error(`${resume.dir}: a LoRA checkpoint cannot resume a --full run`);
      }
      const params = model.parameters();
      for (const t of resume.weights.tensors) {
        const p = params.get(t.name);
        if (!p) continue; // rotary inv_freq buffers and the like
        if (p.byteLength !== t.data.byteLength) {
          model.dispose();
          throw new Error(
            `${resume.dir}: ${t.name} has shape [${t.shape}], the model [${p.shape}]`,
          );
        }
        writeTensor(p, t.data);
      }
    }
    return model;
  }
  const base = { linearModules: await linearModulesOf(modelDir), name: modelDir };
  let adapter: LoraAdapter;
  if (resume) {
    if (resume.weights.kind !== "lora") {
      throw new Error(`${resume.dir}: a full checkpoint cannot resume a LoRA run`);
    }
    adapter = resume.weights.adapter;
  } else if (config.adapterInit) {
    adapter = await loadLoraAdapter(config.adapterInit, base);
  } else {
    const rng = createRng(config.seed);
    adapter = initLoraAdapter(
      parseLoraConfig(freshLoraConfigJson(config, modelDir), "fresh adapter config"),
      base,
      () => rng.next(),
    );
  }
  // The run's dropout setting wins over the one stored with an initial adapter; the adapter's
  // config records the int8/int4 base this run trains it on (absent for a float base).
  adapter = {
    ...adapter,
    config: {
      ...adapter.config,
      loraDropout: config.loraDropout,
      raw: withBaseQuantization(adapter.config.raw, spec),
    },
  };
  plan(adapter);
  return await loadModel(modelDir, {
    ...quiet,
    dtype: config.dtype,
    adapter,
    gpu,
    trainable: true,
    quantize,
  });
}
