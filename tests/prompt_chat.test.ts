// Chat prompts (§12), position ids, response post-processing, truncation and message mapping.
import assert from "node:assert/strict";
import {
  buildChatPrompt,
  buildInstructionContext,
  buildPrompt,
  ChatMessagesError,
  messagesToChat,
  processResponse,
} from "../data/prompt/mod.ts";
import { loadChatGLMTokenizer as loadTokenizer } from "../data/tokenizer/mod.ts";
import type { ChatGLMConfig } from "../core/models/chatglm/config.ts";
import { contextOf, positionAt } from "../core/models/chatglm/inputs.ts";

const FIX = new URL("./fixtures/chatglm-tokenizer/", import.meta.url);
const tok = await loadTokenizer(FIX.pathname);
// The model's own position rule (core/models/chatglm/inputs.ts) with the tokenizer's special ids.
const specials = {
  bosTokenId: tok.sopId,
  gmaskTokenId: tok.gmaskId,
  maskTokenId: tok.maskId,
} as ChatGLMConfig;
function modelPositionIds(ids: number[]): [number[], number[]] {
  const { ctx, mpos } = contextOf(ids, specials);
  const pos = ids.map((_, t) => positionAt({ pads: 0, ctx, mpos }, t));
  return [pos.map((p) => p[0]), pos.map((p) => p[1])];
}
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
    assert.deepEqual(modelPositionIds(ids), c.position_ids, `${c.id}: position_ids`);
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

Deno.test("the model's position ids fall back to [MASK]; need <sop>", () => {
  const ids = [10, tok.maskId, 11, tok.sopId, 12];
  assert.deepEqual(modelPositionIds(ids), [[0, 1, 2, 1, 1], [0, 0, 0, 1, 2]]);
  assert.throws(() => modelPositionIds([10, tok.gmaskId]), /<sop>/);
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

Deno.test("one instruction template: the chat prompt's is the training example's", () => {
  const history: [string, string][] = [["头痛", "多休息。"], ["发烧吗", "不发烧。"]];
  assert.equal(
    buildPrompt("要吃药吗？", history, "instruction"),
    "Instruction: 头痛\nAnswer: 多休息。\nInstruction: 发烧吗\nAnswer: 不发烧。\n" +
      "Instruction: 要吃药吗？\nAnswer: ",
  );
  // With no history the prompt is exactly what training examples are built from.
  assert.equal(
    buildPrompt("要吃药吗？", [], "instruction"),
    buildInstructionContext({ instruction: "要吃药吗？" }),
  );
  assert.equal(buildPrompt("要吃药吗？", history, "chat"), buildChatPrompt("要吃药吗？", history));
});
