/**
 * `deno task train --dry-run`: prints the memory plan for the chosen model and batch (a ChatGLM-6B
 * or Llama-family directory: only its config.json is read), with the base in f16, int8 and int4
 * side by side, and for the real ChatGLM-6B config (bundled as train/configs/chatglm-6b.config.json,
 * so no checkpoint is needed), and checks the largest buffers against the WebGPU adapter's limits
 * when one exists.
 */

import { readJsonFile } from "../base/mod.ts";
import {
  type ChatGLMConfig,
  describeQuant,
  getGpu,
  linearModules,
  type LlamaConfig,
  llamaLinearShapes,
  loadLoraAdapter,
  parseChatGLMConfig,
  parseLlamaConfig,
  planArchOf,
  plannedQuantFormats,
  type QuantSpec,
} from "../core/mod.ts";
import type { TrainConfig } from "./config.ts";
import {
  fmtBytes,
  formatTrainMemoryPlan,
  limitWarnings,
  runPlanInput,
  type TrainMemoryPlan,
  trainMemoryPlan,
} from "./memory_plan.ts";
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

/**
 * The model config of `--model`: a model directory (its config.json) or a config JSON file, of
 * ChatGLM-6B or the Llama family (by `model_type`).
 */
export async function readModelConfig(
  model: string | null,
): Promise<{ config: ChatGLMConfig | LlamaConfig; label: string }> {
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
  const json = await readJsonFile(path);
  const type = (json as Record<string, unknown> | null)?.model_type;
  const config = type === "chatglm" || type === undefined
    ? parseChatGLMConfig(json, path)
    : parseLlamaConfig(json, path);
  return { config, label: path };
}

/** The adapter's target shapes of a config: [out, in] by full module name. */
function linearModulesOfConfig(
  config: ChatGLMConfig | LlamaConfig,
): Map<string, readonly [number, number]> {
  return "modelType" in config ? llamaLinearShapes(config) : new Map(linearModules(config));
}

/**
 * The chosen run's totals with the base in f16, int8 (per row) and int4 (group 128 where it
 * divides every width, else per row): the table a LoRA dry run prints under its plan.
 */
function baseFormatsTable(
  config: ChatGLMConfig | LlamaConfig,
  run: (quant: QuantSpec | null) => TrainMemoryPlan,
  recompute: boolean,
  dtype: string,
): string {
  const rows = [null, ...plannedQuantFormats(planArchOf(config))].map((q) => ({
    label: q ? describeQuant(q) : dtype,
    plan: run(q),
  }));
  const total = (p: TrainMemoryPlan) => recompute ? p.totalWithRecompute : p.totalWithoutRecompute;
  return [
    `  base weights: f16, int8, int4 (total ${recompute ? "with" : "without"} recompute)`,
    ...rows.map((r) =>
      `    ${r.label.padEnd(28)} weights ${fmtBytes(r.plan.weights.bytes).padStart(10)}  total ${
        fmtBytes(total(r.plan)).padStart(10)
      }`
    ),
  ].join("\n");
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
  // The bundled ChatGLM-6B plan is a reference for ChatGLM runs.
  if (config.model !== null && !("modelType" in chosen.config)) {
    models.push(await readModelConfig(null));
  }
  const parts: string[] = [];
  // An initial adapter's own r and modules are what the run trains, whatever the flags say.
  const adapter = config.adapterInit !== null && !config.full
    ? await loadLoraAdapter(config.adapterInit, {
      linearModules: linearModulesOfConfig(chosen.config),
      name: chosen.label,
    })
    : undefined;
  for (const m of models) {
    // --quantize applies to both (the bundled 6B config is planned as the run would load it).
    const { spec } = trainQuantization(config, m.config, m.label);
    const run = (quantization: QuantSpec | null) =>
      trainMemoryPlan(
        runPlanInput(config, { ...m.config, quantization }, m === chosen ? adapter : undefined),
      );
    const plan = run(spec);
    parts.push(formatTrainMemoryPlan(plan, m.label));
    // LoRA on a full-precision checkpoint: what an int8 / int4 base (--quantize) would save.
    if (m === chosen && !config.full && !m.config.quantization) {
      parts.push(baseFormatsTable(m.config, run, config.recompute, config.dtype));
    }
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
