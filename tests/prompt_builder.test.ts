// The one prompt builder (ChatGLM's formats and a model's own chat template) and the chat-template
// training example, on the real Qwen3 tokenizer and transformers' renderings in the fixture.
import assert from "node:assert/strict";
import {
  buildChatInput,
  buildPrompt,
  buildTemplateTrainExample,
  compileChatTemplate,
  createPromptBuilder,
  IGNORE_INDEX,
  recordMessages,
} from "../data/prompt/mod.ts";
import { loadByteLevelTokenizer, loadChatGLMTokenizer } from "../data/tokenizer/mod.ts";
import { resolveConfig } from "../data/build/config.ts";
import { tokenizeRecord } from "../data/build/tokenize.ts";
import { createTally } from "../data/clean/tally.ts";
import { preset } from "../train/config.ts";
import { QWEN3_TOKENIZER_FIXTURES, qwen3TokenizerDir } from "./helpers/qwen3_tokenizer.ts";

const QWEN_DIR = await qwen3TokenizerDir();
const qwen = await loadByteLevelTokenizer(QWEN_DIR);
const CHATGLM_DIR = new URL("./fixtures/chatglm-tokenizer/", import.meta.url).pathname;
const glm = await loadChatGLMTokenizer(CHATGLM_DIR);
const cases = (await Deno.readTextFile(`${QWEN3_TOKENIZER_FIXTURES}chat_template.jsonl`))
  .split("\n").filter((l) => l).map((l) => JSON.parse(l));
const byId = (id: string) => cases.find((c) => c.id === id)!;
const IM_END = 151645;

Deno.test("builder: the tokenizer's chat template is the default, exact on the fixture's renderings", () => {
  const b = createPromptBuilder(qwen);
  assert.equal(b.format, "chat-template");
  const c = byId("chat0");
  assert.equal(b.text(c.messages), c.text);
  assert.deepEqual(b.encode(c.messages), c.ids);
  // enable_thinking false closes the think block of the generation prompt (chat1, chat2).
  const noThink = createPromptBuilder(qwen, { enableThinking: false });
  for (const id of ["chat1", "chat2"]) {
    const k = byId(id);
    assert.equal(k.enable_thinking, false);
    assert.equal(noThink.text(k.messages), k.text, id);
    assert.deepEqual(noThink.build(k.messages).ids, k.ids, id);
  }
  assert.equal(b.postProcess(" 答案 "), " 答案 ", "template answers are shown as written");
});

Deno.test("builder: ChatGLM's formats are the existing chat/instruction prompts", () => {
  const messages = [
    { role: "system" as const, content: "你是医生。" },
    { role: "user" as const, content: "头痛" },
    { role: "assistant" as const, content: "多休息。" },
    { role: "user" as const, content: "还疼怎么办？" },
  ];
  const history: [string, string][] = [["你是医生。\n头痛", "多休息。"]];
  for (const format of ["chat", "instruction"] as const) {
    const b = createPromptBuilder(glm, { format });
    assert.equal(b.format, format);
    assert.equal(b.text(messages), buildPrompt("还疼怎么办？", history, format));
    assert.deepEqual(b.encode(messages), glm.encode(b.text(messages)));
    // A budget that holds only the question: the same trimming as buildChatInput.
    const maxTokens = glm.encode(buildPrompt("还疼怎么办？", [], format)).length;
    const trimmed = b.build(messages, { maxTokens });
    assert.equal(trimmed.droppedTurns, 1);
    assert.deepEqual(
      trimmed,
      buildChatInput(glm, "还疼怎么办？", history, { maxTokens, template: format }),
    );
  }
  assert.equal(createPromptBuilder(glm).format, "chat", "ChatGLM has no template: chat");
  assert.equal(createPromptBuilder(glm).postProcess(" 你好,世界 "), "你好，世界");
  assert.throws(
    () => createPromptBuilder(glm, { format: "chat-template" }),
    /chat-template needs a chat template/,
  );
});

Deno.test("builder: over the budget, the oldest turns go first, then the question's start", () => {
  const b = createPromptBuilder(qwen);
  const sys = { role: "system" as const, content: "你是一名医生。" };
  const turns = [
    { role: "user" as const, content: "第一个问题：头痛怎么办？" },
    { role: "assistant" as const, content: "第一个回答：多休息，多喝水。" },
    { role: "user" as const, content: "第二个问题：还是疼呢？" },
    { role: "assistant" as const, content: "第二个回答：请去医院。" },
    { role: "user" as const, content: "最后的问题：挂哪个科？" },
  ];
  const messages = [sys, ...turns];
  const full = b.build(messages);
  assert.equal(full.droppedTurns, 0);
  const oneDropped = b.encode([sys, ...turns.slice(2)]);
  const r1 = b.build(messages, { maxTokens: full.ids.length - 1 });
  assert.equal(r1.droppedTurns, 1);
  assert.deepEqual(r1.ids, oneDropped);
  assert.ok(r1.prompt.startsWith("<|im_start|>system\n你是一名医生。"), "system kept");
  const onlyLast = b.encode([sys, turns[4]]);
  const r2 = b.build(messages, { maxTokens: onlyLast.length });
  assert.equal(r2.droppedTurns, 2);
  assert.deepEqual(r2.ids, onlyLast);
  // Shorter still: the question loses its start, its end stays.
  const r3 = b.build(messages, { maxTokens: onlyLast.length - 3 });
  assert.ok(r3.ids.length <= onlyLast.length - 3);
  assert.match(r3.prompt, /挂哪个科？<\|im_end\|>\n<\|im_start\|>assistant\n$/);
  assert.ok(!r3.prompt.includes("最后的问题"));
  assert.throws(() => b.build(messages, { maxTokens: 5 }), /too small for the chat template/);
  assert.throws(
    () => b.build([...turns.slice(0, 2)]),
    /messages\[1\] \(assistant\): the last message must be a user message/,
  );
  assert.throws(() => b.build([{ role: "tool", content: "x" } as never]), /unknown role "tool"/);
});

Deno.test("template training example: the fixture's chat4 rendering, only the answer supervised", () => {
  const template = compileChatTemplate(qwen.chatTemplate!, "tokenizer_config.json");
  const c = byId("chat4");
  const [user, assistant] = c.messages;
  const ex = buildTemplateTrainExample(qwen, template, {
    instruction: user.content,
    output: assistant.content,
  });
  // The rendered conversation (empty think block in the final turn), up to and with <|im_end|>.
  const end = c.ids.lastIndexOf(IM_END);
  assert.deepEqual(ex.inputIds, c.ids.slice(0, end + 1));
  const prompt = qwen.encode(
    "<|im_start|>user\n" + user.content + "<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.deepEqual(ex.promptIds, prompt);
  assert.equal(ex.seqLen, prompt.length);
  assert.deepEqual(
    qwen.decode(ex.targetIds),
    "<think>\n\n</think>\n\n" + assistant.content + "<|im_end|>",
  );
  assert.deepEqual(ex.labels.slice(0, ex.seqLen), new Array(ex.seqLen).fill(IGNORE_INDEX));
  assert.deepEqual(ex.labels.slice(ex.seqLen), ex.targetIds);
});

Deno.test("template training example: system, history and input; limits cut the answer first", () => {
  const template = compileChatTemplate(qwen.chatTemplate!);
  const rec = {
    system: "你是医生。",
    history: [["头痛", "多休息。"]] as [string, string][],
    instruction: "请回答下面的问题",
    input: "发烧39度怎么办？",
    output: "先物理降温，持续不退请及时就医，并注意补充水分。",
  };
  assert.deepEqual(recordMessages(rec).map((m) => m.role), [
    "system",
    "user",
    "assistant",
    "user",
    "assistant",
  ]);
  assert.equal(recordMessages(rec)[3].content, "请回答下面的问题\n发烧39度怎么办？");
  const full = buildTemplateTrainExample(qwen, template, rec);
  const text = qwen.decode(full.inputIds);
  assert.ok(text.startsWith("<|im_start|>system\n你是医生。<|im_end|>\n<|im_start|>user\n头痛"));
  // Earlier turns are prompt: labels start only in the last assistant turn.
  assert.ok(
    qwen.decode(full.promptIds).endsWith("发烧39度怎么办？<|im_end|>\n<|im_start|>assistant\n"),
  );
  const short = buildTemplateTrainExample(qwen, template, rec, { maxTargetLength: 4 });
  assert.equal(short.targetIds.length, 5);
  assert.equal(short.targetIds.at(-1), IM_END, "the end of turn is kept");
  assert.deepEqual(short.targetIds.slice(0, 4), full.targetIds.slice(0, 4));
  // A prompt over maxSourceLength loses the oldest turn, then the question's end.
  const noHistory = buildTemplateTrainExample(qwen, template, { ...rec, history: [] });
  const cut = buildTemplateTrainExample(qwen, template, rec, {
    maxSourceLength: noHistory.promptIds.length,
  });
  assert.deepEqual(cut.promptIds, noHistory.promptIds);
  const tiny = buildTemplateTrainExample(qwen, template, rec, {
    maxSourceLength: noHistory.promptIds.length - 3,
  });
  assert.ok(tiny.promptIds.length <= noHistory.promptIds.length - 3);
  assert.ok(qwen.decode(tiny.promptIds).includes("<|im_start|>user\n请回答"));
  // maxSeqLength: the answer gives way first.
  const seq = buildTemplateTrainExample(qwen, template, rec, {
    maxSeqLength: full.promptIds.length + 3,
  });
  assert.equal(seq.inputIds.length, full.promptIds.length + 3);
  assert.equal(seq.inputIds.at(-1), IM_END);
});

Deno.test("data build: tokens.promptFormat chat-template makes template examples; instruction needs ChatGLM", () => {
  const settings = (promptFormat?: string) =>
    resolveConfig({
      name: "t",
      sources: [{ name: "s", paths: ["x"] }],
      tokens: { tokenizer: QWEN_DIR, ...(promptFormat ? { promptFormat } : {}) } as never,
    }, "/").tokens!;
  const rec = {
    instruction: "胃里反酸烧心，吃什么药比较好？",
    input: "",
    output: "可以短期服用抑酸药，同时少吃辛辣，饭后不要马上躺下。",
    history: [["你好", "你好，请问哪里不舒服？"]] as [string, string][],
    source: "s",
    origin: "f.json:1",
    lang: "zh" as const,
  };
  const tally = createTally();
  const ex = tokenizeRecord(qwen, rec, settings("chat-template"), tally)!;
  const template = compileChatTemplate(qwen.chatTemplate!);
  const want = buildTemplateTrainExample(qwen, template, rec);
  assert.deepEqual(ex, { inputIds: want.inputIds, labels: want.labels, seqLen: want.seqLen });
  assert.equal(tally.counts["history-not-in-prompt"], undefined, "history is in the prompt");
  assert.equal(settings().promptFormat, "instruction", "the default stays the seed's template");
  assert.throws(
    () => tokenizeRecord(qwen, rec, settings(), createTally()),
    /promptFormat "instruction" needs ChatGLM-6B's tokenizer.*chat-template/,
  );
  assert.throws(
    () => settings("alpaca"),
    /promptFormat: expected one of instruction, chat-template/,
  );
  assert.throws(
    () => tokenizeRecord(glm, rec, settings("chat-template"), createTally()),
    /tokenizer_config\.json has no chat_template/,
  );
});

Deno.test("train preset medical-lora: the seed's recipe with Llama-family LoRA targets", () => {
  const seed = preset("chatglm-lora-medical");
  const p = preset("medical-lora");
  assert.equal(p.preset, "medical-lora");
  assert.deepEqual(p.targetModules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
  for (
    const k of ["lr", "loraR", "loraAlpha", "loraDropout", "scheduler", "warmupSteps"] as const
  ) {
    assert.equal(p[k], seed[k], k);
  }
  assert.equal(p.batchSize * p.gradAccumulation, seed.batchSize * seed.gradAccumulation);
});
