// The shipped demo model (models/demo) and the pieces of `deno task demo`: a complete, small HF
// model directory whose special ids match its tokenizer, a loadable adapter, greedy answers that
// reproduce its training answers, the trainer defaulting to it (and saying it is a demo), and the
// seeded random initialisation the demo starts from.

import assert from "node:assert/strict";
import { loadModel } from "../core/models/chatglm/load.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { preset } from "../train/config.ts";
import { train } from "../train/train.ts";
import { DEMO_MODEL_DIR } from "../core/models/demo_dir.ts";
import { buildDemoData, demoConfigJson, runDemo } from "../demo/pipeline.ts";
import {
  NEW_TOPICS_PATH,
  readBuildRecords,
  readSamples,
  recordKey,
  REWORDED_PATH,
} from "../demo/split.ts";
import { writeRandomChatGLM } from "../demo/init_model.ts";
import { answerInstructions, overlap } from "../demo/generate.ts";
import { loadEngine } from "../serve/engine/load.ts";
import { readTensor } from "../core/tensor/tensor.ts";

const quiet = { log: () => {}, progressBar: false };

Deno.test("demo model: a small complete model dir whose special ids match the tokenizer", async () => {
  let total = 0;
  for (
    const f of [
      "config.json",
      "model.safetensors",
      "ice_text.model",
      "tokenizer_config.json",
      "README.md",
      "adapter/adapter_config.json",
      "adapter/adapter_model.safetensors",
    ]
  ) {
    total += (await Deno.stat(`${DEMO_MODEL_DIR}/${f}`)).size;
  }
  assert.ok(total < 6 * 1024 * 1024, `models/demo holds ${total} bytes`);
  const config = JSON.parse(await Deno.readTextFile(`${DEMO_MODEL_DIR}/config.json`));
  const tok = await loadTokenizer(DEMO_MODEL_DIR);
  assert.equal(config.bos_token_id, tok.sopId);
  assert.equal(config.eos_token_id, tok.eopId);
  assert.equal(config.mask_token_id, tok.maskId);
  assert.equal(config.gmask_token_id, tok.gmaskId);
  assert.equal(config.pad_token_id, tok.padId);
  assert.ok(config.vocab_size >= tok.textVocabSize);
  assert.deepEqual(config, demoConfigJson(tok));
  assert.match(await Deno.readTextFile(`${DEMO_MODEL_DIR}/README.md`), /not a medical model/);
});

Deno.test("demo model: the base answers its own topics, not the new ones; the quick start's adapter loads", async () => {
  const base = await readSamples();
  const fresh = await readSamples(NEW_TOPICS_PATH);
  const tok = await loadTokenizer(DEMO_MODEL_DIR);
  const meanOverlap = async (adapter: string | undefined, qs: typeof base) => {
    const model = await loadModel(DEMO_MODEL_DIR, { ...quiet, adapter });
    try {
      const answers = await answerInstructions(model, tok, qs.map((s) => s.instruction), 80);
      return qs.reduce((sum, s, i) => sum + overlap(answers[i], s.output), 0) / qs.length;
    } finally {
      model.dispose();
    }
  };
  const own = [0, 100, 200].map((i) => base[i]);
  const newTopics = [0, 30, 60].map((i) => fresh[i]);
  const ownByBase = await meanOverlap(undefined, own);
  assert.ok(ownByBase >= 0.5, `the base reproduced ${(100 * ownByBase).toFixed(0)}% of its own`);
  // The quick start's premise: the base alone does not know the new topics' answers …
  const newByBase = await meanOverlap(undefined, newTopics);
  assert.ok(newByBase < 0.3, `the base already knows ${(100 * newByBase).toFixed(0)}% of them`);
  // The shipped adapter is the quick start's (r 16 on every linear type), for the base's names.
  const cfg = JSON.parse(await Deno.readTextFile(`${DEMO_MODEL_DIR}/adapter/adapter_config.json`));
  assert.equal(cfg.r, preset("demo").loraR);
  assert.deepEqual([...cfg.target_modules].sort(), [...preset("demo").targetModules].sort());
  // Its effect on the new topics' loss is checked in tests/quickstart.test.ts: 100 steps lower it
  // clearly but do not make the tiny model repeat those answers word for word.
  const model = await loadModel(DEMO_MODEL_DIR, { ...quiet, adapter: `${DEMO_MODEL_DIR}/adapter` });
  model.dispose();
});

Deno.test("train without --model uses the demo model and says it is a demo", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-demo-train-" });
  const lines: string[] = [];
  try {
    const r = await train({ ...preset("demo"), model: null, outputDir: out, maxSteps: 1 }, {
      log: (l) => lines.push(l),
      progressStream: { writeSync: (b: Uint8Array) => b.length },
    });
    assert.equal(r.steps, 1);
    assert.ok(lines.some((l) => /demo model.*not a medical model/.test(l)), lines.join("\n"));
    // The plan printed is this run's (batch 4 × 2 at 128, the LoRA it trains), not inference's.
    assert.ok(
      lines.some((l) =>
        /GPU memory plan \(training: batch 4 × 2 accumulation, length 128, LoRA r 16/.test(l)
      ),
      lines.join("\n"),
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("writeRandomChatGLM: seeded HF-style init that loads as a model", async () => {
  const tok = await loadTokenizer(DEMO_MODEL_DIR);
  const json = { ...demoConfigJson(tok), hidden_size: 32, inner_hidden_size: 64, num_layers: 1 };
  const a = await Deno.makeTempDir({ prefix: "medglm-init-" });
  const b = await Deno.makeTempDir({ prefix: "medglm-init-" });
  try {
    await writeRandomChatGLM(a, json, 7);
    await writeRandomChatGLM(b, json, 7);
    assert.deepEqual(
      await Deno.readFile(`${a}/model.safetensors`),
      await Deno.readFile(`${b}/model.safetensors`),
    );
    const model = await loadModel(a, { ...quiet, dtype: "f32" });
    try {
      const params = model.parameters();
      const ln = await readTensor(
        params.get("transformer.layers.0.input_layernorm.weight")!,
      );
      assert.ok([...ln].every((v) => v === 1));
      const emb = await readTensor(
        params.get("transformer.word_embeddings.weight")!,
      ) as Float32Array;
      const std = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / emb.length);
      assert.ok(Math.abs(std - 0.02) < 0.002, `embedding std ${std}`);
    } finally {
      model.dispose();
    }
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("demo model: the default engine (no --model) prompts it as trained and answers", async () => {
  const samples = JSON.parse(
    await Deno.readTextFile(new URL("../data/samples/medical_qa.json", import.meta.url)),
  ) as { instruction: string; input?: string; output: string }[];
  const engine = await loadEngine({ ...quiet, backend: "webgpu", maxBatch: 2 });
  try {
    assert.equal(engine.info.demo, true);
    const s = samples[0];
    let text = "";
    for await (
      const d of engine.generate({
        messages: [{ role: "user", content: s.instruction }],
        temperature: 0,
        maxNewTokens: 80,
      })
    ) text += d.text;
    const o = overlap(text, s.output);
    assert.ok(o >= 0.8, `the demo reproduced ${(100 * o).toFixed(0)}%: ${text}`);
  } finally {
    await engine.close();
  }
});

Deno.test("deno task train with no model named trains the demo with the demo preset", async () => {
  const { withDemoDefault } = await import("../train/cli.ts");
  const { loadTrainConfig } = await import("../train/config.ts");
  const { config } = await loadTrainConfig(withDemoDefault([]));
  assert.equal(config.preset, "demo");
  assert.equal(config.model, "models/demo");
  assert.equal(config.data, null);
  assert.deepEqual(withDemoDefault(["--model", "m", "--data", "d"]), [
    "--model",
    "m",
    "--data",
    "d",
  ]);
  assert.deepEqual(withDemoDefault(["--preset=chatglm-lora-medical"]), [
    "--preset=chatglm-lora-medical",
  ]);
  await assert.rejects(() => loadTrainConfig(["--preset", "chatglm-lora-medical"]), /--model/);
});

Deno.test("deno task demo's chain, shortened: data → full training → LoRA → answers, with progress", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-demo-" });
  const lines: string[] = [];
  let progressBytes = 0;
  try {
    const r = await runDemo({
      out,
      fullEpochs: 1,
      loraEpochs: 1,
      questions: 2,
      log: (line) => lines.push(line),
      progressStream: { writeSync: (p) => (progressBytes += p.length, p.length) },
    });
    for (
      const stage of ["[1/5] data", "[2/5] model", "[3/5] full training", "[4/5] LoRA", "[5/5]"]
    ) {
      assert.ok(
        lines.some((l) => l.startsWith(stage)),
        `no "${stage}" line in ${lines.join("\n")}`,
      );
    }
    assert.ok(progressBytes > 0, "the trainer reported no progress");
    assert.ok(
      r.fullLoss.last < r.fullLoss.first,
      `full-training loss did not fall: ${JSON.stringify(r.fullLoss)}`,
    );
    assert.equal(r.answers.length, 2);
    const config = JSON.parse(await Deno.readTextFile(`${r.modelDir}/config.json`));
    assert.equal(config.medglm_prompt_template, "instruction");
    const model = await loadModel(r.modelDir, { ...quiet, adapter: r.adapterDir });
    try {
      assert.equal(model.config.hiddenSize, 128);
    } finally {
      model.dispose();
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("demo data: the base never sees the new topics; the LoRA's data is only them", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-demo-data-" });
  try {
    const r = await buildDemoData(out, DEMO_MODEL_DIR);
    assert.equal(r.baseDir, `${out}/base-data`);
    assert.equal(r.loraDir, `${out}/data`);
    const keys = (xs: { instruction: string; input?: string; output: string }[]) =>
      new Set(xs.map(recordKey));
    const baseSamples = keys(await readSamples());
    const newTopics = keys(await readSamples(NEW_TOPICS_PATH));
    const reworded = keys(await readSamples(REWORDED_PATH));
    const base = await readBuildRecords(r.baseDir, "train");
    assert.deepEqual(keys(base), baseSamples, "the base trains on every base sample");
    assert.equal((await readBuildRecords(r.baseDir, "valid")).length, 0);
    assert.deepEqual(keys(await readBuildRecords(r.loraDir, "train")), newTopics);
    assert.deepEqual(keys(await readBuildRecords(r.loraDir, "valid")), reworded);
    // No new-topic question or answer reaches the base.
    const baseTexts = new Set(base.flatMap((b) => [b.instruction.trim(), b.output.trim()]));
    for (const k of newTopics) {
      const [q, , a] = JSON.parse(k) as string[];
      assert.ok(!baseTexts.has(q) && !baseTexts.has(a), `new-topic record in the base: ${q}`);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
