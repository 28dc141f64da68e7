// The bot and the evaluation on a Llama-family model directory (the tiny random-weights Qwen3 of
// tests/helpers/qwen3_model.ts, with the real tokenizer): the bot's in-process engine prompts with
// the model's chat template (system prompt and history included) and answers in the chat; `deno
// task eval` scores multiple choice (loglik with `--template chat` rendered by the chat template,
// and generate) and the held-out split of a build made with the Qwen3 tokenizer.
import assert from "node:assert/strict";
import { gpuSkipReason } from "./helpers/gpu_skip.ts";
import type { Update } from "npm:grammy@1.46.0/types";
import { createBot } from "../bot/bot.ts";
import { createCliEngine, parseBotArgs } from "../bot/cli.ts";
import { buildDataset } from "../data/build/mod.ts";
import { loadByteLevelTokenizer } from "../data/tokenizer/bytelevel/mod.ts";
import { createPromptBuilder } from "../data/prompt/mod.ts";
import { parseEvalArgs, runEvaluation } from "../eval/cli.ts";
import { promptEncoder } from "../eval/model.ts";
import { buildMcMessages, buildMcPrompt } from "../eval/prompts.ts";
import { loadTask, parseTaskSpecs } from "../eval/formats/tasks.ts";
import type { LocalEngine } from "../serve/engine/engine.ts";
import type { ChatMessage, Engine, GenerationRequest } from "../serve/engine/types.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";
import { writeQwen3Dir } from "./helpers/qwen3_model_dir.ts";

const DATA = new URL("./fixtures/datasets", import.meta.url).pathname;

const gpuReason = await gpuSkipReason("llama_bot_eval");
const dir = gpuReason ? "" : await writeQwen3Dir();
if (dir) globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

Deno.test({
  name: "bot --model on a Qwen3 directory: chat-template prompts with system and history",
  ignore: gpuReason !== "",
  async fn() {
    const fake = startFakeTelegram();
    const cfg = parseBotArgs([
      "--model",
      dir,
      "--api-root",
      fake.apiRoot,
      "--kv",
      ":memory:",
      "--length",
      "short",
      // sampled: the random model's greedy answer is blank (not kept as history); its nearly
      // flat distribution makes eight sampled tokens of only blanks practically impossible
      "--temperature",
      "1",
      "--system",
      "你是一名医生。",
    ], { TELEGRAM_BOT_TOKEN: fake.token });
    assert.equal(cfg.engine.kind, "local");
    const engine = await createCliEngine(cfg.engine) as LocalEngine;
    const seen: ChatMessage[][] = [];
    // The engine as the bot sees it, recording what the bot asks.
    const spy: Engine = Object.create(engine);
    spy.generate = (req: GenerationRequest) => {
      seen.push(req.messages);
      return engine.generate(req);
    };
    // Short answers: the random model's noise must leave room for history in its 512 context.
    const bot = createBot(spy, {
      ...cfg.options,
      answerLengths: { short: 8 },
      editIntervalMs: 10,
      log: () => {},
    });
    const tok = await loadByteLevelTokenizer(dir);
    const promptOf = (messages: ChatMessage[]) =>
      tok.decode(engine.encodeMessages(messages), { skipSpecialTokens: false });
    try {
      await bot.init();
      assert.equal(engine.info.architecture, "qwen3");
      let update = 1;
      const ask = async (text: string) => {
        const message = fake.sendText({ chatId: 7, text });
        await bot.handleUpdate({ update_id: update++, message } as unknown as Update);
      };
      await ask("/start");
      assert.match(fake.botTexts(7).at(-1)!, /基于 Qwen3 微调/);
      await ask("头痛怎么办？");
      assert.equal(seen.length, 1);
      const head = "<|im_start|>system\n你是一名医生。<|im_end|>\n";
      assert.equal(
        promptOf(seen[0]),
        `${head}<|im_start|>user\n头痛怎么办？<|im_end|>\n<|im_start|>assistant\n`,
      );
      assert.ok(fake.botTexts(7).length >= 2, "the answer was sent");
      await ask("发烧呢？");
      assert.equal(seen.length, 2);
      const second = promptOf(seen[1]);
      // the first turn is history now: its question and the bot's answer, then the new question
      assert.deepEqual(seen[1].map((m) => m.role), ["system", "user", "assistant", "user"]);
      assert.ok(second.startsWith(`${head}<|im_start|>user\n头痛怎么办？<|im_end|>\n`), second);
      assert.ok(second.includes("<|im_start|>assistant\n"));
      assert.ok(
        second.endsWith("<|im_start|>user\n发烧呢？<|im_end|>\n<|im_start|>assistant\n"),
        second,
      );
    } finally {
      await bot.stop();
      await engine.close();
      await fake.close();
    }
  },
});

Deno.test({
  name: "eval --model on a Qwen3 directory: loglik with its chat template, generate, held-out",
  ignore: gpuReason !== "",
  async fn() {
    const tok = await loadByteLevelTokenizer(dir);
    // --template chat prompts are the chat template's rendering, encoded without extra specials
    const [task] = await Promise.all(
      parseTaskSpecs(`cmmlu:${DATA}/eval/cmmlu`).map((spec) => loadTask(spec)),
    );
    const builder = createPromptBuilder(tok);
    const opts = { shots: 1, template: "chat" as const };
    // a question with a dev example of its subject (not itself) to show as an earlier turn
    const item = task.items.find((i) => buildMcMessages(i, task.dev, opts).length > 1)!;
    const text = buildMcPrompt(item, task.dev, opts, (m) => builder.text(m));
    assert.ok(text.startsWith("<|im_start|>user\n以下是关于"), text);
    assert.equal((text.match(/<\|im_start\|>assistant\n/g) ?? []).length, 2); // shot + question
    assert.deepEqual(
      promptEncoder(tok, true).encode(text),
      builder.encode(buildMcMessages(item, task.dev, opts)),
    );

    const build = await Deno.makeTempDir({ prefix: "medglm-llama-eval-data-" });
    const out = await Deno.makeTempDir({ prefix: "medglm-llama-eval-out-" });
    try {
      await buildDataset({
        name: "heldout",
        root: DATA,
        sources: [{ name: "med_chatglm", paths: ["med-chatglm/data/train.txt"] }],
        split: { validRatio: 0.3 },
        tokens: { tokenizer: dir, maxSeqLength: 96, promptFormat: "chat-template" },
      }, { out: build, progress: false });
      const common = ["--model", dir, "--limit", "2", "--out", out, "--no-progress"];
      const loglik = await runEvaluation(
        parseEvalArgs([
          ...common,
          "--tasks",
          `cmmlu:${DATA}/eval/cmmlu,heldout:${build}`,
          "--template",
          "chat",
          "--shots",
          "1",
          "--open-max-new-tokens",
          "4",
        ])!,
        () => {},
      );
      assert.match(loglik.table, /^cmmlu \/ clinical_knowledge\s+\d+\.\d% \(\d\/2\)$/m);
      const h = loglik.variants[0].heldout!;
      assert.equal(h.examples, 2);
      // Random weights of std 0.02 at hidden 32 give nearly flat logits: the loss of each label
      // is close to log(vocabulary), which also shows labels and logits line up.
      assert.ok(Math.abs(h.loss - Math.log(151936)) < 0.05, `held-out loss ${h.loss}`);
      assert.ok(h.rougeL !== undefined && h.rougeL >= 0);
      const gen = await runEvaluation(
        parseEvalArgs([
          ...common,
          "--tasks",
          `cmmlu:${DATA}/eval/cmmlu`,
          "--scorer",
          "generate",
          "--max-new-tokens",
          "4",
        ])!,
        () => {},
      );
      const o = gen.variants[0].overall;
      assert.equal(o.total, 2);
      assert.equal(o.errors, 0);
      // int8 weights load for the Llama family too: the same questions score without errors.
      const logs: string[] = [];
      const q8 = await runEvaluation(
        parseEvalArgs([...common, "--tasks", `cmmlu:${DATA}/eval/cmmlu`, "--quantize", "8"])!,
        (line) => logs.push(line),
      );
      assert.equal(q8.variants[0].overall.total, 2);
      assert.equal(q8.variants[0].overall.errors, 0);
      assert.match(logs.join("\n"), /int8/);
    } finally {
      await Deno.remove(build, { recursive: true });
      await Deno.remove(out, { recursive: true });
    }
  },
});
