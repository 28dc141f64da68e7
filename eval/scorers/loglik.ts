/**
 * Option log-likelihood scoring (no generation). The prompt ends in `答案：` (then ChatGLM's
 * `[gMASK]` `<sop>`), and the scored continuation is the answer *letter*, as CMMLU scores it: the
 * candidate's score is the sum of log-probs of its tokens given the prompt, its ids encoded
 * without special tokens (the way training encodes targets). The prediction is the best-scoring
 * candidate; ties go to the earlier candidate.
 *
 * Candidates: each option letter for a single-answer question; for a multiple-answer question
 * every combination of two or more letters in letter order (`AB`, `ABD`, …: the answer space of
 * 多项选择题, which always have at least two correct options), scored the same way (with more
 * than 8 options, only combinations of up to 4 letters). Summed (not length-normalized)
 * log-probs, as CMMLU does for letters.
 *
 * Batching: each (question, candidate) needs one row, prompt + candidate minus its last token;
 * identical rows are computed once (every one-token letter shares the prompt row), rows are sorted
 * by length and left-padded in batches. Rows that need only their last position use the model's
 * `forwardLast` when it has one ([b, V] logits read back); the others the full forward, in
 * batches kept under `maxLogitBytes`. A prompt longer than
 * `maxLength` keeps its end (the question, `[gMASK]`, `<sop>`) and the result says `truncated`.
 */

import type { LogitsModel, TokenEncoder } from "../model.ts";
import { leftPad, logSumExp } from "../model.ts";
import type { McItem, QuestionResult } from "../types.ts";
import { optionLetters } from "../types.ts";

export interface ContinuationRequest {
  context: readonly number[];
  continuation: readonly number[];
}

export interface LoglikOptions {
  /** Rows per forward pass (default 8). */
  batchSize?: number;
  /** Longest row in tokens (default: no limit). */
  maxLength?: number;
  /** Largest [b, s, V] f32 logits of one full forward (default 1 GiB; at least one row). */
  maxLogitBytes?: number;
}

/** Σ log p(continuation | context) per request. */
export async function continuationLogprobs(
  model: LogitsModel,
  requests: readonly ContinuationRequest[],
  opts: LoglikOptions = {},
): Promise<number[]> {
  const batchSize = opts.batchSize ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(
      `batchSize must be a positive integer, got ${batchSize}`,
    );
  }
  interface Row {
    ids: number[];
    /** (request, token index, position in the unpadded row, target id) */
    wants: { req: number; pos: number; target: number }[];
  }
  const rows = new Map<string, Row>();
  requests.forEach((r, req) => {
    if (r.continuation.length === 0) {
      throw new Error(`request ${req}: empty continuation`);
    }
    if (r.context.length === 0) {
      throw new Error(`request ${req}: empty context`);
    }
    const ids = [...r.context, ...r.continuation.slice(0, -1)];
    const key = ids.join(",");
    let row = rows.get(key);
    if (!row) rows.set(key, row = { ids, wants: [] });
    r.continuation.forEach((target, j) => {
      if (!(target >= 0 && target < model.vocabSize)) {
        throw new RangeError(
          `request ${req}: token ${target} outside the vocabulary`,
        );
      }
      row!.wants.push({ req, pos: r.context.length - 1 + j, target });
    });
  });
  // Rows that need only their last position go through `forwardLast` when the model has it;
  // the rest through the full forward, in batches whose [b, s, V] logits stay under
  // `maxLogitBytes`. Longest first, so a batch holds rows of similar length; the sorts are
  // stable, so the order (and the float results) depend on nothing but the requests.
  const all = [...rows.values()];
  const isLast = (r: Row) => r.wants.every((w) => w.pos === r.ids.length - 1);
  const byLength = (a: Row, b: Row) => b.ids.length - a.ids.length;
  const lastRows = model.forwardLast ? all.filter(isLast).sort(byLength) : [];
  const fullRows = (model.forwardLast ? all.filter((r) => !isLast(r)) : all).sort(byLength);
  const out = new Array<number>(requests.length).fill(0);
  const V = model.vocabSize;
  const budget = opts.maxLogitBytes ?? 1 << 30;
  const run = async (batch: Row[], lastOnly: boolean) => {
    const padded = leftPad(batch.map((r) => r.ids), model.padId);
    const S = padded[0].length;
    const logits = lastOnly ? await model.forwardLast!(padded) : await model.forward(padded);
    const positions = lastOnly ? 1 : S;
    const expected = batch.length * positions * V;
    if (logits.length !== expected) {
      throw new Error(
        `model returned ${logits.length} logits, expected ${expected} ` +
          `([${batch.length}, ${positions}, ${V}])`,
      );
    }
    batch.forEach((row, b) => {
      const pad = S - row.ids.length;
      const lse = new Map<number, number>();
      for (const w of row.wants) {
        const off = lastOnly ? b * V : (b * S + pad + w.pos) * V;
        let z = lse.get(off);
        if (z === undefined) lse.set(off, z = logSumExp(logits, off, V));
        out[w.req] += logits[off + w.target] - z;
      }
    });
  };
  for (let at = 0; at < lastRows.length; at += batchSize) {
    await run(lastRows.slice(at, at + batchSize), true);
  }
  for (let at = 0; at < fullRows.length;) {
    const S = fullRows[at].ids.length;
    const n = Math.max(1, Math.min(batchSize, Math.floor(budget / (4 * S * V))));
    await run(fullRows.slice(at, at + n), false);
    at += n;
  }
  return out;
}

/** The candidate answers of an item (see the module comment). */
export function answerCandidates(item: McItem): string[] {
  const letters = optionLetters(Object.keys(item.options).length);
  if (!item.multi) return letters;
  // Beyond 8 options the combinations explode (2^n): only those of up to 4 letters are scored.
  const maxSize = letters.length > 8 ? 4 : letters.length;
  const out: string[] = [];
  for (let mask = 1; mask < 1 << letters.length; mask++) {
    if ((mask & (mask - 1)) === 0) continue; // a single letter
    let bits = 0;
    for (let m = mask; m; m &= m - 1) bits++;
    if (bits > maxSize) continue;
    out.push(letters.filter((_, i) => mask & (1 << i)).join(""));
  }
  // by size, then letter order: AB, AC, …, ABC, …
  return out.sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
}

export interface LoglikQuestion {
  item: McItem;
  /** The prompt text (encoded with ChatGLM's special tokens). */
  prompt: string;
  key: string;
}

/** Scores questions by candidate log-likelihood. */
export async function scoreLoglik(
  questions: readonly LoglikQuestion[],
  tok: TokenEncoder,
  model: LogitsModel,
  opts: LoglikOptions = {},
): Promise<QuestionResult[]> {
  const requests: ContinuationRequest[] = [];
  const spans: { start: number; candidates: string[]; truncated: boolean }[] = [];
  const contIds = new Map<string, number[]>();
  for (const q of questions) {
    let context = tok.encode(q.prompt);
    const candidates = answerCandidates(q.item);
    const conts = candidates.map((c) => {
      let ids = contIds.get(c);
      if (!ids) contIds.set(c, ids = tok.encode(c, { special: false }));
      if (ids.length === 0) {
        throw new Error(`the tokenizer encodes answer ${c} as no tokens`);
      }
      return ids;
    });
    let truncated = false;
    if (opts.maxLength !== undefined) {
      const longest = Math.max(...conts.map((c) => c.length));
      const room = opts.maxLength - (longest - 1);
      if (room < 1) {
        throw new Error(
          `maxLength ${opts.maxLength} leaves no room for the prompt`,
        );
      }
      if (context.length > room) {
        context = context.slice(context.length - room);
        truncated = true;
      }
    }
    spans.push({ start: requests.length, candidates, truncated });
    for (const c of conts) requests.push({ context, continuation: c });
  }
  const lp = await continuationLogprobs(model, requests, opts);
  return questions.map((q, i) => {
    const { start, candidates, truncated } = spans[i];
    const scores: Record<string, number> = {};
    let best = 0;
    candidates.forEach((c, j) => {
      scores[c] = lp[start + j];
      if (lp[start + j] > lp[start + best]) best = j;
    });
    const predicted = candidates[best];
    const r: QuestionResult = {
      id: q.item.id,
      subject: q.item.subject,
      answer: q.item.answer,
      predicted,
      correct: predicted === q.item.answer,
      scores,
      key: q.key,
    };
    if (truncated) r.truncated = true;
    return r;
  });
}
