/**
 * Llama-family training (spec §8: tests/fixtures/llama-family/README.md): the batch layout
 * (right-padded rows, positions 0..T−1, causal mask, labels shifted by one inside the loss) and
 * the training pass — the shared forward (forward.ts, the blocks inference runs) with full
 * grouped-query attention on a recording tape, ending in the mean cross-entropy over supervised
 * tokens. Trainable parameters, gradient buffers and the tape are the architecture-independent
 * ones of chatglm/train_forward.ts (a tied head's two uses add into one gradient buffer).
 */

import { crossEntropyOp, gatherRowsOp } from "../../autograd/ops.ts";
import { IGNORE_INDEX } from "../../autograd/labels.ts";
import { scope, type Tape, type Var } from "../../autograd/tape.ts";
import { linearForward } from "../../nn/linear.ts";
import { releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import {
  prepareTrainingOf,
  type TrainBatchTensors,
  type TrainForwardOptions,
  type TrainingModel,
} from "../chatglm/train_forward.ts";
import type { TrainBatch } from "../chatglm/train_batch.ts";
import { fullAttention } from "./attention.ts";
import { blockLinears } from "./block.ts";
import { llamaHidden } from "./forward.ts";
import { modelTable } from "./lockstep.ts";
import type { LlamaModel } from "./model.ts";

/** LoRA (adapter A/B, base frozen) or full (every base parameter, f32) training of `model`. */
export function prepareLlamaTraining(
  model: LlamaModel,
  mode: "lora" | "full",
): TrainingModel<LlamaModel> {
  return prepareTrainingOf(model, model.layers.flatMap(blockLinears), mode);
}

/**
 * The batch from examples' `input_ids` and `labels`: right-padded with the pad id (labels −100),
 * positions 0..T−1, targets = labels shifted left by one. `pos` is [b, s] here (1-D rotary).
 */
export function buildLlamaTrainBatch(
  inputIds: readonly (readonly number[])[],
  labels: readonly (readonly number[])[],
  config: LlamaModel["config"],
): TrainBatch {
  if (inputIds.length === 0) throw new Error("buildTrainBatch: no examples");
  if (labels.length !== inputIds.length) {
    throw new Error(`buildTrainBatch: ${inputIds.length} examples but ${labels.length} label rows`);
  }
  const b = inputIds.length;
  const s = Math.max(...inputIds.map((r) => r.length));
  const ids = new Int32Array(b * s).fill(config.padTokenId);
  const targets = new Int32Array(b * s).fill(IGNORE_INDEX);
  const pos = new Int32Array(b * s);
  let tokens = 0;
  for (let r = 0; r < b; r++) {
    const row = inputIds[r], lab = labels[r];
    if (lab.length !== row.length) {
      throw new Error(
        `buildTrainBatch: example ${r} has ${row.length} input ids but ${lab.length} labels`,
      );
    }
    row.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
        throw new Error(`buildTrainBatch: example ${r}, input_ids[${t}] = ${id} is not a token id`);
      }
      ids[r * s + t] = id;
    });
    for (let t = 0; t + 1 < lab.length; t++) {
      const y = lab[t + 1];
      if (y !== IGNORE_INDEX && (!Number.isInteger(y) || y < 0 || y >= config.vocabSize)) {
        throw new Error(`buildTrainBatch: example ${r}, labels[${t + 1}] = ${y} is not a token id`);
      }
      targets[r * s + t] = y;
      if (y !== IGNORE_INDEX) tokens++;
    }
    for (let t = 0; t < s; t++) pos[r * s + t] = t;
  }
  // Causal by index with no left pads: right pads are only seen by later pad positions.
  return { batch: b, seq: s, ids, pos, maskInfo: new Int32Array(b * 2), targets, tokens };
}

/** Uploads a batch of {@link buildLlamaTrainBatch} (free after the step's submit). */
export function uploadLlamaTrainBatch(model: LlamaModel, batch: TrainBatch): TrainBatchTensors {
  const gpu = model.gpu;
  const { batch: b, seq: s } = batch;
  const made: Tensor[] = [];
  const up = (data: Int32Array, shape: number[], label: string) => {
    const t = uploadTensor(gpu, data, shape, "i32", { label });
    made.push(t);
    return t;
  };
  const ids = up(batch.ids, [b, s], "train ids");
  const pos = up(batch.pos, [b, s], "train pos");
  const maskInfo = up(batch.maskInfo, [b, 2], "train maskInfo");
  const rows: number[] = [];
  batch.targets.forEach((t, k) => {
    if (t !== IGNORE_INDEX) rows.push(k);
  });
  const lossRows = rows.length ? up(Int32Array.from(rows), [rows.length], "train loss rows") : null;
  const targets = lossRows
    ? up(Int32Array.from(rows, (k) => batch.targets[k]), [rows.length], "train targets")
    : up(batch.targets, [b * s], "train targets");
  return {
    batch,
    ids,
    pos,
    maskInfo,
    lossRows,
    targets,
    free() {
      for (const t of made) if (!t.released) releaseTensor(t);
    },
  };
}

/** Records the training pass and returns the loss variable ([2] = mean loss, count). */
export function llamaTrainForward(
  tape: Tape,
  tm: TrainingModel<LlamaModel>,
  input: TrainBatchTensors,
  options: TrainForwardOptions & { gradScale?: number } = {},
): Var {
  const { model } = tm;
  const table = modelTable(model, input.batch.seq);
  const attend = fullAttention(model.config, input.pos, table, input.maskInfo);
  return scope(tape, () => {
    const y = llamaHidden(tape, model, input.ids, attend, { recompute: options.recompute });
    const rows = input.lossRows ? gatherRowsOp(tape, y, input.lossRows) : y;
    const logits = linearForward(tape, model.lmHead, rows);
    return crossEntropyOp(tape, logits, input.targets, options.gradScale ?? 1);
  });
}
