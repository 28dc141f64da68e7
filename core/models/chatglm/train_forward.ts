/**
 * ChatGLM-6B training on the autograd tape: which parameters train (LoRA: every adapter A/B,
 * base frozen and without gradient buffers; full: every base parameter, f32), their gradient
 * buffers, and the forward pass of README §3 recorded with differentiable ops, each layer
 * optionally wrapped in recompute, ending in the §8 loss.
 */

import type { Recording } from "../../gpu/recording.ts";
import { fill } from "../../kernels/elementwise/elementwise.ts";
import { releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import {
  addScaledOp,
  crossEntropyOp,
  embeddingOp,
  gatherRowsOp,
  geluOp,
  layerNormOp,
  type LayerNormVars,
  linearOp,
  type LinearVars,
  selfAttentionOp,
} from "../../autograd/ops.ts";
import { checkpoint } from "../../autograd/checkpoint.ts";
import { parameter, type Tape, unref, type Var } from "../../autograd/tape.ts";
import type { LayerNorm } from "../../nn/layer_norm.ts";
import type { LoraLinear } from "../../nn/lora_linear.ts";
import { loraTensorKey } from "../../adapters/peft_config.ts";
import { RESIDUAL_ALPHA } from "./config.ts";
import type { ChatGLMModel } from "./model.ts";
import { IGNORE_INDEX, type TrainBatch } from "./train_batch.ts";

/** A trainable tensor: the parameter and its f32 gradient buffer (same shape). */
export interface TrainableParam {
  /** Checkpoint name (full) or peft key (LoRA). */
  name: string;
  shape: number[];
  param: Tensor;
  grad: Tensor;
}

export interface TrainingModel {
  readonly model: ChatGLMModel;
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
    for (const layer of model.layers) {
      for (const lin of blockLinears(layer)) {
        if (!lin.lora) continue;
        add(loraTensorKey(lin.name, "A"), lin.lora.a);
        add(loraTensorKey(lin.name, "B"), lin.lora.b);
      }
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

function layerVars(
  v: Record<string, LinearVars | LayerNormVars>,
): Var[] {
  const out: Var[] = [];
  for (const part of Object.values(v)) {
    if ("eps" in part) out.push(part.weight, part.bias);
    else {
      out.push(part.weight);
      if (part.bias) out.push(part.bias);
      if (part.lora) out.push(part.lora.a, part.lora.b);
    }
  }
  return out;
}

function blockLinears(layer: ChatGLMModel["layers"][number]): LoraLinear[] {
  return [layer.queryKeyValue, layer.dense, layer.denseHTo4h, layer.dense4hToH];
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
  /** LoRA dropout probability (default: the adapter's `lora_dropout`); 0 for evaluation. */
  dropout?: number;
  /** Seed of this step's dropout masks (e.g. the step number). */
  seed?: number;
  /** Gradient factor applied at the loss (default 1). */
  gradScale?: number;
}

/**
 * Records the forward pass on `tape` and returns the loss variable: its value is [2] = (mean loss
 * over supervised tokens, their count). Run `backward(tape, loss, loss.value)` for gradients;
 * read the value after submitting and then `unref` it.
 */
export function trainForward(
  tape: Tape,
  tm: TrainingModel,
  input: TrainBatchTensors,
  options: TrainForwardOptions = {},
): Var {
  const { model } = tm;
  const config = model.config;
  const sinks = new Map<Tensor, Tensor>(tm.params.map((p) => [p.param, p.grad]));
  const param = (t: Tensor, label: string) => parameter(t, sinks.get(t) ?? null, label);
  const seed = (options.seed ?? 0) >>> 0;
  const norm = (ln: LayerNorm): LayerNormVars => ({
    weight: param(ln.weight, `${ln.name}.weight`),
    bias: param(ln.bias, `${ln.name}.bias`),
    eps: ln.eps,
  });
  const lin = (l: LoraLinear, slot: number): LinearVars => ({
    weight: param(l.weight, `${l.name}.weight`),
    bias: l.bias ? param(l.bias, `${l.name}.bias`) : null,
    lora: l.lora
      ? {
        a: param(l.lora.a, `${l.name}.lora_A`),
        b: param(l.lora.b, `${l.name}.lora_B`),
        scaling: l.lora.scaling,
        dropout: options.dropout ?? l.lora.dropout,
        seed: [seed, slot],
      }
      : null,
  });
  const s = input.batch.seq;
  const maxPosition = Math.max(8192, 2 ** Math.ceil(Math.log2(s + 2)));
  let x = embeddingOp(
    tape,
    param(model.embedding.weight, "transformer.word_embeddings.weight"),
    input.ids,
  );
  for (const layer of model.layers) {
    const l = layer.index;
    const vars = {
      ln1: norm(layer.inputLayerNorm),
      qkv: lin(layer.queryKeyValue, l * 4),
      dense: lin(layer.dense, l * 4 + 1),
      ln2: norm(layer.postAttentionLayerNorm),
      up: lin(layer.denseHTo4h, l * 4 + 2),
      down: lin(layer.dense4hToH, l * 4 + 3),
    };
    const block = (t: Tape, [xin]: Var[]): Var => {
      const a = layerNormOp(t, xin, vars.ln1);
      const qkv = linearOp(t, a, vars.qkv);
      const ctx = selfAttentionOp(t, qkv, {
        heads: config.numHeads,
        layerScale: l + 1,
        maskInfo: input.maskInfo,
        pos: input.pos,
        maxPosition,
      });
      unref(t, qkv);
      const o = linearOp(t, ctx, vars.dense);
      unref(t, ctx);
      // Both residuals add the LayerNorm output times α = sqrt(56) (README §3.4).
      const hmid = addScaledOp(t, a, RESIDUAL_ALPHA, o);
      unref(t, a);
      unref(t, o);
      const m = layerNormOp(t, hmid, vars.ln2);
      unref(t, hmid);
      const up = linearOp(t, m, vars.up);
      const act = geluOp(t, up);
      unref(t, up);
      const f = linearOp(t, act, vars.down);
      unref(t, act);
      const out = addScaledOp(t, m, RESIDUAL_ALPHA, f);
      unref(t, m);
      unref(t, f);
      return out;
    };
    const next = options.recompute
      ? checkpoint(tape, [x], block, { label: `layer ${l}`, parameters: layerVars(vars) })
      : block(tape, [x]);
    unref(tape, x);
    x = next;
  }
  const yAll = layerNormOp(tape, x, norm(model.finalLayerNorm));
  unref(tape, x);
  let y = yAll;
  if (input.lossRows) {
    y = gatherRowsOp(tape, yAll, input.lossRows);
    unref(tape, yAll);
  }
  const logits = linearOp(tape, y, {
    weight: param(model.lmHead.weight, "lm_head.weight"),
    bias: null,
    lora: null,
  });
  unref(tape, y);
  const loss = crossEntropyOp(tape, logits, input.targets, options.gradScale ?? 1);
  unref(tape, logits);
  return loss;
}
