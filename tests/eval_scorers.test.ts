// The scorers against log-likelihoods computed by hand (a hand-made bigram model) and against an
// independent computation on the tiny ChatGLM through the CPU reference forward; the generation
// scorer with a scripted engine (unparsed answers counted, never guessed).
import assert, { deepEqual, equal, rejects } from "node:assert/strict";
import { readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import type { Engine, GenerationDelta, GenerationRequest } from "../serve/engine/types.ts";
import { PromptTooLongError } from "../serve/engine/types.ts";
import { readMcCsv, readMcJson } from "../eval/formats/mod.ts";
import type { LogitsModel, TokenEncoder } from "../eval/model.ts";
import { buildMcMessages, buildMcPrompt } from "../eval/prompts.ts";
import { scoreGenerate } from "../eval/scorers/generate.ts";
import { answerCandidates, continuationLogprobs, scoreLoglik } from "../eval/scorers/loglik.ts";
import type { McItem } from "../eval/types.ts";
import { loadRefWeights, refForward, type RefModel, refRule41 } from "./reference/chatglm.ts";

// --- a hand-made model: the next-token distribution depends only on the current token ---------
// ids: 0 pad, 1 A, 2 B, 3 C, 4 D, 5 any other character, 6 [gMASK], 7 <sop>. Each row of weights
// sums to 10, so p = weight / 10 and log p is easy to write down.
const V = 8;
const WEIGHTS: Record<number, number[]> = {
  7: [0.5, 4, 2, 1, 1, 0.5, 0.5, 0.5], // after <sop>: p(A) = .4, p(B) = .2, p(C) = p(D) = .1
  1: [1, 1, 5, 1, 1, 0.5, 0.25, 0.25], // after A: p(B) = .5, p(C) = p(D) = .1
};
const weightsOf = (id: number) => WEIGHTS[id] ?? new Array(V).fill(1.25); // else uniform .125

const handTokenizer: TokenEncoder = {
  encode(text, opts) {
    const ids = [...text].map((ch) =>
      ({ A: 1, B: 2, C: 3, D: 4 } as Record<string, number>)[ch] ?? 5
    );
    return opts?.special === false ? ids : [...ids, 6, 7];
  },
};

interface Calls {
  forward: number[][][];
  forwardLast: number[][][];
}

function handModel(
  withLast: boolean,
  calls: Calls = { forward: [], forwardLast: [] },
): LogitsModel {
  const logitsOf = (ids: number[][], last: boolean) => {
    const S = ids[0].length;
    for (const row of ids) {
      equal(row.length, S, "rows have equal length");
      const firstReal = row.findIndex((t) => t !== 0);
      assert(row.slice(firstReal).every((t) => t !== 0), "padding is on the left only");
    }
    const positions = last ? 1 : S;
    const out = new Float32Array(ids.length * positions * V);
    ids.forEach((row, b) => {
      for (let p = 0; p < positions; p++) {
        const tok = row[last ? S - 1 : p];
        out.set(weightsOf(tok).map(Math.log), (b * positions + p) * V);
      }
    });
    return out;
  };
  return {
    vocabSize: V,
    padId: 0,
    forward: (ids) => {
      calls.forward.push(ids);
      return Promise.resolve(logitsOf(ids, false));
    },
    ...(withLast
      ? {
        forwardLast: (ids: number[][]) => {
          calls.forwardLast.push(ids);
          return Promise.resolve(logitsOf(ids, true));
        },
      }
      : {}),
  };
}

const close = (a: number, b: number, tol = 1e-6) =>
  assert(Math.abs(a - b) <= tol, `${a} != ${b} (tol ${tol})`);

Deno.test("continuation log-probs equal the hand-computed values, any batching", async () => {
  const ctx = [5, 5, 5, 6, 7];
  const short = [5, 6, 7];
  const requests = [
    { context: ctx, continuation: [1] }, // ln .4
    { context: ctx, continuation: [2] }, // ln .2
    { context: short, continuation: [3] }, // ln .1 (a shorter row: left-padded)
    { context: ctx, continuation: [1, 2] }, // ln .4 + ln .5
    { context: ctx, continuation: [1, 2, 3] }, // ln .4 + ln .5 + ln .125
    { context: short, continuation: [2, 4] }, // ln .2 + ln .125
  ];
  const want = [0.4, 0.2, 0.1, 0.2, 0.025, 0.025].map(Math.log);
  let first: number[] | null = null;
  for (const withLast of [false, true]) {
    for (
      const [batchSize, maxLogitBytes] of [[1, undefined], [2, undefined], [8, undefined], [8, 1]]
    ) {
      const calls: Calls = { forward: [], forwardLast: [] };
      const got = await continuationLogprobs(handModel(withLast, calls), requests, {
        batchSize,
        maxLogitBytes,
      });
      // under a 1-byte logits budget every full forward holds a single row
      if (maxLogitBytes === 1) assert(calls.forward.every((rows) => rows.length === 1));
      got.forEach((g, i) => close(g, want[i]));
      if (first) deepEqual(got, first, "identical results whatever the batching");
      else first = got;
    }
  }
  await rejects(
    continuationLogprobs(handModel(false), [{ context: ctx, continuation: [9] }]),
    /outside the vocabulary/,
  );
});

Deno.test("one-letter candidates share one row and use the last-position path", async () => {
  const calls: Calls = { forward: [], forwardLast: [] };
  const item: McItem = {
    id: "q1",
    subject: "s",
    question: "问",
    options: { A: "一", B: "二", C: "三", D: "四" },
    answer: "B",
    multi: false,
    origin: "x:1",
  };
  const [r] = await scoreLoglik(
    [{ item, prompt: "问题", key: "k" }],
    handTokenizer,
    handModel(true, calls),
    { batchSize: 4 },
  );
  equal(calls.forward.length, 0);
  equal(calls.forwardLast.length, 1);
  equal(calls.forwardLast[0].length, 1, "the four candidates are one row");
  deepEqual(calls.forwardLast[0][0], [5, 5, 6, 7]);
  equal(r.predicted, "A");
  equal(r.correct, false);
  close(r.scores!.A, Math.log(0.4));
  close(r.scores!.B, Math.log(0.2));
  close(r.scores!.C, Math.log(0.1));
  close(r.scores!.D, Math.log(0.1));
});

Deno.test("multiple-answer questions score every combination of two or more letters", async () => {
  const item: McItem = {
    id: "m1",
    subject: "s",
    question: "多选",
    options: { A: "一", B: "二", C: "三", D: "四" },
    answer: "AB",
    multi: true,
    origin: "x:1",
  };
  deepEqual(answerCandidates(item), [
    "AB",
    "AC",
    "AD",
    "BC",
    "BD",
    "CD",
    "ABC",
    "ABD",
    "ACD",
    "BCD",
    "ABCD",
  ]);
  const ten = { ...item, options: Object.fromEntries([..."ABCDEFGHIJ"].map((l) => [l, l])) };
  equal(answerCandidates(ten).length, 45 + 120 + 210, "10 options: combinations of 2 to 4 letters");
  const [r] = await scoreLoglik([{ item, prompt: "问", key: "k" }], handTokenizer, handModel(true));
  equal(r.predicted, "AB");
  equal(r.correct, true);
  // AB: .4 · .5; AC: .4 · .1; BC: .2 · .125; ABC: .4 · .5 · .125; BCD: .2 · .125 · .125
  close(r.scores!.AB, Math.log(0.2));
  close(r.scores!.AC, Math.log(0.04));
  close(r.scores!.BC, Math.log(0.025));
  close(r.scores!.ABC, Math.log(0.025));
  close(r.scores!.BCD, Math.log(0.2 * 0.125 * 0.125));
});

Deno.test("a prompt over maxLength keeps its end and is marked truncated", async () => {
  const calls: Calls = { forward: [], forwardLast: [] };
  const item: McItem = {
    id: "t",
    subject: "s",
    question: "q",
    options: { A: "a", B: "b" },
    answer: "A",
    multi: false,
    origin: "x:1",
  };
  const [r] = await scoreLoglik(
    [{ item, prompt: "一二三四五六", key: "k" }],
    handTokenizer,
    handModel(true, calls),
    { maxLength: 4 },
  );
  equal(r.truncated, true);
  deepEqual(calls.forwardLast[0][0], [5, 5, 6, 7]);
});

// --- the tiny ChatGLM through the CPU reference ----------------------------------------------
const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const DATA = new URL("./fixtures/datasets/", import.meta.url).pathname;

async function referenceModel(): Promise<{ ref: RefModel; model: LogitsModel }> {
  const config = await readChatGLMConfig(TINY);
  const ref: RefModel = { config, weights: await loadRefWeights(TINY) };
  const one = (ids: number[]) => {
    const { mask, pos } = refRule41(ids, config);
    return refForward(ref, ids, 1, ids.length, mask, pos);
  };
  return {
    ref,
    model: {
      vocabSize: config.vocabSize,
      padId: config.padTokenId,
      forward(rows) {
        const S = rows[0].length, Vt = config.vocabSize;
        const out = new Float32Array(rows.length * S * Vt);
        rows.forEach((row, b) => {
          let pad = 0;
          while (row[pad] === config.padTokenId) pad++;
          out.set(one(row.slice(pad)), (b * S + pad) * Vt);
        });
        return Promise.resolve(out);
      },
    },
  };
}

/** Σ log-softmax over the whole unpadded sequence prompt + answer, straight from the reference. */
function directLogprob(ref: RefModel, context: number[], cont: number[]): number {
  const ids = [...context, ...cont];
  const { mask, pos } = refRule41(ids, ref.config);
  const logits = refForward(ref, ids, 1, ids.length, mask, pos);
  const Vt = ref.config.vocabSize;
  let total = 0;
  cont.forEach((tok, j) => {
    const off = (context.length - 1 + j) * Vt;
    let max = -Infinity;
    for (let v = 0; v < Vt; v++) max = Math.max(max, logits[off + v]);
    let sum = 0;
    for (let v = 0; v < Vt; v++) sum += Math.exp(logits[off + v] - max);
    total += logits[off + tok] - max - Math.log(sum);
  });
  return total;
}

Deno.test("loglik scorer on the tiny model agrees with the reference forward, 0- and 1-shot", async () => {
  const tok = await loadTokenizer(TINY);
  const { ref, model } = await referenceModel();
  const test = (await readMcCsv(`${DATA}eval/cmmlu/test/clinical_knowledge.csv`)).items;
  const dev = (await readMcCsv(`${DATA}eval/cmmlu/dev/clinical_knowledge.csv`)).items;
  const mmcu = (await readMcJson(`${DATA}alpaca-cot/eval/raw/mmcu/test.json`, "mmcu")).items;
  const items = [test[0], test[5], mmcu[2]]; // single, the multi-line question, multi-answer
  for (const shots of [0, 1]) {
    const questions = items.map((item) => ({
      item,
      prompt: buildMcPrompt(item, dev, { shots, template: "plain" }),
      key: item.id,
    }));
    const results = await scoreLoglik(questions, tok, model, { batchSize: 4 });
    results.forEach((r, i) => {
      const q = questions[i];
      const context = tok.encode(q.prompt);
      const cands = answerCandidates(q.item);
      deepEqual(Object.keys(r.scores!), cands);
      let best = cands[0];
      for (const c of cands) {
        const want = directLogprob(ref, context, tok.encode(c, { special: false }));
        close(r.scores![c], want, 1e-4);
        if (r.scores![c] > r.scores![best]) best = c;
      }
      equal(r.predicted, best);
      equal(r.correct, best === q.item.answer);
    });
  }
});

// --- generation with a scripted engine --------------------------------------------------------
function scriptedEngine(answer: (req: GenerationRequest) => string | Error): Engine {
  return {
    info: { model: "scripted", backend: "webgpu", maxContext: 100, demo: false },
    async *generate(req): AsyncIterable<GenerationDelta> {
      equal(req.temperature, 0);
      const a = answer(req);
      if (a instanceof Error) throw a;
      // split into pieces to exercise the streaming concatenation
      for (const piece of a.match(/.{1,2}/gsu) ?? []) yield { text: piece };
      yield { text: "", finishReason: "stop", usage: { promptTokens: 1, completionTokens: 1 } };
      await Promise.resolve();
    },
    countPromptTokens: () => 1,
    stats: () => ({ active: 0, queued: 0, tokensGenerated: 0 }),
    close: () => Promise.resolve(),
  };
}

Deno.test("generate scorer: letters extracted, unparsed and refused prompts counted as wrong", async () => {
  const test = (await readMcCsv(`${DATA}eval/cmmlu/test/clinical_knowledge.csv`)).items;
  const mmcu = (await readMcJson(`${DATA}alpaca-cot/eval/raw/mmcu/test.json`, "mmcu")).items;
  const items = [test[0], test[1], test[2], test[3], mmcu[2]];
  const replies: Record<string, string | Error> = {
    [test[0].question]: "答案：B",
    [test[1].question]: "膳食纤维有益健康。",
    [test[2].question]: "选项Ｃ",
    [test[3].question]: new PromptTooLongError(120, 100),
    [mmcu[2].question]: "A、C和D",
  };
  const engine = scriptedEngine((req) => {
    const text = req.messages[req.messages.length - 1].content;
    const q = Object.keys(replies).find((k) => text.includes(k));
    return q ? replies[q] : new Error("unexpected prompt");
  });
  const results = await scoreGenerate(
    items.map((item) => ({
      item,
      messages: buildMcMessages(item, [], { shots: 0, template: "plain" }),
      key: item.id,
    })),
    engine,
    { concurrency: 3 },
  );
  deepEqual(results.map((r) => [r.id, r.predicted, r.correct]), [
    ["clinical_knowledge/0", "B", true],
    ["clinical_knowledge/1", null, false],
    ["clinical_knowledge/2", "C", false],
    ["clinical_knowledge/3", null, false],
    ["mmcu/2", "ACD", true],
  ]);
  equal(results[1].response, "膳食纤维有益健康。");
  assert(results[3].error?.includes("over the model's context"));
  await rejects(
    scoreGenerate(
      [{ item: test[5], messages: [{ role: "user", content: "x" }], key: "k" }],
      engine,
    ),
    /unexpected prompt/,
  );
});
