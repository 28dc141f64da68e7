/**
 * The memory plan of a Llama-family model (Qwen2 / Qwen2.5, Qwen3, Llama 3): the shapes the one
 * planner (`planMemoryOf`, chatglm/memory_plan.ts) needs — parameter table and quantized layout,
 * the KV cache (nkv heads of d per layer: grouped-query attention keeps only those), the live
 * activations of a layer at a step's peak, and the buffers that must fit a binding.
 */

import { LLAMA_QUANT_LAYOUT } from "../../quant/format.ts";
import type { PlanArch } from "../chatglm/memory_plan.ts";
import type { LlamaConfig } from "./config.ts";
import { llamaParameters } from "./params.ts";

export function llamaPlanArch(config: LlamaConfig): PlanArch {
  const { hiddenSize: h, intermediateSize: inner, vocabSize: V } = config;
  const qo = config.numHeads * config.headDim, kvo = config.numKvHeads * config.headDim;
  return {
    parameters: llamaParameters(config),
    layout: LLAMA_QUANT_LAYOUT,
    numLayers: config.numLayers,
    kvValuesPerToken: kvo,
    // Live at the peak of a layer, per token: x and its norm (2h); q, k, v and their rotated,
    // head-major copies (2·(qo + 2·kvo)); the attention output (qo) and o (h); gate, up and
    // silu(gate)·up (3·inner).
    activationValuesPerToken: 3 * h + 3 * qo + 4 * kvo + 3 * inner,
    vocabSize: V,
    hiddenSize: h,
    largestLinear: inner * h,
    weightBindings: [
      { what: "embed_tokens", values: V * h },
      ...(config.tieWordEmbeddings ? [] : [{ what: "lm_head", values: V * h }]),
      { what: "mlp weights (gate, up, down)", values: inner * h },
      { what: "q_proj / o_proj weight", values: qo * h },
    ],
    rowBindings: [
      { what: "q, k, v activations of one row", values: qo + 2 * kvo },
      { what: "MLP activations of one row", values: inner },
    ],
  };
}
