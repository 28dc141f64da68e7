/**
 * `loadEngine({ model: dir, adapter?, merged?, backend?, dtype? })`: model and tokenizer from
 * directories, the backend chosen, the engine built. Every way this commonly goes wrong (missing
 * directory, unknown architecture, a tokenizer of another model, an adapter for another base, no
 * demo model yet) ends in an error that says what to do.
 */

import {
  type CausalLM,
  DEMO_MODEL_DIR,
  describeModelWeights,
  describeQuant,
  getGpu,
  type Gpu,
  isLlamaModel,
  loadModel,
  mergeAdapter,
  modelTypeOf,
  type QuantizeOption,
  readChatGLMConfig,
  readLlamaConfig,
  type WeightDtype,
} from "../../core/mod.ts";
import { isJsonObject, readJsonFile } from "../../base/mod.ts";
import {
  type AnyTokenizer,
  loadTokenizer,
  PROMPT_FORMATS,
  type PromptFormat,
} from "../../data/mod.ts";
import { defaultOnnxExportDir, loadOnnxDecoder, probeOnnxExport } from "../onnx/backend.ts";
import { buildEngine, DEFAULT_MAX_BATCH, type LocalEngine } from "./engine.ts";
import { BUILTIN_GENERATION_DEFAULTS, readGenerationDefaults } from "./generation_defaults.ts";

/** The demo model shipped with the project (built by `deno task demo`). */

export type BackendName = "webgpu" | "onnx" | "auto";

export interface LoadEngineOptions {
  /** Model directory; absent: the demo model. */
  model?: string;
  /** PEFT adapter directory. */
  adapter?: string;
  /** Fold the adapter into the base weights at load (faster steps, adapter no longer separate). */
  merged?: boolean;
  backend?: BackendName | string;
  /** Base weight storage (default: `defaultWeightDtype`, by adapter and model size). */
  dtype?: WeightDtype;
  /** int8/int4 weights (loadModel's `quantize`; an ONNX export must have been made quantized). */
  quantize?: QuantizeOption;
  /** ONNX export directory for the onnx backend (default: DIR/onnx of the model). */
  onnx?: string;
  /** Sequences decoding together (default 8). */
  maxBatch?: number;
  /** Longest prompt + answer (default the config's max_sequence_length). */
  maxContext?: number;
  /** Progress and memory plan lines (default stderr). */
  log?: (line: string) => void;
  progressBar?: boolean;
  /**
   * How conversations become prompts; default: what the model directory declares, else the
   * tokenizer's chat template when it has one, else ChatGLM's chat format.
   */
  promptTemplate?: PromptFormat;
  /** Qwen3 chat template: false closes the think block of the generation prompt. */
  enableThinking?: boolean;
}

/**
 * The prompt format a model directory declares in its config.json
 * (`"medglm_prompt_template": "instruction"` for models fine-tuned only on the seed's template,
 * such as the demo model); undefined when it declares none, and the engine takes the tokenizer's
 * chat template when it has one, else ChatGLM's chat format.
 */
export async function declaredPromptTemplate(dir: string): Promise<PromptFormat | undefined> {
  const path = `${dir}/config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a model directory needs an HF config.json",
  });
  const value = isJsonObject(json) ? json.medglm_prompt_template : undefined;
  if (value === undefined) return undefined;
  if (!PROMPT_FORMATS.includes(value as PromptFormat)) {
    throw new EngineLoadError(
      `${path}: medglm_prompt_template must be one of ${PROMPT_FORMATS.join(", ")} ` +
        `(got ${JSON.stringify(value)})\nfix: correct or remove the key`,
    );
  }
  return value as PromptFormat;
}

/** An error whose message already says how to fix it (front ends print it as is). */
export class EngineLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EngineLoadError";
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

export interface BackendChoice {
  backend: "webgpu" | "onnx";
  reason: string;
}

/**
 * Which backend serves, and why. `auto`: WebGPU on a hardware adapter; on a software one (or
 * none) ONNX Runtime when an export of the model exists, since ORT's CPU kernels are several
 * times faster than WGSL on llvmpipe; otherwise WebGPU on the software adapter.
 */
export async function chooseBackend(
  requested: string,
  gpu: () => Promise<Gpu>,
  onnxDir: string,
  modelDir = "DIR",
  adapterDir?: string,
): Promise<BackendChoice> {
  if (requested !== "webgpu" && requested !== "onnx" && requested !== "auto") {
    throw new EngineLoadError(`--backend: expected webgpu, onnx or auto (got "${requested}")`);
  }
  const probe = await probeOnnxExport(onnxDir, modelDir, adapterDir);
  const exported = probe.usable;
  const howToExport = `deno task export-onnx --model ${modelDir}${
    adapterDir ? ` --adapter ${adapterDir}` : ""
  } --out ${onnxDir}`;
  if (requested === "onnx") {
    if (!probe.usable) {
      throw new EngineLoadError(
        `--backend onnx: no usable ONNX export in ${onnxDir}: ${probe.reason}\nfix: make one ` +
          `with \`${howToExport}\`, or use --backend webgpu`,
      );
    }
    return { backend: "onnx", reason: `requested (export in ${onnxDir})` };
  }
  let g: Gpu;
  try {
    g = await gpu();
  } catch (err) {
    if (requested === "auto" && exported) {
      return { backend: "onnx", reason: `no WebGPU adapter; ONNX export in ${onnxDir}` };
    }
    throw err;
  }
  const name = g.adapterInfo.description || g.adapterInfo.device || g.adapterInfo.vendor ||
    "unknown adapter";
  if (requested === "webgpu") return { backend: "webgpu", reason: `requested (${name})` };
  if (!g.isSoftware) return { backend: "webgpu", reason: `hardware adapter ${name}` };
  if (exported) {
    return {
      backend: "onnx",
      reason: `software adapter ${name}: ONNX Runtime's CPU kernels run the export in ${onnxDir}`,
    };
  }
  return {
    backend: "webgpu",
    reason: `software adapter ${name} and no ONNX export in ${onnxDir}, so WebGPU runs on the ` +
      `CPU (slow; \`${howToExport}\` makes the faster ONNX backend available)`,
  };
}

/**
 * Loads the tokenizer of `dir` (whichever kind its files hold) and checks it belongs to the model
 * of `config.json`: no more tokens than embedding rows; for ChatGLM also its special ids (`ids`;
 * null for a Llama-family model, whose end-of-turn ids come from the tokenizer files).
 */
async function tokenizerFor(
  dir: string,
  vocabSize: number,
  ids: { eos: number; bos: number; gmask: number } | null,
): Promise<AnyTokenizer> {
  let tok: AnyTokenizer;
  try {
    tok = await loadTokenizer(dir);
  } catch (err) {
    throw new EngineLoadError(
      `${(err as Error).message}\nfix: a model directory needs the tokenizer files of its model ` +
        `(ice_text.model and tokenizer_config.json, or tokenizer.json); copy them from the ` +
        `checkpoint into ${dir}`,
    );
  }
  if (tok.vocabSize > vocabSize) {
    throw new EngineLoadError(
      `${tok.source}: the tokenizer has ${tok.vocabSize} tokens but the model's embedding ` +
        `has only ${vocabSize} rows (vocab_size in config.json): the tokenizer belongs to another ` +
        `model.\nfix: use the tokenizer files that came with this checkpoint`,
    );
  }
  if (
    tok.kind === "chatglm" && ids !== null &&
    (tok.eopId !== ids.eos || tok.sopId !== ids.bos || tok.gmaskId !== ids.gmask)
  ) {
    throw new EngineLoadError(
      `${tok.source}: the tokenizer's <sop>/<eop>/[gMASK] ids (${tok.sopId}/${tok.eopId}/` +
        `${tok.gmaskId}) differ from config.json's bos/eos/gmask_token_id (${ids.bos}/${ids.eos}/` +
        `${ids.gmask}): the tokenizer belongs to another model.\nfix: use the ice_text.model ` +
        "that came with this checkpoint",
    );
  }
  return tok;
}

export async function loadEngine(opts: LoadEngineOptions = {}): Promise<LocalEngine> {
  const demo = opts.model === undefined;
  const dir = (opts.model ?? DEMO_MODEL_DIR).replace(/\/+$/, "") || "/";
  const demoMissing = demo &&
    !(await Deno.stat(`${dir}/config.json`).then(() => true, () => false));
  if (demoMissing || !(await isDir(dir))) {
    throw new EngineLoadError(
      demo
        ? `the demo model is missing (no ${dir}/config.json).\nfix: build it with \`deno task demo\`, or pass ` +
          "--model DIR with a ChatGLM-6B model directory"
        : `--model ${dir}: no such directory.\nfix: pass the directory of an HF ChatGLM-6B ` +
          "checkpoint (config.json, weights, ice_text.model)",
    );
  }
  if (opts.adapter !== undefined && !(await isDir(opts.adapter))) {
    throw new EngineLoadError(
      `--adapter ${opts.adapter}: no such directory.\nfix: pass a PEFT adapter directory ` +
        "(adapter_config.json + adapter_model.safetensors or .bin), e.g. one written by " +
        "`deno task train`",
    );
  }
  if (opts.merged && opts.adapter === undefined) {
    throw new EngineLoadError("--merged needs --adapter DIR (the adapter to fold into the model)");
  }
  let modelType: string;
  try {
    modelType = await modelTypeOf(dir);
  } catch (err) {
    throw new EngineLoadError(
      `${(err as Error).message}\nfix: point --model at a ChatGLM-6B (v1) or Llama-family ` +
        "(Qwen2 / Qwen2.5, Qwen3, Llama 3) model directory",
    );
  }
  const llama = modelType !== "chatglm";
  let tokenizer: AnyTokenizer;
  if (llama) {
    // Merging is built for ChatGLM-6B only: say so rather than serve something other than what
    // was asked for. (int8/int4 weights and the ONNX backend work for both.)
    const chatglmOnly = (what: string, fix: string) =>
      new EngineLoadError(
        `${what} is implemented for ChatGLM-6B only; ${dir} holds a ${modelType} model.\n` +
          `fix: ${fix}`,
      );
    if (opts.merged) {
      throw chatglmOnly("--merged", "leave out --merged (the adapter is applied unmerged)");
    }
    let config;
    try {
      config = await readLlamaConfig(dir);
    } catch (err) {
      throw new EngineLoadError(`${(err as Error).message}\nfix: correct config.json`);
    }
    // End-of-turn ids: the tokenizer's eos token and generation_config.json's eos_token_id list.
    tokenizer = await tokenizerFor(dir, config.vocabSize, null);
  } else {
    let config;
    try {
      config = await readChatGLMConfig(dir);
    } catch (err) {
      throw new EngineLoadError(
        `${(err as Error).message}\nfix: point --model at a ChatGLM-6B (v1) model directory`,
      );
    }
    tokenizer = await tokenizerFor(dir, config.vocabSize, {
      eos: config.eosTokenId,
      bos: config.bosTokenId,
      gmask: config.gmaskTokenId,
    });
  }
  const promptTemplate = opts.promptTemplate ?? await declaredPromptTemplate(dir);
  const enableThinking = opts.enableThinking;
  // The demo's tiny vocabulary spells many characters in byte tokens and the small model gets
  // them wrong often enough to show U+FFFD: mask invalid UTF-8 for it by default.
  let defaults;
  try {
    defaults = await readGenerationDefaults(
      dir,
      demo ? { ...BUILTIN_GENERATION_DEFAULTS, validUtf8: true } : BUILTIN_GENERATION_DEFAULTS,
    );
  } catch (err) {
    throw new EngineLoadError(`${(err as Error).message}\nfix: correct or remove the file`);
  }
  const onnxDir = opts.onnx ?? defaultOnnxExportDir(dir, opts.adapter);
  const choice = await chooseBackend(opts.backend ?? "auto", getGpu, onnxDir, dir, opts.adapter);
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  const name = dir.split("/").filter(Boolean).pop() ?? dir;
  const adapterName = opts.adapter?.split("/").filter(Boolean).pop();
  const info = {
    model: demo ? "medglm-demo" : adapterName ? `${name}+${adapterName}` : name,
    backend: choice.backend,
    backendReason: choice.reason,
    architecture: modelType,
    demo,
    defaults,
  };
  if (choice.backend === "onnx") {
    // onnxruntime-node itself loads only here: only this backend needs it and --allow-ffi.
    const { decoder, model: onnxModel } = await loadOnnxDecoder({
      modelDir: dir,
      adapterDir: opts.adapter ?? null,
      exportDir: onnxDir,
      slots: maxBatch,
      maxContext: opts.maxContext,
    });
    const q = onnxModel.info.quantization ?? null;
    if (opts.quantize !== undefined && !q) {
      onnxModel.dispose();
      throw new EngineLoadError(
        `--quantize: the ONNX export in ${onnxDir} has float weights.\nfix: export it with ` +
          "`deno task export-onnx ... --quantize BITS`, or use --backend webgpu",
      );
    }
    const weights = `${q ? describeQuant(q) : onnxModel.info.dtype} (ONNX Runtime)`;
    return buildEngine({
      decoder,
      tokenizer,
      info: { ...info, weights },
      promptTemplate,
      enableThinking,
    });
  }
  let model: CausalLM;
  try {
    model = await loadModel(dir, {
      dtype: opts.dtype,
      quantize: opts.quantize,
      adapter: opts.adapter,
      maxContext: opts.maxContext,
      maxBatch,
      log: opts.log,
      progressBar: opts.progressBar,
    });
  } catch (err) {
    const msg = (err as Error).message;
    if (opts.adapter !== undefined && msg.includes(opts.adapter.replace(/\/+$/, ""))) {
      throw new EngineLoadError(
        /base model/.test(msg)
          ? `${msg}\nfix: this adapter does not fit the model in ${dir}; use an adapter trained ` +
            "on this base model (see base_model_name_or_path in its adapter_config.json), or " +
            "leave out --adapter"
          : `${msg}\nfix: --adapter needs a PEFT LoRA adapter directory (adapter_config.json + ` +
            "adapter_model.safetensors or adapter_model.bin), e.g. one written by `deno task train`",
      );
    }
    throw err;
  }
  try {
    if (opts.merged && !isLlamaModel(model)) await mergeAdapter(model);
  } catch (err) {
    model.dispose();
    throw err;
  }
  const weights = describeModelWeights(model);
  return buildEngine({
    model,
    tokenizer,
    maxBatch,
    info: { ...info, weights },
    promptTemplate,
    enableThinking,
  });
}
