/**
 * One micro-batch of training as one GPU submission: (optionally) zero the gradients, the
 * forward pass on the tape, the backward pass adding into the gradient buffers, and (on the last
 * micro-batch of an accumulation window) the optimizer step; then one read of the loss.
 */

import {
  backward,
  beginRecording,
  type CausalLM,
  discardRecording,
  discardTape,
  free,
  readTensor,
  submit,
  type Tensor,
  type TrainBatch,
  trainForwardFor,
  type TrainingModel,
  trainingTape,
  unref,
  uploadTrainBatchFor,
} from "../../core/mod.ts";
import {
  type Optimizer,
  type StepReport,
  tensorRegions,
  type TrainableTensor,
} from "../optim/optimizer.ts";

export interface MicroStepOptions {
  /** Zero the gradient buffers first (first micro-batch of a window). */
  zeroGrads?: boolean;
  /** Take the optimizer step after the backward pass (last micro-batch of a window). */
  optimizer?: Optimizer;
  lr?: number;
  maxGradNorm?: number;
  /** 1 / accumulation steps. */
  gradScale?: number;
  recompute?: boolean;
  /** LoRA dropout (default: the adapter's). */
  dropout?: number;
  /** Dropout seed of this micro-batch. */
  seed?: number;
  /** Forward only (evaluation): no gradients, no dropout. */
  evalOnly?: boolean;
}

export interface MicroStepResult {
  /** Mean loss over the supervised tokens of the batch. */
  loss: number;
  /** Supervised tokens. */
  tokens: number;
  report?: StepReport;
}

/** Runs one micro-batch (see the module comment). */
export async function runMicroStep(
  tm: TrainingModel<CausalLM>,
  batch: TrainBatch,
  options: MicroStepOptions = {},
): Promise<MicroStepResult> {
  const gpu = tm.model.gpu;
  const input = uploadTrainBatchFor(tm.model, batch);
  const rec = beginRecording(gpu);
  const evalOnly = options.evalOnly ?? false;
  const tape = trainingTape(rec, tm, {
    grads: !evalOnly,
    dropout: evalOnly ? undefined : { p: options.dropout, seed: (options.seed ?? 0) >>> 0 },
  });
  let lossTensor: Tensor | null = null;
  try {
    if (options.zeroGrads && !evalOnly) tm.zeroGrads(rec);
    const loss = trainForwardFor(tape, tm, input, { recompute: options.recompute });
    lossTensor = loss.value;
    if (!evalOnly) backward(tape, loss, loss.value);
    if (options.optimizer && !evalOnly) {
      options.optimizer.recordStep(rec, {
        lr: options.lr ?? 0,
        maxGradNorm: options.maxGradNorm ?? 0,
        gradScale: options.gradScale,
      });
    }
    await submit(rec);
    const values = await readTensor(loss.value) as Float32Array;
    unref(tape, loss);
    lossTensor = null;
    const report = options.optimizer && !evalOnly
      ? await options.optimizer.finishStep()
      : undefined;
    return { loss: values[0], tokens: values[1], report };
  } catch (err) {
    discardTape(tape);
    if (rec.state === "open") discardRecording(rec);
    if (lossTensor && !lossTensor.released) free(rec, lossTensor);
    throw err;
  } finally {
    input.free();
  }
}

/** The optimizer's view of the trainable tensors. */
export function trainableTensors(tm: TrainingModel<unknown>): TrainableTensor[] {
  return tm.params.map((p) => ({
    name: p.name,
    shape: p.shape,
    param: tensorRegions(p.param),
    grad: tensorRegions(p.grad),
    tensor: p.param,
  }));
}
