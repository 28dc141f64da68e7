/**
 * Rows in lockstep for the Llama family: `forward` (whole sequences), `prefill` and `decodeStep`
 * over a KV cache whose rows all have the same length (left-padded prompts, spec §5–6). Recording
 * and submitting a step is the architecture-independent `runModelStep` (chatglm/step.ts).
 */

import type { Tensor } from "../../tensor/tensor.ts";
import { rotaryTableOf } from "../../kernels/mod.ts";
import { concatArrays } from "../../io/concat.ts";
import {
  cacheRows,
  type CacheView,
  type ChatGLMCache,
  checkCache,
  createCache,
} from "../chatglm/cache.ts";
import type { ForwardOptions, PrefillOptions } from "../chatglm/model.ts";
import { runModelStep, type StackPass, type StepInput, type Which } from "../chatglm/step.ts";
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
  if (pads.length !== cache.batch) {
    throw new Error(`prefill: ${pads.length} rows for a cache of batch ${cache.batch}`);
  }
  if (seq > cache.capacity) {
    throw new Error(`prefill: ${seq} tokens exceed the cache capacity ${cache.capacity}`);
  }
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
  checkCache(cache, "decodeStep");
  if (cache.length === 0) throw new Error("decodeStep: run prefill on the cache first");
  if (!Array.isArray(nextIds) || nextIds.length !== cache.batch) {
    throw new Error(
      `decodeStep: expected ${cache.batch} ids (one per row), got ${nextIds?.length}`,
    );
  }
  nextIds.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= model.config.vocabSize) {
      throw new Error(
        `nextIds[${i}] = ${id} is not a token id (vocab_size ${model.config.vocabSize})`,
      );
    }
  });
  const t = cache.length;
  if (t + 1 > cache.capacity) {
    throw new Error(`decodeStep: the cache is full (${cache.capacity} positions)`);
  }
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
  if (group >= input.batch) return await runRows(model, cache, pads, input, which, hook);
  const parts: Float32Array[] = [];
  const hidden = new Map<number, Float32Array[]>();
  const groupHook = hook
    ? (i: number, x: Float32Array) => hidden.set(i, [...(hidden.get(i) ?? []), x])
    : undefined;
  const s = input.seq;
  for (let start = 0; start < input.batch; start += group) {
    const n = Math.min(group, input.batch - start);
    const sub: StepInput = {
      ...input,
      batch: n,
      ids: input.ids.subarray(start * s, (start + n) * s),
      pos: input.pos.subarray(start * s, (start + n) * s),
      posShape: [n, s],
    };
    const view = cacheRows(cache, start, n);
    parts.push(await runRows(model, view, pads.slice(start, start + n), sub, which, groupHook));
  }
  if (hook) { for (const [i, xs] of hidden) hook(i, concatArrays(xs)); }
  return concatArrays(parts);
}

/** Rows per pass so that the widest activation ([rows, s, max(nh·d, I, h)] f32) fits a binding. */
function rowsPerPass(model: LlamaModel, seq: number, batch: number): number {
  const { numHeads, headDim, intermediateSize, hiddenSize } = model.config;
  const widest = seq * Math.max(numHeads * headDim, intermediateSize, hiddenSize) * 4;
  const limit = model.maxActivationBytes ?? model.gpu.limits.maxStorageBufferBindingSize;
  const rows = Math.floor(limit / widest);
  if (rows < 1) {
    throw new Error(
      `${seq} tokens need ${widest} bytes of activations in one binding, over this GPU's ` +
        `limit of ${limit}; use a shorter input`,
    );
  }
  return Math.min(rows, batch);
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
  if (seq > model.maxContext) {
    throw new Error(
      `${what}: ${seq} tokens exceed the model's context of ${model.maxContext} ` +
        "(set maxContext when loading to change)",
    );
  }
}
