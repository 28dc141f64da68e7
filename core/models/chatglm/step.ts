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
  const { config, gpu } = model;
  const widest = seq * Math.max(3 * config.hiddenSize, config.innerHiddenSize) * 4;
  const limit = model.maxActivationBytes ?? gpu.limits.maxStorageBufferBindingSize;
  const rows = Math.floor(limit / widest);
  if (rows < 1) {
    throw new Error(
      `${seq} tokens need ${widest} bytes of activations in one binding, over this GPU's ` +
        `limit of ${limit}; use a shorter input`,
    );
  }
  return Math.min(rows, batch);
}
