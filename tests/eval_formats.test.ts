// Benchmark readers on every fixture eval file, plus malformed items (reported with file:line
// and a reason, then skipped) and the task loader.
import assert, { deepEqual, equal, match, rejects, throws } from "node:assert/strict";
import {
  loadTask,
  parseMcCsv,
  parseMcJson,
  parsePackedOptions,
  parsePromptCblue,
  parseTaskSpecs,
  readCmb,
  readMcCsv,
  readMcJson,
  readPromptCblue,
} from "../eval/formats/mod.ts";

const F = new URL("./fixtures/datasets/", import.meta.url).pathname;

Deno.test("CMMLU CSV: unnamed index column, quoted cell with doubled quotes and a newline", async () => {
  const r = await readMcCsv(`${F}eval/cmmlu/test/clinical_knowledge.csv`);
  deepEqual(r.issues, []);
  equal(r.items.length, 6);
  deepEqual(r.items.map((i) => i.answer).join(""), "BBBACB");
  assert(r.items.every((i) => i.subject === "clinical_knowledge" && !i.multi));
  deepEqual(r.items[0].options, {
    A: "每分钟30到50次",
    B: "每分钟60到100次",
    C: "每分钟120到150次",
    D: "每分钟160次以上",
  });
  equal(r.items[5].question, '关于"少量多次"补水，下列说法正确的是\n（单选）');
  equal(r.items[5].id, "clinical_knowledge/5");
  match(r.items[5].origin, /clinical_knowledge\.csv:7$/);
  const dev = await readMcCsv(`${F}eval/cmmlu/dev/clinical_knowledge.csv`);
  equal(dev.items.length, 1);
  equal(dev.items[0].answer, "B");
});

Deno.test("CMB: questions joined with the answers-only file on id; multi-answer; A..D only", async () => {
  const r = await readCmb(
    `${F}eval/cmb/CMB-test-choice-question-merge.json`,
    `${F}eval/cmb/CMB-test-choice-answer.json`,
  );
  deepEqual(r.issues, []);
  deepEqual(r.items.map((i) => [i.id, i.subject, i.answer, i.multi]), [
    ["cmb/1", "内科学", "B", false],
    ["cmb/2", "基础护理", "ABD", true],
    ["cmb/3", "生理学", "C", false],
  ]);
  deepEqual(Object.keys(r.items[0].options), ["A", "B", "C", "D", "E"]);
  deepEqual(Object.keys(r.items[2].options), ["A", "B", "C", "D"]);
  match(r.items[1].origin, /question-merge\.json:18$/);
});

Deno.test("CMB join: the answers file fills and overrides; orphans and gaps are reported", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const q = (id: number, answer?: string) => ({
      id,
      exam_subject: "内科学",
      question: `问题${id}`,
      question_type: "单项选择题",
      option: { A: "甲", B: "乙", C: "丙", D: "丁" },
      ...(answer ? { answer } : {}),
    });
    await Deno.writeTextFile(`${dir}/q.json`, JSON.stringify([q(1), q(2, "A"), q(3)], null, 1));
    await Deno.writeTextFile(
      `${dir}/a.json`,
      JSON.stringify([{ id: 1, answer: "C" }, { id: 2, answer: "D" }, { id: 9, answer: "A" }]),
    );
    const r = await readCmb(`${dir}/q.json`, `${dir}/a.json`);
    deepEqual(r.items.map((i) => [i.id, i.answer]), [["cmb/1", "C"], ["cmb/2", "D"]]);
    const reasons = r.issues.map((i) => `${i.file.split("/").pop()}:${i.line ?? ""}: ${i.reason}`);
    deepEqual(reasons.sort(), [
      "a.json:: answer for id 9 has no question",
      "q.json:27: no answer",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("MMCU: options packed in one string, multi-answer ACD", async () => {
  const r = await readMcJson(`${F}alpaca-cot/eval/raw/mmcu/test.json`, "mmcu");
  deepEqual(r.issues, []);
  equal(r.items.length, 3);
  deepEqual(r.items[0].options, {
    A: "睡前长时间玩手机",
    B: "固定起床时间",
    C: "午睡三小时",
    D: "睡前喝浓咖啡",
  });
  deepEqual(r.items.map((i) => [i.subject, i.answer, i.multi]), [
    ["医学", "B", false],
    ["医学", "B", false],
    ["心理", "ACD", true],
  ]);
});

Deno.test("PromptCBLUE: the multiple-choice subset; the rest reported as not MC", async () => {
  const dev = await readPromptCblue(`${F}eval/promptcblue/dev.json`);
  equal(dev.items.length, 1);
  deepEqual(dev.items[0].options, { A: "是的", B: "不是" });
  equal(dev.items[0].answer, "A");
  equal(dev.items[0].subject, "CHIP-STS");
  equal(dev.items[0].id, "promptcblue/dev-1");
  deepEqual(dev.issues.map((i) => [i.line, i.reason]), [
    [2, "not multiple choice (answer_choices is null)"],
    [3, "not multiple choice (target is not one of answer_choices)"],
  ]);
  const test = await readPromptCblue(`${F}eval/promptcblue/test.json`);
  equal(test.items.length, 0);
  deepEqual(test.issues.map((i) => [i.line, i.reason]), [
    [1, "no reference answer (target is empty)"],
    [2, "not multiple choice (answer_choices is null)"],
    [3, "no reference answer (target is empty)"],
  ]);
  const multi = parsePromptCblue(
    JSON.stringify({ input: "x", target: "药物，疾病", answer_choices: ["疾病", "药物", "症状"] }) +
      "\n{broken\n",
    "m.jsonl",
  );
  deepEqual(multi.items.map((i) => [i.answer, i.multi]), [["AB", true]]);
  deepEqual(multi.issues.map((i) => i.line), [2]);
});

Deno.test("malformed CSV rows are reported with file:line and a reason and skipped", () => {
  const csv = [
    ",Question,A,B,C,D,Answer",
    "0,好问题,甲,乙,丙,丁,C",
    "1,少一列,甲,乙,丙,B",
    "2,答案越界,甲,乙,丙,丁,E",
    "3,,甲,乙,丙,丁,A",
    "4,空选项,甲,,丙,丁,A",
    "5,没有答案,甲,乙,丙,丁,",
    '6,"跨行',
    '问题",甲,乙,丙,丁,ｄ',
  ].join("\n");
  const r = parseMcCsv(csv, "bad/anatomy.csv");
  deepEqual(r.items.map((i) => [i.id, i.answer, i.origin]), [
    ["anatomy/0", "C", "bad/anatomy.csv:2"],
    ["anatomy/6", "D", "bad/anatomy.csv:8"],
  ]);
  deepEqual(r.issues.map((i) => `${i.file}:${i.line}: ${i.reason}`), [
    "bad/anatomy.csv:3: 6 cells, the header has 7",
    'bad/anatomy.csv:4: answer "E" names option E, which the question does not have (options ABCD)',
    "bad/anatomy.csv:5: empty question",
    "bad/anatomy.csv:6: option B is empty",
    "bad/anatomy.csv:7: no answer",
  ]);
  throws(() => parseMcCsv("a,b\n1,2\n", "x.csv"), /x\.csv:1: header .* lacks Question/);
});

Deno.test("malformed JSON items are reported and skipped", () => {
  const text = JSON.stringify(
    [
      { id: 1, question: "好", option: { A: "x", B: "y" }, answer: "B" },
      { id: 2, question: "", option: { A: "x", B: "y" }, answer: "A" },
      { id: 3, question: "缺选项", answer: "A" },
      { id: 4, question: "跳字母", option: { A: "x", C: "y" }, answer: "A" },
      { id: 5, question: "怪答案", option: { A: "x", B: "y" }, answer: "1" },
      { id: 1, question: "重复", option: { A: "x", B: "y" }, answer: "A" },
      "not an object",
    ],
    null,
    2,
  );
  const r = parseMcJson(text, "q.json", { idPrefix: "t" });
  deepEqual(r.items.map((i) => i.id), ["t/1"]);
  deepEqual(r.issues.map((i) => i.reason), [
    "no question text",
    "no options",
    "option letters AC are not consecutive from A",
    'answer "1" is not option letters',
    "duplicate id t/1",
    "not a JSON object",
  ]);
  assert(r.issues.every((i) => i.file === "q.json" && typeof i.line === "number" && i.line > 1));
  throws(() => parseMcJson("[1,", "broken.json"), /broken\.json:1: not valid JSON/);
});

Deno.test("packed option strings in several layouts", () => {
  deepEqual(parsePackedOptions("A:甲\nB:乙\nC:丙"), { A: "甲", B: "乙", C: "丙" });
  deepEqual(parsePackedOptions("A. 甲 B. 乙 C. 丙 D. 丁"), { A: "甲", B: "乙", C: "丙", D: "丁" });
  deepEqual(parsePackedOptions("（A）甲；（B）乙"), { A: "甲", B: "乙" });
  deepEqual(parsePackedOptions("Ａ、甲\nＢ、乙"), { A: "甲", B: "乙" });
  equal(parsePackedOptions("没有选项"), null);
});

Deno.test("task specs and loader: every fixture task, dev split, clear errors", async () => {
  const specs = parseTaskSpecs(
    `cmmlu:${F}eval/cmmlu,cmb:${F}eval/cmb,mmcu:${F}alpaca-cot/eval/raw/mmcu/test.json,` +
      `promptcblue:${F}eval/promptcblue,mmcu:${F}alpaca-cot/eval/raw/mmcu`,
  );
  deepEqual(specs.map((s) => s.name), ["cmmlu", "cmb", "mmcu", "promptcblue", "mmcu#2"]);
  const tasks = [];
  for (const s of specs) tasks.push(await loadTask(s));
  deepEqual(tasks.map((t) => [t.items.length, t.dev.length, t.issues.length]), [
    [6, 1, 0],
    [3, 0, 0],
    [3, 0, 0],
    [1, 0, 5],
    [3, 0, 0],
  ]);
  throws(() => parseTaskSpecs("mmlu:x"), /unknown task kind "mmlu"/);
  throws(() => parseTaskSpecs("cmmlu"), /not KIND:PATH/);
  await rejects(loadTask({ kind: "cmmlu", path: `${F}nope`, name: "cmmlu" }), /nope: cannot open/);
  await rejects(
    loadTask({ kind: "cmb", path: `${F}eval/cmmlu`, name: "cmb" }),
    /one \*question\*\.json/,
  );
});
