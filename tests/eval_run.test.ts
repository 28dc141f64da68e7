// Whole-task runs on the fixture eval files with the tiny ChatGLM (CPU reference forward):
// resumable per-question cache (a run killed after N questions → the rerun computes only the
// rest, with identical results), determinism of results.json / comparison.svg, held-out
// perplexity and ROUGE-L/BLEU-4 on a real `deno task data` build.
import assert, { deepEqual, equal, match, notEqual, rejects } from "node:assert/strict";
import { readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { buildDataset } from "../data/build/mod.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import type { Engine, GenerationDelta } from "../serve/engine/types.ts";
import { readCache } from "../eval/cache.ts";
import { type EvalSettings, evaluateVariant, type Variant } from "../eval/evaluate.ts";
import { loadTask, type McTask } from "../eval/formats/tasks.ts";
import type { LogitsModel } from "../eval/model.ts";
import { exampleNll, perplexityOf, readHeldout } from "../eval/open_qa.ts";
import {
  comparisonSvg,
  comparisonTable,
  RESULTS_FORMAT,
  writeComparison,
} from "../eval/report/comparison.ts";
import {
  loadRefWeights,
  refForward,
  refLoss,
  type RefModel,
  refRule41,
} from "./reference/chatglm.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const DATA = new URL("./fixtures/datasets", import.meta.url).pathname;

const config = await readChatGLMConfig(TINY);
const ref: RefModel = { config, weights: await loadRefWeights(TINY) };
const tokenizer = await loadTokenizer(TINY);

function refLogits(ids: number[]): Float32Array {
  const { mask, pos } = refRule41(ids, config);
  return refForward(ref, ids, 1, ids.length, mask, pos);
}

/** The reference as a LogitsModel; `killAfter` forward calls it throws, like a killed run. */
function tinyModel(counter = { calls: 0, rows: 0 }, killAfter = Infinity): LogitsModel {
  return {
    vocabSize: config.vocabSize,
    padId: config.padTokenId,
    forward(rows) {
      if (counter.calls >= killAfter) return Promise.reject(new Error("killed"));
      counter.calls++;
      counter.rows += rows.length;
      const S = rows[0].length, V = config.vocabSize;
      const out = new Float32Array(rows.length * S * V);
      rows.forEach((row, b) => {
        let pad = 0;
        while (row[pad] === config.padTokenId) pad++;
        out.set(refLogits(row.slice(pad)), (b * S + pad) * V);
      });
      return Promise.resolve(out);
    },
  };
}

async function fixtureTasks(): Promise<McTask[]> {
  return [
    await loadTask({ kind: "cmmlu", path: `${DATA}/eval/cmmlu`, name: "cmmlu" }),
    await loadTask({
      kind: "mmcu",
      path: `${DATA}/alpaca-cot/eval/raw/mmcu/test.json`,
      name: "mmcu",
    }),
  ];
}

function settings(outDir: string, extra: Partial<EvalSettings> = {}): EvalSettings {
  return {
    scorer: "loglik",
    shots: 1,
    template: "plain",
    batchSize: 2,
    maxNewTokens: 16,
    openMaxNewTokens: 32,
    resume: false,
    outDir,
    progress: false,
    ...extra,
  };
}

Deno.test("a killed run resumes: only the remaining questions are computed, results identical", async () => {
  const tasks = await fixtureTasks();
  const dirA = await Deno.makeTempDir({ prefix: "medglm-eval-" });
  const dirB = await Deno.makeTempDir({ prefix: "medglm-eval-" });
  try {
    const variant = (model: LogitsModel): Variant => ({
      name: "base",
      hash: "tiny",
      model,
      tokenizer,
    });
    // A clean run.
    const all = { calls: 0, rows: 0 };
    const clean = await evaluateVariant(variant(tinyModel(all)), tasks, null, settings(dirA));
    equal(clean.result.overall.total, 9);
    // The same run killed after two forward passes (CMMLU's first two chunks of 2 questions).
    await rejects(
      evaluateVariant(variant(tinyModel(undefined, 2)), tasks, null, settings(dirB)),
      /killed/,
    );
    const cachePath = `${dirB}/cache/tiny/cmmlu.loglik.jsonl`;
    equal((await readCache(cachePath)).size, 4);
    // a line cut short by the kill is ignored
    await Deno.writeTextFile(cachePath, '{"id":"clinical_knowledge/4","ke', { append: true });
    const counter = { calls: 0, rows: 0 };
    const resumed = await evaluateVariant(
      variant(tinyModel(counter)),
      tasks,
      null,
      settings(dirB, { resume: true }),
    );
    deepEqual(resumed, clean);
    // everything but the two passes (2 questions each) done before the kill
    equal(counter.calls, all.calls - 2);
    equal(counter.rows, all.rows - 4);
    // A second resume computes nothing.
    const none = { calls: 0, rows: 0 };
    deepEqual(
      await evaluateVariant(
        variant(tinyModel(none)),
        tasks,
        null,
        settings(dirB, { resume: true }),
      ),
      clean,
    );
    equal(none.calls, 0);
    // Changing the prompt (shots) invalidates the cached lines: all recomputed.
    const again = { calls: 0, rows: 0 };
    const zeroShot = await evaluateVariant(
      variant(tinyModel(again)),
      tasks,
      null,
      settings(dirB, { resume: true, shots: 0 }),
    );
    assert(again.calls > 0);
    notEqual(
      JSON.stringify(zeroShot.questions.cmmlu.map((q) => q.scores)),
      JSON.stringify(clean.questions.cmmlu.map((q) => q.scores)),
    );
  } finally {
    await Deno.remove(dirA, { recursive: true });
    await Deno.remove(dirB, { recursive: true });
  }
});

Deno.test("results.json and comparison.svg are identical across runs; the table compares variants", async () => {
  const tasks = await fixtureTasks();
  const outs: string[] = [];
  const files: string[][] = [];
  try {
    for (let run = 0; run < 2; run++) {
      const dir = await Deno.makeTempDir({ prefix: "medglm-eval-" });
      outs.push(dir);
      const results = [];
      for (const [name, batchSize] of [["base", 1], ["other", 3]] as const) {
        const s = settings(dir, { batchSize: run === 0 ? batchSize : 4 - batchSize });
        const { result } = await evaluateVariant(
          { name, hash: name, model: tinyModel(), tokenizer },
          tasks,
          null,
          s,
        );
        results.push(result);
      }
      const written = await writeComparison(dir, {
        format: RESULTS_FORMAT,
        settings: {
          scorer: "loglik",
          shots: 1,
          template: "plain",
          batchSize: 2,
          maxNewTokens: 16,
          openMaxNewTokens: 32,
        },
        tasks: tasks.map((t) => ({
          name: t.name,
          kind: t.kind,
          path: "x",
          questions: t.items.length,
          skipped: t.issues.length,
        })),
        variants: results,
        issues: [],
      });
      files.push([await Deno.readTextFile(written.json), await Deno.readTextFile(written.svg)]);
      equal(comparisonSvg(results), files[run][1]);
      const table = comparisonTable(results);
      match(table, /^task \/ subject\s+base\s+other$/m);
      match(table, /^cmmlu \/ clinical_knowledge\s+\d+\.\d% \(\d\/6\)\s+\d+\.\d% \(\d\/6\)$/m);
      match(table, /^mmcu \/ 心理\s+\d+\.\d% \(\d\/1\)/m);
      match(table, /^mmcu \(all\)\s+\d+\.\d% \(\d\/3\)/m);
      match(table, /^overall\s+\d+\.\d% \(\d\/9\)/m);
    }
    // batch sizes differ between the runs; the files do not
    equal(files[0][0], files[1][0]);
    equal(files[0][1], files[1][1]);
    const json = JSON.parse(files[0][0]);
    equal(json.format, RESULTS_FORMAT);
    equal(json.variants.length, 2);
    const svg = files[0][1];
    assert(svg.startsWith("<svg"));
    // 4 groups (cmmlu subject, 2 mmcu subjects, overall) × 2 variants = 8 bars
    equal((svg.match(/<rect x="[\d.]+" y="[\d.]+" width="18"/g) ?? []).length, 8);
  } finally {
    for (const d of outs) await Deno.remove(d, { recursive: true });
  }
});

function scriptedEngine(reply: (content: string) => string): Engine {
  return {
    info: { model: "scripted", backend: "webgpu", maxContext: 1000, demo: false },
    async *generate(req): AsyncIterable<GenerationDelta> {
      yield { text: reply(req.messages[0].content) };
      yield { text: "", finishReason: "stop" };
      await Promise.resolve();
    },
    countPromptTokens: () => 1,
    stats: () => ({ active: 0, queued: 0, tokensGenerated: 0 }),
    close: () => Promise.resolve(),
  };
}

Deno.test("held-out split of a data build: perplexity equals the reference loss; ROUGE-L/BLEU-4", async () => {
  const out = await Deno.makeTempDir({ prefix: "medglm-eval-data-" });
  const evalOut = await Deno.makeTempDir({ prefix: "medglm-eval-" });
  try {
    await buildDataset({
      name: "heldout",
      root: DATA,
      sources: [{ name: "med_chatglm", paths: ["med-chatglm/data/train.txt"] }],
      split: { validRatio: 0.3 },
      tokens: { tokenizer: TINY, maxSeqLength: 96 },
    }, { out, progress: false });
    const examples = await readHeldout(out, { limit: 3 });
    equal(examples.length, 3);
    assert(examples.every((e) => /^valid-00000:\d+$/.test(e.id) && e.record.output.length > 0));
    const nll = await exampleNll(tinyModel(), examples, { maxLogitBytes: 1 });
    // each example alone through the reference and its loss (the trainer's shifted CE)
    let sum = 0, count = 0;
    examples.forEach((ex, i) => {
      const tokens = ex.labels.slice(1).filter((l) => l !== -100).length;
      const loss = refLoss(refLogits(ex.inputIds), [ex.labels], config.vocabSize);
      assert(
        Math.abs(nll[i].nll / nll[i].tokens - loss) < 1e-5,
        `${nll[i].nll / tokens} vs ${loss}`,
      );
      equal(nll[i].tokens, tokens);
      sum += loss * tokens;
      count += tokens;
    });
    const p = perplexityOf(nll);
    assert(Math.abs(p.loss - sum / count) < 1e-5);
    assert(Math.abs(p.perplexity - Math.exp(sum / count)) < 1e-3 * p.perplexity);
    // batched the same as one by one
    const batched = await exampleNll(tinyModel(), examples);
    batched.forEach((b, i) => assert(Math.abs(b.nll - nll[i].nll) < 1e-4));

    // The engine answers the first question with its reference, the others with nothing useful.
    const first = examples[0].record;
    const engine = scriptedEngine((content) =>
      content.includes(first.instruction) ? first.output : "不知道"
    );
    const { result } = await evaluateVariant(
      { name: "base", hash: "tiny", model: tinyModel(), engine, tokenizer },
      [],
      examples,
      settings(evalOut),
    );
    const h = result.heldout!;
    equal(h.examples, 3);
    assert(Math.abs(h.loss - p.loss) < 1e-6);
    assert(h.rougeL! >= 100 / 3 - 1e-9 && h.rougeL! < 100 / 3 + 34);
    assert(h.bleu4! >= 100 / 3 - 1e-9);
    match(comparisonTable([result]), /^held-out perplexity\s+\d+\.\d{3}$/m);
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(evalOut, { recursive: true });
  }
});
