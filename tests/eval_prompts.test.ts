// Prompts (zero-/k-shot, plain/chat) and answer extraction from generated text.
import assert, { deepEqual, equal } from "node:assert/strict";
import { buildMcMessages, buildMcPrompt, instructionLine, selectShots } from "../eval/prompts.ts";
import { extractAnswer } from "../eval/scorers/extract.ts";
import type { McItem } from "../eval/types.ts";

const item = (id: string, subject: string, answer: string, multi = false): McItem => ({
  id,
  subject,
  question: `问题${id}`,
  options: { A: "甲", B: "乙", C: "丙", D: "丁" },
  answer,
  multi,
  origin: `x.csv:${id}`,
});

Deno.test("zero-shot prompt: CMMLU-style Chinese header, options, 答案：", () => {
  const p = buildMcPrompt(item("1", "临床知识", "B"), [], { shots: 0, template: "plain" });
  equal(
    p,
    "以下是关于临床知识的单项选择题，请直接给出正确答案的选项。\n\n问题1\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：",
  );
  equal(buildMcPrompt(item("1", "临床知识", "B"), [], { shots: 0, template: "chat" }), p);
  equal(
    instructionLine("护理", true),
    "以下是关于护理的多项选择题，请直接给出所有正确答案的选项。",
  );
});

Deno.test("k-shot: first k dev items of the same subject, never the question itself", () => {
  const dev = [
    item("d1", "甲科", "A"),
    item("d2", "乙科", "B"),
    item("d3", "甲科", "C"),
    item(
      "d4",
      "甲科",
      "D",
    ),
  ];
  const q = item("q", "甲科", "B");
  deepEqual(selectShots(q, dev, 2).map((d) => d.id), ["d1", "d3"]);
  deepEqual(selectShots(q, dev, 9).map((d) => d.id), ["d1", "d3", "d4"]);
  deepEqual(selectShots(dev[0], dev, 1).map((d) => d.id), ["d3"]);
  const plain = buildMcPrompt(q, dev, { shots: 2, template: "plain" });
  equal(
    plain,
    "以下是关于甲科的单项选择题，请直接给出正确答案的选项。\n\n" +
      "问题d1\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：A\n\n" +
      "问题d3\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：C\n\n" +
      "问题q\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：",
  );
  const chat = buildMcMessages(q, dev, { shots: 1, template: "chat" });
  deepEqual(chat.map((m) => m.role), ["user", "assistant", "user"]);
  equal(chat[1].content, "A");
  const chatText = buildMcPrompt(q, dev, { shots: 1, template: "chat" });
  assert(chatText.startsWith("[Round 0]\n问：以下是关于甲科"));
  assert(chatText.includes("答案：\n答：A\n[Round 1]\n问：问题q\n"));
  assert(chatText.endsWith("答案：\n答："));
});

Deno.test("answer extraction: the forms models write", () => {
  const L = ["A", "B", "C", "D", "E"];
  const cases: [string, boolean, string | null][] = [
    ["答案：B", false, "B"],
    ["答案是 C。因为……", false, "C"],
    ["正确答案为D", false, "D"],
    ["Answer: b", false, null], // lower-case b is not an option letter
    ["Answer: B", false, "B"],
    ["选项B正确", false, "B"],
    ["我选C", false, "C"],
    ["B", false, "B"],
    ["(A) 1分钟", false, "A"],
    ["B. 5分钟", false, "B"],
    ["Ｃ", false, "C"],
    ["答案：Ａ和Ｃ", true, "AC"],
    ["A和C", true, "AC"],
    ["A、C、D", true, "ACD"],
    ["ABD", true, "ABD"],
    ["答案：ABD", true, "ABD"],
    ["答案：D,B", true, "BD"],
    ["B是正确的", false, "B"],
    ["测量前应静坐5分钟，即B项。", false, "B"],
    ["应静坐五分钟左右。", false, null],
    ["A选项和B选项都有可能", false, null],
    ["BMI偏高", false, null],
    ["A good answer is hard", false, null],
    ["答案：F", false, null],
    ["", true, null],
  ];
  for (const [text, multi, want] of cases) {
    equal(extractAnswer(text, L, multi), want, `${JSON.stringify(text)} → ${want}`);
  }
  equal(extractAnswer("答案：E", ["A", "B", "C", "D"], false), null);
});
