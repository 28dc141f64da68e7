/**
 * Rows in lockstep: `forward` (whole sequences), `prefill` and `decodeStep` over a KV cache whose
 * rows all have the same length (left-padded prompts, spec §4.2 and §5; the spec is
 * tests/fixtures/chatglm6b-tiny/README.md).
 */

import { cacheRows, type CacheView, type ChatGLMCache, checkCache, createCache } from "./cache.ts";
import { cachedAttention } from "./attention.ts";
import type { ChatGLMConfig } from "./config.ts";
import { layoutRows, type RowLayout } from "./inputs.ts";
import type { ChatGLMModel, ForwardOptions, PrefillOptions } from "./model.ts";
import {
  checkDecodeIds,
  checkIds as checkTokenIds,
  checkLength as checkContext,
  checkPrefillRows,
  inRowGroups,
  maskInfo,
  rowsPerPass,
  runStep,
  type StepInput,
  stepInputs,
  type Which,
} from "./step.ts";

/** Logits [b, s, V] of left-padded rows, with masks and positions derived from the ids. */
export async function forward(
  model: ChatGLMModel,
  inputIds: number[][],
  options: ForwardOptions = {},
): Promise<Float32Array> {
  const rows = layoutRows(inputIds, model.config);
  const seq = inputIds[0].length;
  checkLength(model, seq, "forward");
  const cache = createCache(model, rows.length, Math.max(seq, 1));
  try {
    cache.rows = rows;
    return await runLockstep(
      model,
      cache,
      stepInputs(rows, inputIds, 0, 0),
      "all",
      options.onHidden,
    );
  } finally {
    cache.free();
  }
}

/** Runs the prompts (left-padded rows) into an empty cache; logits of the last position [b, V]. */
export async function prefill(
  model: ChatGLMModel,
  inputIds: number[][],
  cache: ChatGLMCache,
  options: PrefillOptions = {},
): Promise<Float32Array> {
  checkCache(cache, "prefill");
  const rows = layoutRows(inputIds, model.config);
  const seq = inputIds[0].length;
  checkLength(model, seq, "prefill");
  checkPrefillRows(cache, rows.length, seq);
  cache.rows = rows;
  cache.length = 0;
  const which = options.allLogits ? "all" : "last";
  const out = await runLockstep(model, cache, stepInputs(rows, inputIds, 0, 0), which);
  cache.length = seq;
  return out;
}

/** Appends one token per row (finished rows feed the pad id) and returns its logits [b, V]. */
export async function decodeStep(
  model: ChatGLMModel,
  nextIds: number[],
  cache: ChatGLMCache,
): Promise<Float32Array> {
  checkDecodeIds(cache, nextIds, model.config.vocabSize);
  const t = cache.length;
  // The new token's position stays at the mask position, its block position counts on (§5).
  const input = stepInputs(cache.rows, nextIds.map((id) => [id]), t, t);
  const out = await runLockstep(model, cache, input, "last");
  cache.length = t + 1;
  return out;
}

/**
 * One lockstep step over `input`, returning the logits of every position ([b, s, V]) or of the
 * last one ([b, V]). A long prefill runs in groups of rows, each group's activations within one
 * storage binding, writing its rows of the cache through views.
 */
async function runLockstep(
  model: ChatGLMModel,
  cache: ChatGLMCache,
  input: StepInput,
  which: Which,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  const group = rowsPerPass(model, input.seq, input.batch);
  return await inRowGroups(input, group, (sub, start, n, h) => {
    const view = group >= input.batch ? cache : cacheRows(cache, start, n);
    return runRows(model, view, cache.rows.slice(start, start + n), sub, which, h);
  }, hook);
}

/** One recorded step of `rows` writing `cache` (the whole cache or a view of its rows). */
export function runRows(
  model: ChatGLMModel,
  cache: CacheView,
  rows: RowLayout[],
  input: StepInput,
  which: Which,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  return runStep(
    model,
    input,
    (upload, pos) => {
      return cachedAttention(model.config, cache, pos, maskInfo(upload, rows), input.past);
    },
    which,
    hook,
  );
}

export function checkIds(ids: readonly number[], config: ChatGLMConfig, what: string): void {
  checkTokenIds(ids, config.vocabSize, what);
}

export function checkLength(model: ChatGLMModel, seq: number, what: string): void {
  checkContext(
    model.maxContext,
    seq,
    what,
    `max_sequence_length ${model.config.maxSequenceLength}; set maxContext to change`,
  );
}
