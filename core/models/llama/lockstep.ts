/**
 * Rows in lockstep for the Llama family: `forward` (whole sequences), `prefill` and `decodeStep`
 * over a KV cache whose rows all have the same length (left-padded prompts, spec §5–6). Recording
 * and submitting a step is the architecture-independent `runModelStep` (chatglm/step.ts).
 */

import type { Tensor } from "../../tensor/tensor.ts";
import { rotaryTableOf } from "../../kernels/mod.ts";
import {
  cacheRows,
  type CacheView,
  type ChatGLMCache,
  checkCache,
  createCache,
} from "../chatglm/cache.ts";
import type { ForwardOptions, PrefillOptions } from "../chatglm/model.ts";
import {
  checkDecodeIds,
  checkLength as checkContext,
  checkPrefillRows,
  inRowGroups,
  rowsPerPassOf,
  runModelStep,
  type StackPass,
  type StepInput,
  type Which,
} from "../chatglm/step.ts";
import { cachedAttention } from "./attention.ts";
import type { Attend } from "./block.ts";
import { llamaHidden } from "./forward.ts";
import { compactMask, leftPads, positionIds } from "./inputs.ts";
import type { LlamaModel } from "./model.ts";
import { invFreqKey, llamaTableSize } from "./rotary.ts";

/** Logits [b, s, V] of left-padded rows (pads: the config's pad id), positions from the mask. */
export async function forward(
  model: LlamaModel,
  inputIds: number[][],
  options: ForwardOptions = {},
): Promise<Float32Array> {
  const pads = leftPads(inputIds, model.config);
  const seq = inputIds[0].length;
  checkLength(model, seq, "forward");
  const cache = createCache(cacheOwner(model), pads.length, Math.max(seq, 1));
  try {
    cache.rows = pads.map((p) => ({ pads: p, ctx: 0, mpos: 0 }));
    return await runLockstep(model, cache, stepInput(inputIds, pads, 0), "all", options.onHidden);
  } finally {
    cache.free();
  }
}

/** Runs the prompts (left-padded rows) into an empty cache; logits of the last position [b, V]. */
export async function prefill(
  model: LlamaModel,
  inputIds: number[][],
  cache: ChatGLMCache,
  options: PrefillOptions = {},
): Promise<Float32Array> {
  checkCache(cache, "prefill");
  const pads = leftPads(inputIds, model.config);
  const seq = inputIds[0].length;
  checkLength(model, seq, "prefill");
  checkPrefillRows(cache, pads.length, seq);
  cache.rows = pads.map((p) => ({ pads: p, ctx: 0, mpos: 0 }));
  cache.length = 0;
  const which = options.allLogits ? "all" : "last";
  const out = await runLockstep(model, cache, stepInput(inputIds, pads, 0), which);
  cache.length = seq;
  return out;
}

/** Appends one token per row; its position is the row's last position + 1 (spec §6). */
export async function decodeStep(
  model: LlamaModel,
  nextIds: number[],
  cache: ChatGLMCache,
): Promise<Float32Array> {
  checkDecodeIds(cache, nextIds, model.config.vocabSize);
  const t = cache.length;
  const pads = cache.rows.map((r) => r.pads);
  const out = await runLockstep(
    model,
    cache,
    stepInput(nextIds.map((id) => [id]), pads, t),
    "last",
  );
  cache.length = t + 1;
  return out;
}

/** What the shared cache is sized from: nkv heads of d per row. */
export function cacheOwner(model: LlamaModel) {
  const { numKvHeads, headDim, numLayers } = model.config;
  return {
    gpu: model.gpu,
    maxContext: model.maxContext,
    config: { numHeads: numKvHeads, headDim, hiddenSize: numKvHeads * headDim, numLayers },
  };
}

export function stepInput(inputIds: number[][], pads: number[], start: number): StepInput {
  const b = inputIds.length, s = inputIds[0].length;
  return {
    ids: Int32Array.from(inputIds.flat()),
    pos: positionIds(pads, start, s),
    posShape: [b, s],
    batch: b,
    seq: s,
    past: start,
  };
}

/** The model's cos/sin table (cached per device) covering `positions`. */
export function modelTable(model: LlamaModel, positions: number): Tensor {
  return rotaryTableOf(
    model.gpu,
    invFreqKey(model.invFreq),
    model.invFreq,
    llamaTableSize(positions),
  );
}

/**
 * One lockstep step over `input`. A batch whose activations exceed one storage binding runs in
 * groups of rows, each writing its rows of the cache through views.
 */
async function runLockstep(
  model: LlamaModel,
  cache: ChatGLMCache,
  input: StepInput,
  which: Which,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  const pads = cache.rows.map((r) => r.pads);
  const group = rowsPerPass(model, input.seq, input.batch);
  return await inRowGroups(input, group, (sub, start, n, h) => {
    const view = group >= input.batch ? cache : cacheRows(cache, start, n);
    return runRows(model, view, pads.slice(start, start + n), sub, which, h);
  }, hook);
}

/** Rows per pass so that the widest activation ([rows, s, max(nh·d, I, h)] f32) fits a binding. */
function rowsPerPass(model: LlamaModel, seq: number, batch: number): number {
  const { numHeads, headDim, intermediateSize, hiddenSize } = model.config;
  return rowsPerPassOf(
    model,
    Math.max(numHeads * headDim, intermediateSize, hiddenSize),
    seq,
    batch,
  );
}

/** The step pass of this model (the shared forward up to the final norm). */
export function stackPass(model: LlamaModel): StackPass<Attend> {
  return (tape, ids, attend, options) => llamaHidden(tape, model, ids, attend, options);
}

/** One recorded lockstep step of rows with `pads` writing `cache` (a cache or a view of rows). */
export function runRows(
  model: LlamaModel,
  cache: CacheView,
  pads: number[],
  input: StepInput,
  which: Which,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  const pass = stackPass(model);
  const table = modelTable(model, cache.capacity);
  return runModelStep(
    model,
    pass,
    input,
    (upload, pos) =>
      cachedAttention(
        model.config,
        cache,
        pos,
        table,
        upload(compactMask(pads), [pads.length, 2], "maskInfo"),
        input.past,
      ),
    which,
    hook,
  );
}

export function checkLength(model: LlamaModel, seq: number, what: string): void {
  checkContext(model.maxContext, seq, what, "set maxContext when loading to change");
}
