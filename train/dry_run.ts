/**
 * `deno task train --dry-run`: prints the memory plan for the chosen model and batch, and for the
 * real ChatGLM-6B config (bundled as train/configs/chatglm-6b.config.json, so no checkpoint is
 * needed), and checks the largest buffers against the WebGPU adapter's limits when one exists.
 */

import { readJsonFile } from "../base/mod.ts";
import {
  type ChatGLMConfig,
  getGpu,
  linearModules,
  loadLoraAdapter,
  parseChatGLMConfig,
} from "../core/mod.ts";
import type { TrainConfig } from "./config.ts";
import { formatTrainMemoryPlan, limitWarnings, trainMemoryPlan } from "./memory_plan.ts";
import { trainQuantization } from "./quantize.ts";

export const CHATGLM_6B_CONFIG_URL: URL = new URL(
  "./configs/chatglm-6b.config.json",
  import.meta.url,
);

// The bundled config travels with the module (it may be imported by URL), so it is fetched; a
// user's file goes through the one size-capped JSON reader.
async function readBundledJson(url: URL, label: string): Promise<unknown> {
  let text: string;
  try {
    text = await (await fetch(url)).text();
  } catch (err) {
    throw new Error(`${label}: cannot read it (${(err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${label}: not valid JSON (${(err as Error).message})`);
  }
}

/** The model config of `--model`: a model directory (its config.json) or a config JSON file. */
export async function readModelConfig(
  model: string | null,
): Promise<{ config: ChatGLMConfig; label: string }> {
  if (model === null) {
    const label = "ChatGLM-6B (bundled config)";
    return {
      config: parseChatGLMConfig(await readBundledJson(CHATGLM_6B_CONFIG_URL, label), label),
      label,
    };
  }
  let path = model;
  try {
    if ((await Deno.stat(model)).isDirectory) path = `${model.replace(/\/+$/, "")}/config.json`;
  } catch {
    throw new Error(`--model ${model}: no such directory or file`);
  }
  return { config: parseChatGLMConfig(await readJsonFile(path), path), label: path };
}

export interface AdapterLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  description?: string;
}

/** The dry-run report as text. `limits` null: no adapter (the check is skipped and said so). */
export async function dryRunReport(
  config: TrainConfig,
  limits: AdapterLimits | null,
): Promise<string> {
  const chosen = await readModelConfig(config.model);
  const models = [chosen];
  if (config.model !== null) models.push(await readModelConfig(null));
  const parts: string[] = [];
  // An initial adapter's own r and modules are what the run trains, whatever the flags say.
  const adapter = config.adapterInit !== null && !config.full
    ? await loadLoraAdapter(config.adapterInit, {
      linearModules: linearModules(chosen.config),
      name: chosen.label,
    })
    : undefined;
  for (const m of models) {
    // --quantize applies to both (the bundled 6B config is planned as the run would load it).
    const { spec } = trainQuantization(config, m.config, m.label);
    const plan = trainMemoryPlan({
      adapter: m === chosen ? adapter : undefined,
      model: { ...m.config, quantization: spec },
      weightDtype: config.dtype,
      full: config.full,
      loraR: config.loraR,
      targetModules: config.targetModules,
      batchSize: config.batchSize,
      gradAccumulation: config.gradAccumulation,
      seqLen: config.maxLength,
      recompute: config.recompute,
    });
    parts.push(formatTrainMemoryPlan(plan, m.label));
    if (limits) {
      const warnings = limitWarnings(plan, limits);
      parts.push(
        `  adapter ${limits.description ?? ""}: maxBufferSize ${limits.maxBufferSize}, ` +
          `maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}`,
      );
      parts.push(
        warnings.length
          ? warnings.map((w) => `  note: ${w}`).join("\n")
          : "  every buffer fits the adapter's limits",
      );
    } else parts.push("  (no WebGPU adapter here: limits not checked)");
    parts.push("");
  }
  return parts.join("\n");
}

/** Limits of the shared device, or null when there is no adapter. */
export async function adapterLimits(): Promise<AdapterLimits | null> {
  try {
    const gpu = await getGpu();
    return {
      maxBufferSize: gpu.limits.maxBufferSize,
      maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize,
      description: gpu.adapterInfo.description,
    };
  } catch {
    return null;
  }
}
