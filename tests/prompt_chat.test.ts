// Chat prompts (§12), position ids, response post-processing, truncation and message mapping.
import assert from "node:assert/strict";
import {
  buildChatInput,
  buildChatPrompt,
  buildPrompt,
  ChatMessagesError,
  chatPositionIds,
  messagesToChat,
  processResponse,
} from "../data/prompt/mod.ts";
import { loadChatGLMTokenizer as loadTokenizer } from "../data/tokenizer/mod.ts";

const FIX = new URL("./fixtures/chatglm-tokenizer/", import.meta.url);
const tok = await loadTokenizer(FIX.pathname);
const lines = (name: string) =>
  Deno.readTextFileSync(new URL(name, FIX)).split("\n").filter((l) => l.trim()).map((l) =>
    JSON.parse(l)
  );

Deno.test("chat_prompts.jsonl: prompt, ids and position ids", () => {
  const cases = lines("chat_prompts.jsonl");
  assert.ok(cases.length >= 22);
  for (const c of cases) {
    const prompt = buildChatPrompt(c.query, c.history);
    assert.equal(prompt, c.prompt, `${c.id}: prompt`);
    const ids = tok.encode(prompt);
    assert.deepEqual(ids, c.ids, `${c.id}: ids`);
    assert.deepEqual(chatPositionIds(ids, tok), c.position_ids, `${c.id}: position_ids`);
    // without a token limit, buildChatInput is exactly this
    assert.deepEqual(buildChatInput(tok, c.query, c.history), { ids, prompt, droppedTurns: 0 });
  }
});

Deno.test("process_response.jsonl", () => {
  const cases = lines("process_response.jsonl");
  assert.ok(cases.length >= 20);
  for (const c of cases) {
    assert.equal(processResponse(c.raw), c.processed, JSON.stringify(c.raw));
  }
  // Python strip, not JS trim: U+FEFF stays, \x1c and \x85 go
  assert.equal(processResponse("\ufeffa\x1c\x85"), "\ufeffa");
});

Deno.test("chatPositionIds: falls back to [MASK]; needs <sop>", () => {
  const ids = [10, tok.maskId, 11, tok.sopId, 12];
  assert.deepEqual(chatPositionIds(ids, tok), [[0, 1, 2, 1, 1], [0, 0, 0, 1, 2]]);
  assert.throws(() => chatPositionIds([10, tok.gmaskId], tok), /<sop>/);
});

Deno.test("buildChatInput: drops the oldest turns first, then cuts the query's start", () => {
  const history: [string, string][] = [
    ["第一个问题是什么？", "第一个回答。"],
    ["第二个问题", "第二个回答，比较长一些，包含更多的内容。"],
    ["第三个问题", "第三个回答"],
  ];
  const query = "现在头痛怎么办？";
  const full = buildChatInput(tok, query, history);
  const lens = [0, 1, 2, 3].map((d) => tok.encode(buildChatPrompt(query, history.slice(d))).length);
  assert.equal(full.ids.length, lens[0]);
  // a limit between the sizes keeps the most turns that fit, renumbered from Round 0
  const r1 = buildChatInput(tok, query, history, { maxTokens: lens[1] });
  assert.equal(r1.droppedTurns, 1);
  assert.equal(r1.prompt, buildChatPrompt(query, history.slice(1)));
  assert.ok(r1.prompt.startsWith("[Round 0]\n问：第二个问题"));
  assert.deepEqual(r1.ids, tok.encode(r1.prompt));
  const r2 = buildChatInput(tok, query, history, { maxTokens: lens[1] - 1 });
  assert.equal(r2.droppedTurns, 2);
  assert.ok(r2.ids.length <= lens[1] - 1);
  const r3 = buildChatInput(tok, query, history, { maxTokens: lens[3] });
  assert.equal(r3.droppedTurns, 3);
  assert.equal(r3.prompt, query);
  // the query alone too long: its end is kept, and the specials always
  const r4 = buildChatInput(tok, query, history, { maxTokens: 5 });
  assert.equal(r4.droppedTurns, 3);
  assert.ok(r4.ids.length <= 5 && r4.ids.length >= 3, `${r4.ids.length}`);
  assert.ok(query.endsWith(r4.prompt) && r4.prompt.length > 0 && r4.prompt.length < query.length);
  assert.deepEqual(r4.ids.slice(-2), [tok.gmaskId, tok.sopId]);
  const r5 = buildChatInput(tok, query, history, { maxTokens: 2 });
  assert.deepEqual(r5.ids, [tok.gmaskId, tok.sopId]);
  assert.throws(() => buildChatInput(tok, query, history, { maxTokens: 1 }), /maxTokens/);
});

Deno.test("messagesToChat: pairs turns, merges, prepends system, names bad messages", () => {
  assert.deepEqual(messagesToChat([{ role: "user", content: "你好" }]), {
    query: "你好",
    history: [],
  });
  assert.deepEqual(
    messagesToChat([
      { role: "system", content: "你是医生。" },
      { role: "user", content: "头痛" },
      { role: "assistant", content: "多久了？" },
      { role: "user", content: "三天" },
      { role: "user", content: "还发烧" },
    ]),
    { query: "三天\n还发烧", history: [["你是医生。\n头痛", "多久了？"]] },
  );
  assert.deepEqual(
    messagesToChat([
      { role: "assistant", content: "您好，有什么可以帮您？" },
      { role: "user", content: "咳嗽" },
    ]),
    { query: "咳嗽", history: [["", "您好，有什么可以帮您？"]] },
  );
  const err = (msgs: unknown[], re: RegExp) =>
    assert.throws(
      () => messagesToChat(msgs as Parameters<typeof messagesToChat>[0]),
      (e: unknown) => e instanceof ChatMessagesError && re.test(e.message),
    );
  err([], /at least one/);
  err(
    [{ role: "user", content: "a" }, { role: "assistant", content: "b" }],
    /messages\[1\] \(assistant\): the last message must be a user/,
  );
  err(
    [{ role: "user", content: "a" }, { role: "tool", content: "b" }],
    /messages\[1\]: unknown role "tool"/,
  );
  err([{ role: "user", content: 5 }], /messages\[0\] \(user\): content must be a string/);
  err(
    [{ role: "user", content: "a" }, { role: "system", content: "s" }],
    /messages\[1\] \(system\)/,
  );
});

Deno.test("the instruction template writes earlier turns before the question, and truncates alike", async () => {
  const tok = await loadTokenizer(
    new URL("./fixtures/chatglm-tokenizer", import.meta.url).pathname,
  );
  const history: [string, string][] = [["头痛", "多休息。"], ["发烧吗", "不发烧。"]];
  assert.equal(
    buildPrompt("要吃药吗？", history, "instruction"),
    "Instruction: 头痛\nAnswer: 多休息。\nInstruction: 发烧吗\nAnswer: 不发烧。\n" +
      "Instruction: 要吃药吗？\nAnswer: ",
  );
  assert.equal(buildPrompt("要吃药吗？", history, "chat"), buildChatPrompt("要吃药吗？", history));
  const full = buildChatInput(tok, "要吃药吗？", history, { template: "instruction" });
  const cut = buildChatInput(tok, "要吃药吗？", history, {
    template: "instruction",
    maxTokens: full.ids.length - 1,
  });
  assert.equal(cut.droppedTurns, 1);
  assert.equal(cut.prompt, buildPrompt("要吃药吗？", history.slice(1), "instruction"));
  assert.deepEqual(cut.ids.slice(-2), [tok.gmaskId, tok.sopId]);
  assert.throws(
    () => buildChatInput(tok, "要吃药吗？", [], { template: "instruction", maxTokens: 3 }),
    /too small for the instruction template/,
  );
});
