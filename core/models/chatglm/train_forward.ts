/**
 * ChatGLM-6B training on the autograd tape: which parameters train (LoRA: every adapter A/B,
 * base frozen and without gradient buffers; full: every base parameter, f32), their gradient
 * buffers, and the training pass: the shared forward (forward.ts, the same blocks inference runs)
 * with full attention on a recording tape, each block optionally under recompute, ending in the
 * loss of spec §8 (tests/fixtures/chatglm6b-tiny/README.md).
 */

import type { Recording } from "../../gpu/recording.ts";
import { fill } from "../../kernels/mod.ts";
import { releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import { crossEntropyOp, gatherRowsOp } from "../../autograd/ops.ts";
import { IGNORE_INDEX } from "../../autograd/labels.ts";
import { createTape, scope, type StepDropout, type Tape, type Var } from "../../autograd/tape.ts";
import { linearForward } from "../../nn/linear.ts";
import type { LoraLinear } from "../../nn/lora_linear.ts";
import { loraTensorKey } from "../../adapters/peft_config.ts";
import { fullAttention } from "./attention.ts";
import { blockLinears } from "./block.ts";
import { chatglmHidden } from "./forward.ts";
import type { ChatGLMModel } from "./model.ts";
import type { TrainBatch } from "./train_batch.ts";

/** A trainable tensor: the parameter and its f32 gradient buffer (same shape). */
export interface TrainableParam {
  /** Checkpoint name (full) or peft key (LoRA). */
  name: string;
  shape: number[];
  param: Tensor;
  grad: Tensor;
}

export interface TrainingModel<M = ChatGLMModel> {
  readonly model: M;
  readonly mode: "lora" | "full";
  /** Trainable tensors in a fixed order (the model's parameter order). */
  readonly params: TrainableParam[];
  /** Records zeroing of every gradient buffer. */
  zeroGrads(rec: Recording): void;
  /** Frees the gradient buffers (the parameters belong to the model). */
  dispose(): void;
}

/**
 * Prepares `model` for training. LoRA mode needs an attached adapter; full mode needs f32 base
 * weights (load with `dtype: "f32"`) and no adapter.
 */
export function prepareTraining(model: ChatGLMModel, mode: "lora" | "full"): TrainingModel {
  return prepareTrainingOf(model, model.layers.flatMap(blockLinears), mode);
}

/** What training needs of a model, whatever its architecture. */
export interface TrainableModel {
  readonly gpu: ChatGLMModel["gpu"];
  readonly adapter: ChatGLMModel["adapter"];
  parameters(): Map<string, Tensor>;
}

/** {@link prepareTraining} for any architecture, given its linear layers in parameter order. */
export function prepareTrainingOf<M extends TrainableModel>(
  model: M,
  linears: readonly LoraLinear[],
  mode: "lora" | "full",
): TrainingModel<M> {
  const params: TrainableParam[] = [];
  const add = (name: string, t: Tensor) => {
    if (t.dtype !== "f32") {
      throw new Error(
        `training: ${name} is stored as ${t.dtype}; trainable parameters must be f32 ` +
          `(load the model with dtype "f32" for full fine-tuning)`,
      );
    }
    const grad = uploadTensor(model.gpu, new Float32Array(t.byteLength / 4), t.shape, "f32", {
      label: `${name}.grad`,
    });
    params.push({ name, shape: [...t.shape], param: t, grad });
  };
  if (mode === "lora") {
    if (!model.adapter) throw new Error("training: LoRA mode needs a model with an adapter");
    for (const lin of linears) {
      if (!lin.lora) continue;
      add(loraTensorKey(lin.name, "A"), lin.lora.a);
      add(loraTensorKey(lin.name, "B"), lin.lora.b);
    }
    if (params.length === 0) throw new Error("training: the adapter targets no module");
  } else {
    if (model.adapter) {
      throw new Error("training: full fine-tuning of a model with an adapter (merge it first)");
    }
    for (const [name, t] of model.parameters()) add(name, t);
  }
  let disposed = false;
  return {
    model,
    mode,
    params,
    zeroGrads(rec) {
      for (const p of params) fill(rec, p.grad, 0);
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const p of params) releaseTensor(p.grad);
    },
  };
}

/** The GPU tensors of a batch (uploaded by {@link uploadTrainBatch}; free after the submit). */
export interface TrainBatchTensors {
  batch: TrainBatch;
  ids: Tensor;
  pos: Tensor;
  maskInfo: Tensor;
  /**
   * The flattened batch rows that go to the loss: the supervised positions (targets ≠ −100);
   * null when there are none (then every row goes, all ignored).
   */
  lossRows: Tensor | null;
  /** The targets of the loss rows, in their order. */
  targets: Tensor;
  free(): void;
}

export function uploadTrainBatch(model: ChatGLMModel, batch: TrainBatch): TrainBatchTensors {
  const gpu = model.gpu;
  const { batch: b, seq: s } = batch;
  const ids = uploadTensor(gpu, batch.ids, [b, s], "i32", { label: "train ids" });
  const pos = uploadTensor(gpu, batch.pos, [b, 2, s], "i32", { label: "train pos" });
  const maskInfo = uploadTensor(gpu, batch.maskInfo, [b, 2], "i32", { label: "train maskInfo" });
  const rows: number[] = [];
  batch.targets.forEach((t, k) => {
    if (t !== IGNORE_INDEX) rows.push(k);
  });
  const lossRows = rows.length === 0
    ? null
    : uploadTensor(gpu, Int32Array.from(rows), [rows.length], "i32", { label: "train loss rows" });
  const targets = lossRows
    ? uploadTensor(gpu, Int32Array.from(rows, (k) => batch.targets[k]), [rows.length], "i32", {
      label: "train targets",
    })
    : uploadTensor(gpu, batch.targets, [b * s], "i32", { label: "train targets" });
  const all = lossRows ? [ids, pos, maskInfo, lossRows, targets] : [ids, pos, maskInfo, targets];
  return {
    batch,
    ids,
    pos,
    maskInfo,
    lossRows,
    targets,
    free() {
      for (const t of all) if (!t.released) releaseTensor(t);
    },
  };
}

export interface TrainForwardOptions {
  /** Wrap every layer in recompute (activation memory: one layer plus the layer inputs). */
  recompute?: boolean;
}

/**
 * A tape for one training (or evaluation) step of `tm` on `rec`: it records backward entries
 * when `grads`, gives the trainable parameters their gradient buffers and carries the step's
 * LoRA dropout (none for evaluation).
 */
export function trainingTape(
  rec: Recording,
  tm: TrainingModel<unknown>,
  options: { grads: boolean; dropout?: StepDropout },
): Tape {
  const sinks = new Map<Tensor, Tensor>(tm.params.map((p) => [p.param, p.grad]));
  return createTape(rec, options.grads, { sinks, dropout: options.dropout });
}

/**
 * Records the training pass on `tape` (see {@link trainingTape}) and returns the loss variable:
 * its value is [2] = (mean loss over supervised tokens, their count). Run
 * `backward(tape, loss, loss.value)` for gradients; read the value after submitting and then
 * `unref` it. `gradScale` is the gradient factor applied at the loss (default 1).
 */
export function trainForward(
  tape: Tape,
  tm: TrainingModel,
  input: TrainBatchTensors,
  options: TrainForwardOptions & { gradScale?: number } = {},
): Var {
  const { model } = tm;
  const attend = fullAttention(model.config, input.pos, input.maskInfo);
  return scope(tape, () => {
    const y = chatglmHidden(tape, model, input.ids, attend, { recompute: options.recompute });
    // Only the supervised positions go to the lm_head (the prompt positions have no loss).
    const rows = input.lossRows ? gatherRowsOp(tape, y, input.lossRows) : y;
    const logits = linearForward(tape, model.lmHead, rows);
    return crossEntropyOp(tape, logits, input.targets, options.gradScale ?? 1);
  });
}
