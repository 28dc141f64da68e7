/**
 * Open-question evaluation on the held-out split of our own data set (`deno task data` output):
 *
 * - loss / perplexity: the token-level mean negative log-likelihood of the labels (the trainer's
 *   shifted cross-entropy: logits at t predict label t + 1, prompt positions are −100 and do not
 *   count), summed over every example before dividing, and exp of it;
 * - ROUGE-L (F) and BLEU-4 of the engine's greedy answer against the reference `output`,
 *   character level for Chinese (`metrics/`), averaged over examples, reported × 100.
 *
 * Examples come from the build's `valid-*.bin` token shards with their `valid-*.jsonl` records;
 * a build made without tokens is tokenized here with the training template.
 */

import { basename } from "node:path";
import {
  buildInstructionContext,
  buildTrainExample,
  type ChatGLMTokenizer,
  IGNORE_INDEX,
  readManifest,
  streamTokenShard,
} from "../data/mod.ts";
import type { Engine } from "../serve/mod.ts";
import { fingerprint } from "./cache.ts";
import { bleu4, rougeL } from "./metrics/mod.ts";
import { leftPad, type LogitsModel, logSumExp } from "./model.ts";

export interface HeldoutRecord {
  instruction: string;
  input?: string;
  output: string;
}

export interface HeldoutExample {
  /** `valid-00000:LINE` (the record's 0-based line in its JSONL shard). */
  id: string;
  key: string;
  inputIds: number[];
  labels: number[];
  record: HeldoutRecord;
}

async function readRecords(path: string): Promise<HeldoutRecord[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(
      `${path}: cannot read the held-out records: ${(err as Error).message}`,
    );
  }
  return text.split("\n").filter((l) => l.trim() !== "").map((line, i) => {
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(line);
    } catch (err) {
      throw new Error(
        `${path}:${i + 1}: not valid JSON: ${(err as Error).message}`,
      );
    }
    if (typeof r.instruction !== "string" || typeof r.output !== "string") {
      throw new Error(
        `${path}:${i + 1}: record lacks instruction/output strings`,
      );
    }
    return {
      instruction: r.instruction,
      input: typeof r.input === "string" ? r.input : "",
      output: r.output,
    };
  });
}

/**
 * The held-out examples of a build folder in the order of its JSONL shards (file order), at most
 * `limit`: the first `limit` records, not the shortest.
 */
export async function readHeldout(
  dir: string,
  opts: { limit?: number; tokenizer?: ChatGLMTokenizer } = {},
): Promise<HeldoutExample[]> {
  const root = dir.replace(/\/+$/, "") || dir;
  const manifest = await readManifest(root);
  const valid = manifest.outputs.filter((o) => o.split === "valid");
  const bins = valid.filter((o) => o.file.endsWith(".bin")).map((o) => o.file);
  const jsonls = valid.filter((o) => o.file.endsWith(".jsonl")).map((o) => o.file);
  if (jsonls.length === 0) {
    throw new Error(`${root}: the build has no validation shards`);
  }
  const limit = opts.limit ?? Infinity;
  const out: HeldoutExample[] = [];
  const add = (
    shard: string,
    line: number,
    ids: number[],
    labels: number[],
    r: HeldoutRecord,
  ) =>
    out.push({
      id: `${shard}:${line}`,
      key: fingerprint(ids.join(","), labels.join(","), r.output),
      inputIds: ids,
      labels,
      record: r,
    });
  if (bins.length > 0) {
    // The token shard orders examples by length (bucketing for training), so taking its first N
    // would pick the N shortest, biased to the sources with short answers. The limit takes the
    // first N records in the JSONL shards' order (the build's own seeded order) instead.
    for (const bin of bins) {
      if (out.length >= limit) break;
      const shard = basename(bin).replace(/\.bin$/, "");
      const records = await readRecords(
        `${root}/${bin.replace(/\.bin$/, ".jsonl")}`,
      );
      const want = Math.min(records.length, limit - out.length);
      const byRecord: ({ ids: number[]; labels: number[] } | undefined)[] = new Array(want);
      for await (const ex of streamTokenShard(`${root}/${bin}`)) {
        if (!records[ex.recordIndex]) {
          throw new Error(
            `${root}/${bin}: example points at missing record ${ex.recordIndex}`,
          );
        }
        if (ex.recordIndex < want) {
          byRecord[ex.recordIndex] = {
            ids: Array.from(ex.inputIds),
            labels: Array.from(ex.labels),
          };
        }
      }
      for (let i = 0; i < want; i++) {
        const ex = byRecord[i];
        if (!ex) throw new Error(`${root}/${bin}: no example for record ${i}`);
        add(shard, i, ex.ids, ex.labels, records[i]);
      }
    }
    return out;
  }
  if (!opts.tokenizer) {
    throw new Error(
      `${root}: the build has no token shards and no tokenizer was given`,
    );
  }
  for (const file of jsonls) {
    const shard = basename(file).replace(/\.jsonl$/, "");
    const records = await readRecords(`${root}/${file}`);
    for (let i = 0; i < records.length && out.length < limit; i++) {
      const ex = buildTrainExample(opts.tokenizer, records[i]);
      add(shard, i, ex.inputIds, ex.labels, records[i]);
    }
  }
  return out;
}

export interface NllResult {
  id: string;
  key: string;
  /** Σ −log p(label) over the example's supervised positions. */
  nll: number;
  tokens: number;
}

/**
 * Per-example NLL sums. Rows are grouped longest first into batches whose logits stay under
 * `maxLogitBytes` (default 1 GiB; at least one row per batch).
 */
export async function exampleNll(
  model: LogitsModel,
  examples: readonly HeldoutExample[],
  opts: { maxLogitBytes?: number } = {},
): Promise<NllResult[]> {
  const budget = opts.maxLogitBytes ?? 1 << 30;
  const V = model.vocabSize;
  const order = examples.map((_, i) => i).sort((a, b) =>
    examples[b].inputIds.length - examples[a].inputIds.length
  );
  const out = new Array<NllResult>(examples.length);
  let at = 0;
  while (at < order.length) {
    const S = examples[order[at]].inputIds.length;
    const rows = Math.max(1, Math.floor(budget / (4 * S * V)));
    const idx = order.slice(at, at + rows);
    at += idx.length;
    const padded = leftPad(idx.map((i) => examples[i].inputIds), model.padId);
    const logits = await model.forward(padded);
    if (logits.length !== idx.length * S * V) {
      throw new Error(
        `model returned ${logits.length} logits, expected ${idx.length * S * V}`,
      );
    }
    idx.forEach((i, b) => {
      const ex = examples[i];
      const pad = S - ex.inputIds.length;
      let nll = 0, tokens = 0;
      for (let t = 0; t + 1 < ex.labels.length; t++) {
        const label = ex.labels[t + 1];
        if (label === IGNORE_INDEX) continue;
        if (!(label >= 0 && label < V)) {
          throw new RangeError(
            `${ex.id}: label ${label} outside the vocabulary`,
          );
        }
        const off = (b * S + pad + t) * V;
        nll += logSumExp(logits, off, V) - logits[off + label];
        tokens++;
      }
      out[i] = { id: ex.id, key: ex.key, nll, tokens };
    });
  }
  return out;
}

/** Token-level mean NLL and perplexity over per-example sums. */
export function perplexityOf(results: readonly NllResult[]): {
  loss: number;
  perplexity: number;
  tokens: number;
  examples: number;
} {
  let nll = 0, tokens = 0;
  for (const r of results) {
    nll += r.nll;
    tokens += r.tokens;
  }
  const loss = tokens > 0 ? nll / tokens : NaN;
  return { loss, perplexity: Math.exp(loss), tokens, examples: results.length };
}

export interface AnswerResult {
  id: string;
  key: string;
  response: string;
  rougeL: number;
  bleu4: number;
}

/** Greedy answers to the held-out prompts (the training template), scored against `output`. */
export async function generateAnswers(
  engine: Engine,
  examples: readonly HeldoutExample[],
  opts: { maxNewTokens?: number } = {},
): Promise<AnswerResult[]> {
  const out: AnswerResult[] = [];
  for (const ex of examples) {
    const content = buildInstructionContext(ex.record);
    let response = "";
    for await (
      const d of engine.generate({
        messages: [{ role: "user", content }],
        maxNewTokens: opts.maxNewTokens ?? 256,
        temperature: 0,
        seed: 0,
      })
    ) response += d.text;
    out.push({
      id: ex.id,
      key: ex.key,
      response,
      rougeL: rougeL(response, ex.record.output).f,
      bleu4: bleu4(response, ex.record.output),
    });
  }
  return out;
}

/** Mean ROUGE-L F and BLEU-4 × 100. */
export function overlapOf(
  results: readonly AnswerResult[],
): { rougeL: number; bleu4: number } {
  if (results.length === 0) return { rougeL: NaN, bleu4: NaN };
  const mean = (f: (r: AnswerResult) => number) =>
    100 * results.reduce((s, r) => s + f(r), 0) / results.length;
  return { rougeL: mean((r) => r.rougeL), bleu4: mean((r) => r.bleu4) };
}
