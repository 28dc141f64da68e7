/**
 * Gradient accumulation: our choice is HF Trainer's, which the seed used. Each micro-batch's loss
 * is the mean over its supervised tokens (§8); the backward passes of the `accumulationSteps`
 * micro-batches add into the same gradient buffers, and the optimizer multiplies the sum by
 * 1 / accumulationSteps (`gradScale`), so the update follows the average of the micro-batch mean
 * losses. (Weighting by token counts instead would make every token count equally; HF does not,
 * and matching the seed's loss curves matters more here.) The logged loss is the same average.
 *
 * Loss scaling: the LoRA path keeps activations, gradients, LoRA weights and optimizer state in
 * f32 (only frozen base weights may be stored in f16), so gradients cannot overflow f16 and no
 * loss scaler is needed; the NaN/Inf guard (clip.ts) still skips any step whose gradients are not
 * finite and says so.
 */

/** The factor the optimizer applies to the summed gradients of one accumulation window. */
export function accumulationScale(accumulationSteps: number): number {
  if (!(Number.isInteger(accumulationSteps) && accumulationSteps >= 1)) {
    throw new RangeError(
      `accumulation steps must be a positive integer (got ${accumulationSteps})`,
    );
  }
  return 1 / accumulationSteps;
}

/** Running mean of micro-batch losses over one accumulation window (what the trainer logs). */
export interface LossWindow {
  add(microBatchLoss: number, tokens: number): void;
  /** Mean of the micro-batch mean losses (HF's logged loss). */
  readonly mean: number;
  /** Supervised tokens seen in the window (for tokens/s). */
  readonly tokens: number;
  readonly count: number;
  reset(): void;
}

export function lossWindow(): LossWindow {
  let sum = 0;
  let count = 0;
  let tokens = 0;
  return {
    add(loss, n) {
      sum += loss;
      count++;
      tokens += n;
    },
    get mean() {
      return count ? sum / count : NaN;
    },
    get tokens() {
      return tokens;
    },
    get count() {
      return count;
    },
    reset() {
      sum = 0;
      count = 0;
      tokens = 0;
    },
  };
}

/** Optimizer steps per epoch and in total, HF Trainer's arithmetic (partial windows dropped as HF's len // accum). */
export function stepsPlan(
  examples: number,
  batchSize: number,
  accumulationSteps: number,
  epochs: number,
  maxSteps: number | null,
): { microBatchesPerEpoch: number; stepsPerEpoch: number; totalSteps: number } {
  const microBatchesPerEpoch = Math.ceil(examples / batchSize);
  const stepsPerEpoch = Math.max(1, Math.floor(microBatchesPerEpoch / accumulationSteps));
  const totalSteps = maxSteps !== null && maxSteps > 0
    ? maxSteps
    : Math.ceil(stepsPerEpoch * epochs);
  return { microBatchesPerEpoch, stepsPerEpoch, totalSteps };
}
