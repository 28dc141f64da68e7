/** The `deno task infer` flags, parsed with `node:util` parseArgs and checked with clear errors. */
import { parseArgs } from "node:util";
import { parseQuantizeFlag, type QuantizeOption, type WeightDtype } from "../core/mod.ts";
import {
  parsePromptFlags,
  PROMPT_FLAG_OPTIONS,
  type PromptFlags,
  promptFlagsUsage,
} from "./prompt_flags.ts";
import { FlagError, intFlag, numberFlag } from "../base/mod.ts";

export interface InferFlags extends PromptFlags {
  model?: string;
  adapter?: string;
  merged: boolean;
  backend: string;
  dtype?: WeightDtype;
  quantize?: QuantizeOption;
  /** One-shot question; absent: interactive chat (or stdin when it is piped). */
  prompt?: string;
  /** Token ids of a prompt: greedy ids out, no tokenizer (see infer_ids.ts). */
  promptIds?: number[];
  /** Sampling settings; absent: the engine's generation defaults (generation_defaults.ts). */
  maxNewTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  seed?: number;
  /** Past turns kept in the prompt (0: as many as fit the context). */
  historyTurns: number;
  /** Print the memory plan (f16 / int8 / int4) from config.json and exit. */
  dryRun?: boolean;
  help: boolean;
}

export const INFER_USAGE = `Usage: deno task infer [options]

Chat with the model in the terminal; with --prompt (or piped stdin) answer one question and print
only the answer on stdout.

  --model DIR               model directory (config.json + weights + tokenizer files):
                            ChatGLM-6B or Llama family (Qwen2/2.5, Qwen3, Llama 3);
                            default: the demo model in models/demo
  --adapter DIR             PEFT LoRA adapter directory
  --merged                  fold the adapter into the weights at load (faster steps)
  --backend NAME            webgpu | onnx | auto (default auto)
  --dtype f16|f32           weight storage on the GPU (default: f16 with shader-f16; on a
                            software adapter f32 when it fits half of memory: gpu-info)
  --quantize SPEC           int8/int4 weights at load: 8 | 4[,group=G][,embeddings]
  --dry-run                 print the memory plan for f16, int8 and int4 weights from the model's
                            config.json alone (no weights or tokenizer needed) and exit
  --prompt TEXT             one-shot: answer TEXT and exit
  --prompt-ids 1,2,3        one-shot without a tokenizer: greedy token ids for these prompt ids
                            (any architecture, e.g. the tiny Llama-family test models)
Sampling defaults (for every front end): the model's generation_config.json, else these.
  --max-new-tokens N        longest answer in tokens (default 512)
  --temperature T           0 = greedy (default 0.95, ChatGLM's chat default)
  --top-p P                 nucleus sampling mass (default 0.7)
  --top-k K                 keep the K most likely tokens, 0 = off (default 0)
  --repetition-penalty R    ChatGLM-style penalty, 1 = off (default 1)
  --seed N                  seed for reproducible sampling
  --history-turns N         past turns kept in the prompt, 0 = as many as fit (default 0)
${promptFlagsUsage(28)}
  -h, --help                show this help

In the chat: /reset clears the history, /history shows it, /exit quits (or Ctrl-D).
Ctrl-C stops the answer being written; at the prompt it quits.
`;

export { FlagError };

export function parseInferFlags(args: string[]): InferFlags {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        adapter: { type: "string" },
        merged: { type: "boolean" },
        backend: { type: "string" },
        dtype: { type: "string" },
        quantize: { type: "string" },
        "dry-run": { type: "boolean" },
        prompt: { type: "string" },
        "prompt-ids": { type: "string" },
        "max-new-tokens": { type: "string" },
        temperature: { type: "string" },
        "top-p": { type: "string" },
        "top-k": { type: "string" },
        "repetition-penalty": { type: "string" },
        seed: { type: "string" },
        "history-turns": { type: "string" },
        ...PROMPT_FLAG_OPTIONS,
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new FlagError(`${(e as Error).message}\n\n${INFER_USAGE}`);
  }
  for (const name of ["model", "adapter"] as const) {
    if (values[name] !== undefined && values[name]!.trim() === "") {
      throw new FlagError(`--${name}: expected a directory (got an empty value)`);
    }
  }
  const backend = values.backend ?? "auto";
  if (!["webgpu", "onnx", "auto"].includes(backend)) {
    throw new FlagError(`--backend: expected webgpu, onnx or auto (got "${backend}")`);
  }
  const dtype = dtypeFlag(values.dtype);
  if (values.merged && values.adapter === undefined) {
    throw new FlagError("--merged needs --adapter DIR (the adapter to fold in)");
  }
  const prompt = parsePromptFlags(values);
  let promptIds: number[] | undefined;
  if (values["prompt-ids"] !== undefined) {
    const parts = values["prompt-ids"].split(",").map((x) => x.trim());
    if (parts.some((x) => !/^\d+$/.test(x)) || values.prompt !== undefined) {
      throw new FlagError(
        `--prompt-ids: expected comma-separated token ids, without --prompt (got "${
          values["prompt-ids"]
        }")`,
      );
    }
    promptIds = parts.map(Number);
  }
  return {
    promptIds,
    model: values.model,
    adapter: values.adapter,
    merged: values.merged ?? false,
    backend,
    dtype,
    quantize: parseQuantizeFlag(values.quantize),
    prompt: values.prompt,
    ...prompt,
    maxNewTokens: intFlag("max-new-tokens", values["max-new-tokens"], 1),
    temperature: numberFlag("temperature", values.temperature, (v) => v >= 0, "a number >= 0"),
    topP: numberFlag("top-p", values["top-p"], (v) => v > 0 && v <= 1, "a number in (0, 1]"),
    topK: intFlag("top-k", values["top-k"], 0),
    repetitionPenalty: numberFlag(
      "repetition-penalty",
      values["repetition-penalty"],
      (v) => v > 0,
      "a number > 0",
    ),
    seed: numberFlag("seed", values.seed, Number.isSafeInteger, "an integer"),
    historyTurns: intFlag("history-turns", values["history-turns"], 0) ?? 0,
    ...(values["dry-run"] ? { dryRun: true } : {}),
    help: values.help ?? false,
  };
}

/**
 * `--dtype f16|f32` (infer and serve): the float weights' storage on the GPU; absent = the load's
 * default for every architecture (`defaultWeightDtype`: by adapter and model size).
 */
export function dtypeFlag(value: string | undefined): WeightDtype | undefined {
  if (value !== undefined && value !== "f16" && value !== "f32") {
    throw new FlagError(`--dtype: expected f16 or f32 (got "${value}")`);
  }
  return value;
}
