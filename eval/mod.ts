/**
 * `@medglm/eval`: medical benchmark evaluation — readers for CMMLU/C-Eval, CMB, CMExam, MMCU and
 * PromptCBLUE, open questions answered into files for judging, zero-/k-shot prompts, option log-likelihood and generation scorers, held-out
 * perplexity and ROUGE-L/BLEU-4, a resumable per-question cache, and the base-vs-adapter report.
 *
 * @module
 */
export * from "./types.ts";
export * from "./formats/mod.ts";
export * from "./prompts.ts";
export * from "./model.ts";
export {
  answerCandidates,
  continuationLogprobs,
  type ContinuationRequest,
  type LoglikOptions,
  type LoglikQuestion,
  scoreLoglik,
} from "./scorers/loglik.ts";
export { type GenerateOptions, type GenerateQuestion, scoreGenerate } from "./scorers/generate.ts";
export { extractAnswer } from "./scorers/extract.ts";
export * from "./metrics/mod.ts";
export * from "./open_qa.ts";
export * from "./cache.ts";
export * from "./evaluate.ts";
export { variantHash } from "./identity.ts";
export * from "./report/comparison.ts";
export * from "./report/bar_chart.ts";
export {
  adapterName,
  type EvalCliOptions,
  HELP,
  main,
  parseEvalArgs,
  runEvaluation,
} from "./cli.ts";
