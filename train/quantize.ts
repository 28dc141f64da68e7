/**
 * The base a LoRA run trains on, QLoRA-style: `--quantize 4|8[,group=G]` quantizes the frozen
 * base's block linear layers at load (ChatGLM-6B's four, the Llama family's seven projections:
 * core/quant/format.ts); a pre-quantized
 * checkpoint (config `quantization_bit`) is trained on as stored. Either way the base stays packed
 * on the GPU, LoRA weights, gradients and AdamW state are f32, and the backward pass computes dx
 * through the packed weights (core/kernels/matmul/linear_grad.ts → `quantInputGrad`).
 */

import {
  BASE_QUANTIZATION_KEY,
  baseQuantizationValue,
  describeQuant,
  parseQuantizeFlag,
  type QuantizeOption,
  type QuantSpec,
  resolveQuantization,
} from "../core/mod.ts";
import type { TrainConfig } from "./config.ts";

export interface TrainQuantization {
  /** What `loadModel` is asked for (undefined: load as stored). */
  quantize: QuantizeOption | undefined;
  /** The base's quantization once loaded; null = float weights. */
  spec: QuantSpec | null;
}

/**
 * Resolves the run's base quantization against the checkpoint's config. Throws, naming the flag and
 * the model, for `--full` on an int8/int4 base and for a `--quantize` that differs from a
 * pre-quantized checkpoint's own.
 */
export function trainQuantization(
  config: Pick<TrainConfig, "quantize" | "full">,
  model: { quantization?: QuantSpec | null },
  label: string,
): TrainQuantization {
  const quantize = config.quantize === null
    ? undefined
    : parseQuantizeFlag(config.quantize) as QuantizeOption;
  const resolved = resolveQuantization(model, quantize, label);
  if (resolved && config.full) {
    throw new Error(
      `--full: ${label} is loaded ${describeQuant(resolved.spec)}; an int8/int4 base is frozen, ` +
        "so only LoRA trains on it (full fine-tuning needs the full-precision checkpoint)",
    );
  }
  return { quantize, spec: resolved?.spec ?? null };
}

/**
 * The adapter config's raw keys with the base recorded (see core/adapters/peft_config.ts): set for
 * an int8/int4 base, removed for a float one (so a float run writes the same adapter_config.json
 * as before, and an adapter started from a QLoRA one does not keep a stale record).
 */
export function withBaseQuantization(
  raw: Record<string, unknown>,
  spec: QuantSpec | null,
): Record<string, unknown> {
  const out = { ...raw };
  delete out[BASE_QUANTIZATION_KEY];
  if (spec) out[BASE_QUANTIZATION_KEY] = baseQuantizationValue(spec);
  return out;
}
