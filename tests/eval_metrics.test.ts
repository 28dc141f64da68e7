// ROUGE-L and BLEU-4 against values computed by hand (the arithmetic is in the comments).
import { deepEqual, equal } from "node:assert/strict";
import {
  bleu4,
  bleuTokens,
  lcsLength,
  metricTokens,
  ngramMatches,
  rougeL,
} from "../eval/metrics/mod.ts";

const close = (a: number, b: number, tol = 1e-12) => {
  if (!(Math.abs(a - b) <= tol)) throw new Error(`${a} != ${b} (tol ${tol})`);
};

Deno.test("tokens: one per CJK character or symbol, one per English word, NFKC, lower-cased", () => {
  deepEqual(metricTokens("患者应多喝水。"), ["患", "者", "应", "多", "喝", "水", "。"]);
  deepEqual(metricTokens("BMI 是 24.5，Normal"), ["bmi", "是", "24", ".", "5", ",", "normal"]);
  deepEqual(metricTokens("  "), []);
});

Deno.test("ROUGE-L, character level for Chinese", () => {
  // cand 患者应多喝水 (6), ref 患者要多喝温水 (7): LCS 患者多喝水 = 5
  // P = 5/6, R = 5/7, F = 2PR/(P+R) = (50/42) / (65/42) = 10/13
  equal(lcsLength([..."患者应多喝水"], [..."患者要多喝温水"]), 5);
  const r = rougeL("患者应多喝水", "患者要多喝温水");
  close(r.precision, 5 / 6);
  close(r.recall, 5 / 7);
  close(r.f, 10 / 13);
  equal(rougeL("", "参考").f, 0);
  equal(rougeL("完全不同", "甲乙").f, 0);
  equal(rougeL("同样", "同样").f, 1);
});

Deno.test("ROUGE-L, word level for English", () => {
  // the cat sat on the mat / the cat is on the mat: LCS the cat on the mat = 5 of 6 and 6
  const r = rougeL("The cat sat on the mat", "the cat is on the mat");
  close(r.f, 5 / 6);
});

Deno.test("BLEU-4: clipped precisions, geometric mean, no brevity penalty at equal length", () => {
  // 甲乙丙丁戊 vs 甲乙丙丁己: p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2 → (0.2)^(1/4)
  deepEqual(ngramMatches([..."甲乙丙丁戊"], [..."甲乙丙丁己"], 2), { matches: 3, total: 4 });
  close(bleu4("甲乙丙丁戊", "甲乙丙丁己"), Math.pow(0.2, 0.25));
  close(bleu4("甲乙丙丁戊", "甲乙丙丁戊"), 1);
});

Deno.test("BLEU-4: geometric smoothing of empty orders and the brevity penalty", () => {
  // 甲乙丙 vs 甲乙丁丙: p1 = 3/3, p2 = 1/2, p3: 0 of 1 → 1/(2·1), p4: no 4-grams → 1/(4·1)
  // product 1/16 → ^(1/4) = 1/2; c = 3 < r = 4 → BP = exp(1 − 4/3)
  close(bleu4("甲乙丙", "甲乙丁丙"), 0.5 * Math.exp(1 - 4 / 3));
  // clipping: 的的的的 vs 的是: p1 = 1/4, p2 0 of 3 → 1/6, p3 0 of 2 → 1/8, p4 0 of 1 → 1/8
  close(bleu4("的的的的", "的是"), Math.pow((1 / 4) * (1 / 6) * (1 / 8) * (1 / 8), 0.25));
});

Deno.test("BLEU-4: no unigram match or an empty candidate scores 0", () => {
  equal(bleu4("甲乙", "丙丁"), 0);
  equal(bleu4("", "丙丁"), 0);
  equal(bleuTokens(["a"], ["a"], 1), 1);
});
