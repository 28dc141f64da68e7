/**
 * The demo chain behind `deno task demo`, from scratch: build the sample data set
 * (data/configs/demo.json) → initialise a small ChatGLM-architecture model → train it fully on
 * the data (`--full`) → train a LoRA adapter on top → answer a few training questions greedily.
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
import {
  isLoraOnly,
  LORA_ONLY_SAMPLES,
  readBuildRecords,
  readSamples,
  recordKey,
} from "./split.ts";

export interface DemoOptions {
  /** Work folder (default runs/demo-build). */
  out?: string;
  seed?: number;
  /** Epochs of full training (default 20) and of LoRA training (default 3). */
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
  /**
   * Train the base without the topics of samples 110-185 (split.ts), so that a LoRA on all the
   * samples has something new to teach (default false: the base sees every training record).
   */
  holdOutTopics?: boolean;
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
4 heads, 2 layers, vocabulary 2048) that this project trains itself, from random weights, on its
own 300 sample Chinese medical Q&A pairs (\`data/samples/medical_qa.json\`), so that
\`deno task infer\` and \`deno task train\` run on a fresh clone with nothing downloaded. It repeats
answers it was trained on (prompted as \`Instruction: <question>\\nAnswer: \`) and knows nothing
else. Never use its output as medical advice.

- \`config.json\`, \`model.safetensors\` (float16): the base model, fully trained (\`--full\`).
- \`ice_text.model\`, \`tokenizer_config.json\`: the project's small SentencePiece tokenizer
  (2000 pieces).
- \`adapter/\`: a PEFT LoRA adapter trained on top of it (r 8, \`query_key_value\` and \`dense\`).

Rebuild it from scratch with \`deno task demo --install\`: 20 epochs of full training (learning
rate 5e-3), then 3 of LoRA, about 5 minutes on two CPU cores through llvmpipe; the result
reproduces about half of the training answers it is asked, many word for word. The shipped weights
came from a longer run: 25 epochs (learning rate 3e-3) continued for 10 more (\`--init-from\`,
learning rate 6e-4).
`;

/**
 * The demo's data under `out`: `data/` (data/configs/demo.json: the LoRA's, and the base's unless
 * `holdOutTopics`) and with `holdOutTopics` also `base-data/`, the base's: that build's training
 * records less the topics kept for the LoRA (split.ts). The validation records stay unseen by both.
 */
export async function buildDemoData(
  out: string,
  tokDir: string,
  holdOutTopics: boolean,
): Promise<{ samples: number; baseSamples: number; baseDir: string }> {
  const { config: dataConfig } = await loadConfig(DEMO_DATA_CONFIG);
  const tokens = dataConfig.tokens ? { ...dataConfig.tokens, tokenizer: tokDir } : undefined;
  await buildDataset({ ...dataConfig, tokens }, {
    baseDir: DEMO_DATA_CONFIG.replace(/\/[^/]*$/, ""),
    out: `${out}/data`,
    progress: false,
  });
  const samples = await readSamples();
  if (!holdOutTopics) {
    const train = await readBuildRecords(`${out}/data`, "train");
    return { samples: samples.length, baseSamples: train.length, baseDir: `${out}/data` };
  }
  const validKeys = new Set((await readBuildRecords(`${out}/data`, "valid")).map(recordKey));
  const baseSamples = samples.filter((s, i) => !isLoraOnly(i) && !validKeys.has(recordKey(s)));
  await Deno.mkdir(`${out}/base-samples`, { recursive: true });
  await writeFileAtomic(
    `${out}/base-samples/medical_qa.json`,
    JSON.stringify(baseSamples, null, 1) + "\n",
  );
  await buildDataset({ ...dataConfig, root: ".", split: { by: "record", validRatio: 0 }, tokens }, {
    baseDir: `${out}/base-samples`,
    out: `${out}/base-data`,
    progress: false,
  });
  return {
    samples: samples.length,
    baseSamples: baseSamples.length,
    baseDir: `${out}/base-data`,
  };
}

function lossRange(losses: { loss: number }[]) {
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

  log(`[1/5] data: building ${DEMO_DATA_CONFIG} into ${out}/data`);
  const data = await buildDemoData(out, tokDir, options.holdOutTopics ?? false);
  if (options.holdOutTopics) {
    log(
      `       base data: ${data.baseSamples} of ${data.samples} samples into ${out}/base-data ` +
        `(samples ${LORA_ONLY_SAMPLES.from}-${LORA_ONLY_SAMPLES.to - 1} are left to the LoRA)`,
    );
  }

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

  log(`[4/5] LoRA on top of the trained model → ${out}/lora`);
  const loraConfig: TrainConfig = {
    ...preset("demo"),
    ...common,
    preset: "demo",
    model: modelDir,
    full: false,
    outputDir: `${out}/lora`,
    loraR: 8,
    loraAlpha: 16,
    loraDropout: 0.05,
    targetModules: ["query_key_value", "dense"],
    lr: 2e-3,
    warmupSteps: 5,
    weightDecay: 0,
    epochs: options.loraEpochs ?? 3,
    saveSteps: 1_000_000,
  };
  const lora = await train(loraConfig, trainOptions);
  if (!lora.lastCheckpoint) throw new Error("demo: LoRA training wrote no checkpoint");
  const adapterDir = `${modelDir}/adapter`;
  await Deno.mkdir(adapterDir, { recursive: true });
  for (const f of ["adapter_config.json", "adapter_model.safetensors"]) {
    await copy(`${lora.lastCheckpoint}/${f}`, `${adapterDir}/${f}`);
  }

  log(`[5/5] answers (greedy, base + adapter) to training questions`);
  const samples = await readSamples();
  const model = await loadModel(modelDir, {
    adapter: adapterDir,
    log: () => {},
    progressBar: false,
  });
  const answers: DemoAnswer[] = [];
  try {
    // Questions from both parts: the base's own and the ones only the adapter has seen.
    const n = Math.min(options.questions ?? 5, samples.length);
    const picked = Array.from(
      { length: n },
      (_, i) => samples[Math.floor((i * samples.length) / n)],
    )
      .filter((s) => !s.input);
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
