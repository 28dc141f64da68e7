/**
 * Learning a byte-level BPE (a `tokenizer.json` this folder's tokenizer reads) from texts: the
 * pre-tokens of the texts, one symbol per UTF-8 byte, then repeatedly the most frequent adjacent
 * pair becomes a new piece (ties: the pair of lowest ids) until the vocabulary has the size asked
 * for or no pair occurs `minFrequency` times. Learned merges are ranks in learning order, which is
 * the order the tokenizer applies them in. Used for the small from-scratch demo models, whose
 * corpus is a few hundred Q&A: a full recount per merge is fast enough and keeps it short.
 */

import { BYTE_TO_CHAR } from "./byte_map.ts";
import { createByteLevelTokenizer } from "./tokenizer.ts";

/** What of a `tokenizer.json` the learned file keeps as is: how text becomes pre-tokens. */
export interface ByteLevelPipeline {
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
}

export interface TrainByteLevelOptions {
  /** Pieces of the BPE vocabulary (256 bytes + merges), not counting the added tokens. */
  vocabSize: number;
  /** The normalizer and pre-tokenizer (usually of the model family's real tokenizer.json). */
  pipeline: ByteLevelPipeline;
  /** Added tokens after the vocabulary, in this order (e.g. `<|im_start|>`). */
  addedTokens?: readonly { content: string; special: boolean }[];
  /** A pair seen fewer times than this is never merged (default 2). */
  minFrequency?: number;
}

/** Returns the parsed `tokenizer.json` of the learned tokenizer. */
export function trainByteLevelBpe(
  texts: Iterable<string>,
  opts: TrainByteLevelOptions,
): Record<string, unknown> {
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < 256) {
    throw new RangeError(`vocabSize must be an integer >= 256 (got ${opts.vocabSize})`);
  }
  const pieces = [...BYTE_TO_CHAR];
  const base = {
    version: "1.0",
    truncation: null,
    padding: null,
    ...opts.pipeline,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: {} as Record<string, number>,
      merges: [] as [string, string][],
    },
  };
  // The file's own pre-tokenizer splits the texts (a bytes-only vocabulary is enough for that).
  const splitter = createByteLevelTokenizer(
    {
      ...base,
      added_tokens: [],
      model: { ...base.model, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])) },
    },
    {},
    "trainByteLevelBpe",
  );
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const w of splitter.pretokenize(text)) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const encoder = new TextEncoder();
  const words: { ids: number[]; n: number }[] = [...counts].map(([w, n]) => ({
    ids: [...encoder.encode(w)],
    n,
  }));
  const idOf = new Map(pieces.map((p, i) => [p, i]));
  const merges: [string, string][] = [];
  // pair key: left id × 2^20 + right id (ids stay far below 2^20 here)
  const SHIFT = 1 << 20;
  while (pieces.length < opts.vocabSize) {
    const pairs = new Map<number, number>();
    for (const { ids, n } of words) {
      for (let i = 0; i + 1 < ids.length; i++) {
        const k = ids[i] * SHIFT + ids[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    }
    let best = -1, bestCount = 0;
    for (const [k, c] of pairs) {
      if (c > bestCount || (c === bestCount && k < best)) best = k, bestCount = c;
    }
    if (best < 0 || bestCount < minFrequency) break;
    const l = Math.floor(best / SHIFT), r = best % SHIFT;
    const text = pieces[l] + pieces[r];
    // Two merges can spell the same piece ("ab"+"c", "a"+"bc"): one id, both merges kept.
    let id = idOf.get(text);
    if (id === undefined) {
      id = pieces.length;
      pieces.push(text);
      idOf.set(text, id);
    }
    merges.push([pieces[l], pieces[r]]);
    for (const w of words) {
      const ids = w.ids;
      let out = 0;
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === l && ids[i + 1] === r) {
          ids[out++] = id;
          i++;
        } else ids[out++] = ids[i];
      }
      ids.length = out;
    }
  }
  const added = (opts.addedTokens ?? []).map((t, i) => ({
    id: pieces.length + i,
    content: t.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: t.special,
  }));
  return {
    ...base,
    added_tokens: added,
    model: { ...base.model, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges },
  };
}
