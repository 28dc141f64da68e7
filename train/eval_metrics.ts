/**
 * Evaluation metrics on the validation shards, as the trainer logs them: the loss is the mean
 * over all supervised tokens of the validation set (README §8's per-token loss; every token
 * counts the same whatever its batch), perplexity = exp(loss), and throughput.
 */

import type { EvalLogEntry } from "./trainer_state.ts";

export interface EvalAccumulator {
  /** Adds one batch: its mean loss over `tokens` supervised tokens and its example count. */
  add(meanLoss: number, tokens: number, samples: number): void;
  /** The log entry for step/epoch after `seconds` of evaluation. */
  entry(step: number, epoch: number, seconds: number): EvalLogEntry;
}

export function evalAccumulator(): EvalAccumulator {
  let lossSum = 0, tokens = 0, samples = 0, batches = 0;
  return {
    add(meanLoss, n, s) {
      if (!(n > 0)) return; // a batch without supervised tokens carries no loss
      lossSum += meanLoss * n;
      tokens += n;
      samples += s;
      batches++;
    },
    entry(step, epoch, seconds) {
      if (tokens === 0) {
        throw new Error("evaluation saw no supervised tokens (empty validation split?)");
      }
      const loss = lossSum / tokens;
      const per = (x: number) => (seconds > 0 ? x / seconds : 0);
      return {
        step,
        epoch,
        eval_loss: loss,
        eval_perplexity: Math.exp(loss),
        eval_runtime: seconds,
        eval_samples_per_second: per(samples),
        eval_steps_per_second: per(batches),
        eval_tokens_per_second: per(tokens),
      };
    },
  };
}
