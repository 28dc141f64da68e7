// @medglm/demo: the demo chain, a member above train, serve and eval.
/**
 * The demo chain (`deno task demo`): data → full training from random weights → LoRA → answers.
 *
 * @module
 */

export {
  type DemoAnswer,
  demoConfigJson,
  type DemoOptions,
  type DemoResult,
  runDemo,
} from "./pipeline.ts";
export { writeRandomChatGLM } from "./init_model.ts";
export { answerInstructions, type AnswerOptions, answerQuestions, overlap } from "./generate.ts";
export {
  qwen3DemoConfigJson,
  type Qwen3DemoOptions,
  type Qwen3DemoResult,
  runQwen3Demo,
  writeQwen3DemoTokenizer,
} from "./qwen3.ts";
