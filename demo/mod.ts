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
export { answerInstructions, overlap } from "./generate.ts";
