/**
 * The demo chain behind `deno task demo`, from scratch: build the sample data sets
 * (data/configs/demo-base.json, the base's; data/configs/demo.json, the quick start's new topics)
 * → initialise a small ChatGLM-architecture model → train it fully on the base's data (`--full`)
 * → train the quick start's LoRA on the new topics on top → answer a few questions greedily.
 * Everything goes under `out/` (a complete model directory in `out/model`, its adapter in
 * `out/model/adapter`); `install` copies that into models/demo, the model the commands use when
 * no `--model` is given.
 */

import { copy, readFileBytes } from "./files.ts";
import { writeFileAtomic } from "../base/mod.ts";
import {
  bytesToF32,
  decodeSafetensors,
  DEMO_MODEL_DIR,
  loadChatGLM as loadModel,
  readLoraConfig,
  writeLoraConfig,
  writeSafetensors,
} from "../core/mod.ts";
import { buildDataset, loadChatGLMTokenizer as loadTokenizer, loadConfig } from "../data/mod.ts";
import { DEMO_DATA_CONFIG, preset, train, type TrainConfig } from "../train/mod.ts";
import { writeRandomChatGLM } from "./init_model.ts";
import { answerInstructions, overlap } from "./generate.ts";
import { DEMO_BASE_DATA_CONFIG, NEW_TOPICS_PATH, readSamples } from "./split.ts";

export interface DemoOptions {
  /** Work folder (default runs/demo-build). */
  out?: string;
  seed?: number;
  /** Epochs of full training (default 20) and of LoRA training on the new topics (default 10). */
  fullEpochs?: number;
  loraEpochs?: number;
  /** Training questions answered at the end (default 5). */
  questions?: number;
  /** Copy the result into models/demo. */
  install?: boolean;
  /**
   * Continue from this model directory (e.g. an earlier build's `model/`) instead of random
   * weights: more epochs without starting over.
   */
  initFrom?: string;
  /** Peak learning rate of the full training (default 5e-3). */
  fullLr?: number;
  /** Where the tokenizer files come from (default models/demo). */
  tokenizerDir?: string;
  log?: (line: string) => void;
  /** The trainer's progress line stream (default stderr). */
  progressStream?: { writeSync(p: Uint8Array): number };
}

export interface DemoAnswer {
  question: string;
  expected: string;
  answer: string;
  /** Share of the expected answer reproduced (in order). */
  overlap: number;
}

export interface DemoResult {
  modelDir: string;
  adapterDir: string;
  fullLoss: { first: number; last: number };
  loraLoss: { first: number; last: number };
  answers: DemoAnswer[];
  seconds: number;
}

/** The demo architecture: ChatGLM-6B's, small. Special ids come from the tokenizer. */
export function demoConfigJson(tok: {
  textVocabSize: number;
  sopId: number;
  eopId: number;
  maskId: number;
  gmaskId: number;
  padId: number;
}): Record<string, unknown> {
  return {
    _name_or_path: "medglm/demo",
    // Trained on the seed's instruction template only: the engine prompts it the same way.
    medglm_prompt_template: "instruction",
    architectures: ["ChatGLMModel"],
    bos_token_id: tok.sopId,
    eos_token_id: tok.eopId,
    mask_token_id: tok.maskId,
    gmask_token_id: tok.gmaskId,
    pad_token_id: tok.padId,
    hidden_size: 128,
    inner_hidden_size: 512,
    layernorm_epsilon: 1e-5,
    max_sequence_length: 256,
    model_type: "chatglm",
    num_attention_heads: 4,
    num_layers: 2,
    position_encoding_2d: true,
    torch_dtype: "float16",
    transformers_version: "4.27.1",
    use_cache: true,
    // ChatGLM's id layout: the matrices are a multiple of 64 rows, at least the tokenizer's size
    vocab_size: Math.ceil(tok.textVocabSize / 64) * 64,
  };
}

const TOKENIZER_FILES = ["ice_text.model", "tokenizer_config.json"];

const README = `# medglm demo model

A **demo**, not a medical model. A tiny model with the ChatGLM-6B (v1) architecture (hidden 128,
4 heads, 2 layers, vocabulary 2048) that this project trains itself, from random weights, on 224 of
its own sample Chinese medical Q&A pairs (\`data/samples/medical_qa.json\`), so that
\`deno task infer\` and \`deno task train\` run on a fresh clone with nothing downloaded. It repeats
answers it was trained on (prompted as \`Instruction: <question>\\nAnswer: \`) and knows nothing
else: the 76 Q&A of \`data/samples/new_topics.json\` (children, the elderly, exercise, mood,
women's health, eyes, teeth, smoking, organs, skin, hygiene) are left for the quick start's LoRA
(\`deno task train\`) to teach. Never use its output as medical advice.

- \`config.json\`, \`model.safetensors\` (float16): the base model, fully trained (\`--full\`) on
  data/configs/demo-base.json.
- \`ice_text.model\`, \`tokenizer_config.json\`: the project's small SentencePiece tokenizer
  (2000 pieces).
- \`adapter/\`: a PEFT LoRA adapter that teaches it the new topics: the quick start's
  (\`deno task train\`: r 16 on all four linear types, 100 steps on data/configs/demo.json).

Rebuild it from scratch with \`deno task demo --install\`: 20 epochs of full training (learning
rate 5e-3), then 10 of the quick start's LoRA on the new topics, on two CPU cores through llvmpipe.
The shipped base came from \`--full-epochs 35 --full-lr 3e-3\`, stopped (Ctrl-C saves) at step
824 of 980, training loss 0.03.
`;

/**
 * The demo's data under `out`: `base-data/` (data/configs/demo-base.json, every record for the
 * base's full training) and `data/` (data/configs/demo.json, the quick start's: new topics for
 * the LoRA, reworded questions to evaluate it). split.ts says what each holds.
 */
export async function buildDemoData(
  out: string,
  tokDir: string,
): Promise<{ baseDir: string; loraDir: string }> {
  for (const [config, dir] of [[DEMO_BASE_DATA_CONFIG, "base-data"], [DEMO_DATA_CONFIG, "data"]]) {
    const { config: dataConfig } = await loadConfig(config);
    const tokens = dataConfig.tokens ? { ...dataConfig.tokens, tokenizer: tokDir } : undefined;
    await buildDataset({ ...dataConfig, tokens }, {
      baseDir: config.replace(/\/[^/]*$/, ""),
      out: `${out}/${dir}`,
      progress: false,
    });
  }
  return { baseDir: `${out}/base-data`, loraDir: `${out}/data` };
}

/** Mean loss of the first and of the last five logged steps. */
export function lossRange(losses: { loss: number }[]) {
  const k = Math.min(5, losses.length);
  const mean = (xs: { loss: number }[]) => xs.reduce((s, l) => s + l.loss, 0) / xs.length;
  return { first: mean(losses.slice(0, k)), last: mean(losses.slice(-k)) };
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const log = options.log ?? ((line: string) => console.error(line));
  const out = (options.out ?? "runs/demo-build").replace(/\/+$/, "");
  const seed = options.seed ?? 42;
  const tokDir = options.tokenizerDir ?? DEMO_MODEL_DIR;
  const t0 = performance.now();
  await Deno.mkdir(out, { recursive: true });

  log(
    `[1/5] data: ${DEMO_BASE_DATA_CONFIG} (the base's) into ${out}/base-data, ` +
      `${DEMO_DATA_CONFIG} (new topics, the LoRA's) into ${out}/data`,
  );
  const data = await buildDemoData(out, tokDir);

  const tok = await loadTokenizer(tokDir);
  const modelJson = demoConfigJson(tok);
  if (options.initFrom) {
    log(`[2/5] model: continuing from ${options.initFrom} in ${out}/base`);
    await Deno.mkdir(`${out}/base`, { recursive: true });
    for (const f of ["config.json", "model.safetensors"]) {
      await copy(`${options.initFrom}/${f}`, `${out}/base/${f}`);
    }
  } else {
    log(`[2/5] model: random weights (normal 0.02, seed ${seed}) in ${out}/base`);
    await writeRandomChatGLM(`${out}/base`, modelJson, seed);
  }
  for (const f of TOKENIZER_FILES) await copy(`${tokDir}/${f}`, `${out}/base/${f}`);

  const common: Partial<TrainConfig> = {
    data: `${out}/data`,
    dtype: "f32",
    batchSize: 8,
    gradAccumulation: 1,
    maxSteps: null,
    evalSteps: 0,
    evalBatches: 0,
    loggingSteps: 10,
    maxLength: 160,
    keepCheckpoints: 1,
    seed,
    recompute: false,
    scheduler: "cosine",
  };
  const trainOptions = { log, progressStream: options.progressStream };

  log(`[3/5] full training (all parameters) → ${out}/full`);
  const fullConfig: TrainConfig = {
    ...preset("demo"),
    ...common,
    data: data.baseDir,
    preset: "demo",
    model: `${out}/base`,
    full: true,
    outputDir: `${out}/full`,
    lr: options.fullLr ?? 5e-3,
    warmupSteps: 30,
    weightDecay: 0.01,
    epochs: options.fullEpochs ?? 20,
    saveSteps: 1_000_000,
  };
  const full = await train(fullConfig, trainOptions);
  if (!full.lastCheckpoint) throw new Error("demo: full training wrote no checkpoint");

  // The trained base as a model directory, weights in float16 (small enough to commit).
  const modelDir = `${out}/model`;
  await Deno.mkdir(modelDir, { recursive: true });
  const ckptPath = `${full.lastCheckpoint}/model.safetensors`;
  const { tensors } = decodeSafetensors(await readFileBytes(ckptPath), ckptPath);
  await writeSafetensors(
    `${modelDir}/model.safetensors`,
    [...tensors].map(([name, t]) => ({
      name,
      dtype: "F16" as const,
      shape: t.shape,
      data: bytesToF32(t.data, t.dtype),
    })),
    { format: "pt" },
  );
  await writeFileAtomic(`${modelDir}/config.json`, JSON.stringify(modelJson, null, 2) + "\n");
  for (const f of TOKENIZER_FILES) await copy(`${tokDir}/${f}`, `${modelDir}/${f}`);
  await writeFileAtomic(`${modelDir}/README.md`, README);

  // The LoRA is the quick start's (the demo preset's adapter and learning rate) on the topics
  // the base has not seen, for whole epochs instead of the preset's step count.
  log(`[4/5] LoRA on top of the trained model, on the new topics → ${out}/lora`);
  const loraConfig: TrainConfig = {
    ...preset("demo"),
    ...common,
    data: data.loraDir,
    preset: "demo",
    model: modelDir,
    full: false,
    outputDir: `${out}/lora`,
    batchSize: preset("demo").batchSize,
    gradAccumulation: preset("demo").gradAccumulation,
    maxLength: preset("demo").maxLength,
    scheduler: preset("demo").scheduler,
    epochs: options.loraEpochs ?? 10,
    saveSteps: 1_000_000,
  };
  const lora = await train(loraConfig, trainOptions);
  if (!lora.lastCheckpoint) throw new Error("demo: LoRA training wrote no checkpoint");
  const adapterDir = `${modelDir}/adapter`;
  await Deno.mkdir(adapterDir, { recursive: true });
  for (const f of ["adapter_config.json", "adapter_model.safetensors"]) {
    await copy(`${lora.lastCheckpoint}/${f}`, `${adapterDir}/${f}`);
  }

  log(`[5/5] answers (greedy, base + adapter) to training questions of both parts`);
  const model = await loadModel(modelDir, {
    adapter: adapterDir,
    log: () => {},
    progressBar: false,
  });
  const answers: DemoAnswer[] = [];
  try {
    // Questions from both parts: the base's own and the new topics only the adapter has seen.
    const n = options.questions ?? 5;
    const parts = [await readSamples(), await readSamples(NEW_TOPICS_PATH)];
    const perPart = Math.ceil(n / 2);
    const picked = Array.from({ length: n }, (_, i) => {
      const part = parts[i % 2];
      return part[Math.floor(((i >> 1) * part.length) / perPart)];
    }).filter((s) => !s.input);
    const replies = await answerInstructions(model, tok, picked.map((s) => s.instruction));
    for (const [i, s] of picked.entries()) {
      const answer = replies[i];
      const o = overlap(answer, s.output);
      answers.push({ question: s.instruction, expected: s.output, answer, overlap: o });
      log(
        `Q: ${s.instruction}\nA: ${answer}\n   (training answer: ${s.output}; ${
          (100 * o).toFixed(0)
        }% reproduced)`,
      );
    }
  } finally {
    model.dispose();
  }
  if (options.install) {
    const adapterCfg = await readLoraConfig(adapterDir);
    await writeLoraConfig(adapterDir, { ...adapterCfg, baseModelNameOrPath: "models/demo" });
    for (const f of [...TOKENIZER_FILES, "config.json", "model.safetensors", "README.md"]) {
      await copy(`${modelDir}/${f}`, `${DEMO_MODEL_DIR}/${f}`);
    }
    await Deno.mkdir(`${DEMO_MODEL_DIR}/adapter`, { recursive: true });
    for (const f of ["adapter_config.json", "adapter_model.safetensors"]) {
      await copy(`${adapterDir}/${f}`, `${DEMO_MODEL_DIR}/adapter/${f}`);
    }
    log(`installed the demo model into ${DEMO_MODEL_DIR}`);
  }
  return {
    modelDir,
    adapterDir,
    fullLoss: lossRange(full.losses),
    loraLoss: lossRange(lora.losses),
    answers,
    seconds: (performance.now() - t0) / 1000,
  };
}
