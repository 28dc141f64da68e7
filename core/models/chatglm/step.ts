/**
 * One inference step: the forward pass (forward.ts) recorded on a no-grad tape into one command
 * encoder, submitted once, logits read back. Every temporary of the step is released inside the
 * recording as its scope ends, so later kernels of the same step reuse the buffers; the uploads
 * (ids, positions, masks) and the logits are released when the step is done.
 */

import { beginRecording, discardRecording, submit } from "../../gpu/recording.ts";
import { gatherRowsOp } from "../../autograd/ops.ts";
import { createTape, keep, scope, type Tape, unref, type Var } from "../../autograd/tape.ts";
import { linearForward } from "../../nn/linear.ts";
import { readTensor, releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import type { Attend } from "./block.ts";
import { chatglmHidden, type StackOptions } from "./forward.ts";
import type { ChatGLMModel, ForwardOptions } from "./model.ts";
import { positionAt, type RowLayout } from "./inputs.ts";
import { concatArrays } from "../../io/concat.ts";
import { type ChatGLMCache, checkCache } from "./cache.ts";

/** Token ids and 2-D positions of one step. */
export interface StepInput {
  ids: Int32Array; // [b, s]
  pos: Int32Array; // [b, 2, s] (ChatGLM), or [b, s] with `posShape` (1-D rotary models)
  batch: number;
  seq: number;
  /** Positions already in the cache (lockstep steps). */
  past: number;
  /** Shape of the uploaded positions (default [b, 2, s]). */
  posShape?: number[];
}

/** What a step needs of a model, whatever its architecture. */
export interface StepModel {
  readonly gpu: ChatGLMModel["gpu"];
  readonly lmHead: ChatGLMModel["lmHead"];
  readonly profiler: ChatGLMModel["profiler"];
}

/** The pass up to the final norm: ids → [b, s, h] (ChatGLM: `chatglmHidden`). */
export type StackPass<A> = (
  tape: Tape,
  ids: Tensor,
  attend: A,
  options: StackOptions,
) => Var;

/** Uploads an i32 tensor that lives until the step is done. */
export type Upload = (data: Int32Array, shape: number[], label: string) => Tensor;

/** Builds a step's attention; `pos` is the uploaded [b, 2, s] positions. */
export type MakeAttend<A = Attend> = (upload: Upload, pos: Tensor) => A;

/** Which logits a step returns: every position [b, s, V] or each row's last one [b, V]. */
export type Which = "all" | "last";

/** The step input of rows `inputIds` at absolute indices `start ..` (positions by layout). */
export function stepInputs(
  rows: RowLayout[],
  inputIds: number[][],
  start: number,
  past: number,
): StepInput {
  const b = rows.length, s = inputIds[0].length;
  const ids = new Int32Array(b * s);
  const pos = new Int32Array(b * 2 * s);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < s; j++) {
      ids[i * s + j] = inputIds[i][j];
      const [p0, p1] = positionAt(rows[i], start + j);
      pos[(i * 2) * s + j] = p0;
      pos[(i * 2 + 1) * s + j] = p1;
    }
  }
  return { ids, pos, batch: b, seq: s, past };
}

/** Records the step, submits it once and reads the logits (and hidden states when hooked). */
export function runStep(
  model: ChatGLMModel,
  input: StepInput,
  makeAttend: MakeAttend,
  which: Which,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  const pass: StackPass<Attend> = (tape, ids, attend, options) =>
    chatglmHidden(tape, model, ids, attend, options);
  return runModelStep(model, pass, input, makeAttend, which, hook);
}

/** {@link runStep} for any architecture: `pass` is its forward up to the final norm. */
export async function runModelStep<A>(
  model: StepModel,
  pass: StackPass<A>,
  input: StepInput,
  makeAttend: MakeAttend<A>,
  which: Which,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  const { gpu } = model;
  const { batch: b, seq: s } = input;
  const uploads: Tensor[] = [];
  const upload: Upload = (data, shape, label) => {
    const t = uploadTensor(gpu, data, shape, "i32", { label });
    uploads.push(t);
    return t;
  };
  const hidden: Var[] = [];
  const t0 = performance.now();
  const rec = beginRecording(gpu);
  const tape = createTape(rec, false);
  let logits: Var | null = null;
  try {
    const ids = upload(input.ids, [b, s], "ids");
    const attend = makeAttend(upload, upload(input.pos, input.posShape ?? [b, 2, s], "pos"));
    logits = scope(tape, () => {
      const onHidden = hook ? (v: Var) => void hidden.push(keep(v)) : undefined;
      const y = pass(tape, ids, attend, { onHidden });
      const head = which === "last" && s > 1
        ? gatherRowsOp(tape, y, upload(lastRows(b, s), [b], "last rows"))
        : y;
      return linearForward(tape, model.lmHead, head);
    });
    const t1 = performance.now();
    await submit(rec);
    let t2 = t1;
    if (model.profiler) {
      // An extra GPU round trip, only when profiling: separates GPU work from the readback.
      await gpu.device.queue.onSubmittedWorkDone();
      t2 = performance.now();
    }
    const out = await readTensor(logits.value) as Float32Array;
    model.profiler?.({
      tokens: b * s,
      dispatches: rec.dispatches,
      recordMs: t1 - t0,
      gpuMs: t2 - t1,
      readMs: performance.now() - t2,
    });
    for (let i = 0; i < hidden.length; i++) {
      hook!(i, await readTensor(hidden[i].value) as Float32Array);
    }
    return out;
  } catch (err) {
    discardRecording(rec);
    throw err;
  } finally {
    if (logits) unref(tape, logits);
    for (const v of hidden) unref(tape, v);
    for (const t of uploads) releaseTensor(t);
  }
}

/** Flat row index of each row's last position in [b·s]. */
function lastRows(b: number, s: number): Int32Array {
  return Int32Array.from({ length: b }, (_, i) => i * s + s - 1);
}

/** Uploads the compact mask i32 [b, 2] = (pads, context length) of each row. */
export function maskInfo(upload: Upload, rows: RowLayout[]): Tensor {
  const info = new Int32Array(rows.length * 2);
  rows.forEach((r, i) => info.set([r.pads, r.ctx], i * 2));
  return upload(info, [rows.length, 2], "maskInfo");
}

/** Rows per pass so that the widest activation ([rows, s, max(3h, inner)] f32) fits a binding. */
export function rowsPerPass(model: ChatGLMModel, seq: number, batch: number): number {
  const { config } = model;
  return rowsPerPassOf(model, Math.max(3 * config.hiddenSize, config.innerHiddenSize), seq, batch);
}

/**
 * Rows per pass so that the widest activation of a step ([rows, seq, widest] f32) fits one
 * storage binding (any architecture; `widest` is its widest activation per token).
 */
export function rowsPerPassOf(
  model: { gpu: { limits: { maxStorageBufferBindingSize: number } }; maxActivationBytes?: number },
  widest: number,
  seq: number,
  batch: number,
): number {
  const bytes = seq * widest * 4;
  const limit = model.maxActivationBytes ?? model.gpu.limits.maxStorageBufferBindingSize;
  const rows = Math.floor(limit / bytes);
  if (rows < 1) {
    throw new Error(
      `${seq} tokens need ${bytes} bytes of activations in one binding, over this GPU's ` +
        `limit of ${limit}; use a shorter input`,
    );
  }
  return Math.min(rows, batch);
}

/**
 * Runs `input` in groups of `group` rows (a batch whose activations exceed one binding), each
 * through `run(sub, start, n)`, and joins the logits (and hidden states for `hook`) in row order.
 */
export async function inRowGroups(
  input: StepInput,
  group: number,
  run: (sub: StepInput, start: number, n: number, hook?: ForwardOptions["onHidden"]) => Promise<
    Float32Array
  >,
  hook?: ForwardOptions["onHidden"],
): Promise<Float32Array> {
  if (group >= input.batch) return await run(input, 0, input.batch, hook);
  const parts: Float32Array[] = [];
  const hidden = new Map<number, Float32Array[]>();
  const groupHook = hook
    ? (i: number, x: Float32Array) => hidden.set(i, [...(hidden.get(i) ?? []), x])
    : undefined;
  const s = input.seq, posPerRow = input.pos.length / input.batch;
  for (let start = 0; start < input.batch; start += group) {
    const n = Math.min(group, input.batch - start);
    const sub: StepInput = {
      ...input,
      batch: n,
      ids: input.ids.subarray(start * s, (start + n) * s),
      pos: input.pos.subarray(start * posPerRow, (start + n) * posPerRow),
      ...(input.posShape ? { posShape: [n, ...input.posShape.slice(1)] } : {}),
    };
    parts.push(await run(sub, start, n, groupHook));
  }
  if (hook) { for (const [i, xs] of hidden) hook(i, concatArrays(xs)); }
  return concatArrays(parts);
}

/** A prefill's rows against its cache: one row per cache row, within the cache's capacity. */
export function checkPrefillRows(cache: ChatGLMCache, rows: number, seq: number): void {
  checkCache(cache, "prefill");
  if (rows !== cache.batch) {
    throw new Error(`prefill: ${rows} rows for a cache of batch ${cache.batch}`);
  }
  if (seq > cache.capacity) {
    throw new Error(`prefill: ${seq} tokens exceed the cache capacity ${cache.capacity}`);
  }
}

/** A decode step's ids: after a prefill, one token id per row, with room left in the cache. */
export function checkDecodeIds(cache: ChatGLMCache, nextIds: number[], vocabSize: number): void {
  checkCache(cache, "decodeStep");
  if (cache.length === 0) throw new Error("decodeStep: run prefill on the cache first");
  if (!Array.isArray(nextIds) || nextIds.length !== cache.batch) {
    throw new Error(
      `decodeStep: expected ${cache.batch} ids (one per row), got ${nextIds?.length}`,
    );
  }
  checkIds(nextIds, vocabSize, "nextIds");
  if (cache.length + 1 > cache.capacity) {
    throw new Error(`decodeStep: the cache is full (${cache.capacity} positions)`);
  }
}

export function checkIds(ids: readonly number[], vocabSize: number, what: string): void {
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new Error(`${what}[${i}] = ${id} is not a token id (vocab_size ${vocabSize})`);
    }
  });
}

/** `seq` tokens within the model's context (`hint` says how to change it). */
export function checkLength(maxContext: number, seq: number, what: string, hint: string): void {
  if (seq > maxContext) {
    throw new Error(
      `${what}: ${seq} tokens exceed the model's context of ${maxContext} (${hint})`,
    );
  }
}
