// Evaluation hardening (issue 19): one-JSON-value files are not read line by line, held-out
// --limit takes the first N in file order, prompts cut to the context and the answer
// distribution are reported (a degenerate one warned about), and open questions without
// reference answers are answered into a file for later judging. Inputs are built here.
import assert, { deepEqual, equal, match, ok } from "node:assert/strict";
import { buildDataset } from "../data/build/mod.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import type { Engine, GenerationDelta, GenerationRequest } from "../serve/engine/types.ts";
import { type EvalSettings, evaluateVariant, type Variant } from "../eval/evaluate.ts";
import { parsePromptCblue } from "../eval/formats/promptcblue.ts";
import { loadTask, type McTask } from "../eval/formats/tasks.ts";
import { loadOpenTask, parseOpenQuestions } from "../eval/formats/open_questions.ts";
import type { LogitsModel } from "../eval/model.ts";
import { readHeldout } from "../eval/open_qa.ts";
import { comparisonTable, RESULTS_FORMAT, writeComparison } from "../eval/report/comparison.ts";
import type { McItem } from "../eval/types.ts";
import { parseEvalArgs } from "../eval/cli.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const tokenizer = await loadTokenizer(TINY);

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "medglm-eval-harden-" });
}

function settings(outDir: string, extra: Partial<EvalSettings> = {}): EvalSettings {
  return {
    scorer: "loglik",
    shots: 0,
    template: "plain",
    batchSize: 4,
    maxNewTokens: 8,
    openMaxNewTokens: 16,
    resume: false,
    outDir,
    progress: false,
    ...extra,
  };
}

Deno.test("PromptCBLUE: a pretty-printed JSON object is one value, not 40 broken lines", async () => {
  const dir = await tempDir();
  try {
    const mc = (i: number) => ({
      input: `问题${i}：以下哪项正确？`,
      target: "是",
      answer_choices: ["是", "否"],
      task_type: "cls",
      task_dataset: "CHIP-STS",
      sample_id: `s${i}`,
    });
    await Deno.writeTextFile(
      `${dir}/dev.json`,
      [mc(1), mc(2)].map((x) => JSON.stringify(x)).join("\n"),
    );
    // results.json: metrics as one pretty-printed object (no items)
    const metrics: Record<string, unknown> = {};
    for (let i = 0; i < 12; i++) metrics[`task${i}`] = { f1: 0.5, precision: 0.4, recall: 0.6 };
    await Deno.writeTextFile(`${dir}/results.json`, JSON.stringify(metrics, null, 2));
    // dev_structured.json: one object wrapping a list of items
    await Deno.writeTextFile(
      `${dir}/dev_structured.json`,
      JSON.stringify({ data: [mc(3), mc(4), mc(5)] }, null, 2),
    );
    const lines = JSON.stringify(metrics, null, 2).split("\n").length;
    ok(lines > 40);
    const res = parsePromptCblue(await Deno.readTextFile(`${dir}/results.json`), "results.json");
    equal(res.items.length, 0);
    equal(res.issues.length, 1, "one reason, not one per line");
    match(
      res.issues[0].reason,
      /one JSON object \(keys: task0, task1, .*\(12 keys\)\), not a list of items/,
    );
    const wrapped = parsePromptCblue(
      await Deno.readTextFile(`${dir}/dev_structured.json`),
      "dev_structured.json",
    );
    deepEqual(wrapped.items.map((i) => i.id), [
      "promptcblue/s3",
      "promptcblue/s4",
      "promptcblue/s5",
    ]);
    const structured = await Deno.readTextFile(`${dir}/dev_structured.json`);
    const starts = structured.split("\n").flatMap((l, i) => (l === "    {" ? [i + 1] : []));
    deepEqual(
      wrapped.items.map((i) => i.origin),
      starts.map((n) => `dev_structured.json:${n}`),
      "lines of the wrapped items",
    );
    const task = await loadTask({ kind: "promptcblue", path: dir, name: "promptcblue" });
    equal(task.items.length, 5);
    equal(task.issues.length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("held-out --limit: the first N records in file order, not the N shortest", async () => {
  const dir = await tempDir();
  try {
    const recs = [];
    for (let i = 0; i < 40; i++) {
      recs.push({
        instruction: `问题${i}：${"怎么办".repeat(1 + ((i * 7) % 13))}`,
        input: "",
        output: `回答${i}：${"多休息".repeat(1 + ((i * 5) % 11))}`,
      });
    }
    await Deno.writeTextFile(`${dir}/a.json`, JSON.stringify(recs));
    await buildDataset({
      name: "h",
      sources: [{ name: "s", paths: ["a.json"] }],
      split: { validRatio: 0.5 },
      tokens: { tokenizer: TINY },
    }, { progress: false, baseDir: dir, out: `${dir}/out` });
    const jsonl = (await Deno.readTextFile(`${dir}/out/valid-00000.jsonl`)).trim().split("\n")
      .map((l) => JSON.parse(l));
    const got = await readHeldout(`${dir}/out`, { limit: 5 });
    deepEqual(got.map((e) => e.id), [0, 1, 2, 3, 4].map((i) => `valid-00000:${i}`));
    deepEqual(got.map((e) => e.record.output), jsonl.slice(0, 5).map((r) => r.output));
    // not simply the shortest examples
    const all = await readHeldout(`${dir}/out`);
    const shortest = [...all].sort((a, b) => a.inputIds.length - b.inputIds.length).slice(0, 5);
    assert.notDeepEqual(got.map((e) => e.id).sort(), shortest.map((e) => e.id).sort());
    // the examples match their records' own tokenization order (ids belong to the record)
    equal(got.length, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A model that always prefers the letter `C`: its logits put all weight on C's token. */
function alwaysC(): LogitsModel {
  const V = 2048; // the tiny tokenizer's vocabulary
  const c = tokenizer.encode("C", { special: false });
  return {
    vocabSize: V,
    padId: 3,
    forward(rows) {
      const S = rows[0].length;
      const out = new Float32Array(rows.length * S * V);
      for (let r = 0; r < rows.length * S; r++) out[r * V + c[c.length - 1]] = 10;
      return Promise.resolve(out);
    },
  };
}

function mcTask(n: number): McTask {
  const items: McItem[] = [];
  for (let i = 0; i < n; i++) {
    items.push({
      id: `t/${i}`,
      subject: "医学",
      question: `第${i}题：${"下列关于高血压的说法，".repeat(6)}哪一项是正确的？`,
      options: { A: "甲", B: "乙", C: "丙", D: "丁" },
      answer: "ABCD"[i % 4],
      multi: false,
      origin: `t.csv:${i + 2}`,
    });
  }
  return { name: "med", kind: "cmmlu", path: "t.csv", items, dev: [], issues: [] };
}

Deno.test("report: prompts cut to the context are counted; a degenerate answer distribution is warned", async () => {
  const out = await tempDir();
  try {
    const variant: Variant = { name: "base", hash: "h1", model: alwaysC(), tokenizer };
    const task = mcTask(20);
    const { result } = await evaluateVariant(
      variant,
      [task],
      null,
      settings(out, { maxLength: 24 }),
    );
    const s = result.tasks.med;
    equal(s.total, 20);
    equal(s.truncated, 20, "every prompt is longer than 24 tokens");
    deepEqual(s.letters, { C: 20 });
    equal(s.correct, 5);
    equal(result.warnings.length, 1);
    match(
      result.warnings[0],
      /med: answered "C" for 20 of 20 questions \(100\.0%\): a degenerate choice/,
    );
    match(result.warnings[0], /share of "C" among the answers \(25\.0%\)/);
    const table = comparisonTable([result]);
    match(table, /25\.0% \(5\/20\) 20 cut/);
    match(table, /med answers\s+C 100%/);
    match(table, /warning: base: med: answered "C"/);
    const files = await writeComparison(out, {
      format: RESULTS_FORMAT,
      settings: {
        scorer: "loglik",
        shots: 0,
        template: "plain",
        batchSize: 4,
        maxNewTokens: 8,
        openMaxNewTokens: 16,
      },
      tasks: [{ name: "med", kind: "cmmlu", path: "t.csv", questions: 20, skipped: 0 }],
      variants: [result],
      issues: [],
    });
    const json = JSON.parse(await Deno.readTextFile(files.json));
    equal(json.variants[0].tasks.med.truncated, 20);
    deepEqual(json.variants[0].tasks.med.letters, { C: 20 });
    equal(json.variants[0].warnings.length, 1);
    // without a cut and with mixed answers: no warning, nothing cut
    const { result: wide } = await evaluateVariant(
      { ...variant, hash: "h2" },
      [mcTask(4)],
      null,
      settings(out, { maxLength: 2048 }),
    );
    equal(wide.tasks.med.truncated, 0);
    deepEqual(wide.warnings, [], "4 questions are too few to call degenerate");
    ok(!comparisonTable([wide]).includes(" cut"));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

function countingEngine(calls: string[]): Engine {
  return {
    info: { model: "scripted", backend: "webgpu", maxContext: 100, demo: false },
    async *generate(req: GenerationRequest): AsyncIterable<GenerationDelta> {
      const q = req.messages[req.messages.length - 1].content;
      calls.push(q);
      if (q.includes("太长")) {
        throw new Error("prompt is 500 tokens, over the model's context of 100");
      }
      yield { text: "建议" };
      yield { text: `就医（${q.length}）`, finishReason: "stop" };
      await Promise.resolve();
    },
    countPromptTokens: () => 1,
    stats: () => ({ active: 0, queued: 0, tokensGenerated: 0 }),
    close: () => Promise.resolve(),
  };
}

Deno.test("open questions: answers written to a file for judging, resumable, other fields kept", async () => {
  const dir = await tempDir();
  try {
    const qs = [
      { question: "高血压患者饮食要注意什么？", "ICD-10": "I10" },
      { question: "糖尿病的早期症状有哪些？", "ICD-10": "E11" },
      { question: "  ", "ICD-10": "X" },
      { question: "这个问题太长了", "ICD-10": "Z" },
      { id: 7, question: "失眠怎么办？", answer: "reference kept? no: ours wins" },
    ];
    await Deno.writeTextFile(`${dir}/question.json`, JSON.stringify(qs, null, 2));
    const parsed = parseOpenQuestions(await Deno.readTextFile(`${dir}/question.json`), "q.json");
    equal(parsed.questions.length, 4);
    equal(parsed.issues.length, 1);
    match(parsed.issues[0].reason, /no question text/);
    equal(parsed.issues[0].line, 10, "the third item starts on line 10");
    const task = await loadOpenTask(`${dir}/question.json`);
    equal(task.name, "open-question");
    const out = `${dir}/eval`;
    const calls: string[] = [];
    const variant: Variant = { name: "base", hash: "h", engine: countingEngine(calls), tokenizer };
    // a first run stopped after 2 questions (--limit 2), then the whole set with --resume
    await evaluateVariant(variant, [], null, settings(out, { limit: 2 }), [task]);
    equal(calls.length, 2);
    const { result } = await evaluateVariant(variant, [], null, settings(out, { resume: true }), [
      task,
    ]);
    equal(calls.length, 4, "only the 2 questions not yet answered are asked");
    const o = result.open![task.name];
    deepEqual({ questions: o.questions, errors: o.errors }, { questions: 4, errors: 1 });
    equal(o.file, `${out}/answers/open-question.base.jsonl`);
    const lines = (await Deno.readTextFile(o.file)).trim().split("\n").map((l) => JSON.parse(l));
    deepEqual(lines.map((l) => l.id), ["0", "1", "3", "7"]);
    deepEqual(lines[0], {
      "ICD-10": "I10",
      id: "0",
      question: "高血压患者饮食要注意什么？",
      answer: "建议就医（13）",
      model: "base",
    });
    match(lines[2].error, /over the model's context/);
    equal(lines[3].answer, "建议就医（6）", "the generated answer, not the item's own field");
    match(
      comparisonTable([result]),
      /open-question answers \(to judge\)\s+3\/4 → .*open-question\.base\.jsonl/,
    );
    // the CLI takes open:FILE as its own kind
    const cli = parseEvalArgs(["--model", "m", "--tasks", `open:${dir}/question.json,cmmlu:x`])!;
    deepEqual(cli.open, [`${dir}/question.json`]);
    equal(cli.taskSpecs.length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
