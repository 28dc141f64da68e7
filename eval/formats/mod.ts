/** Benchmark readers: every format → normalized multiple-choice items plus reported problems. */
export { csvSubject, parseMcCsv, readMcCsv } from "./cmmlu.ts";
export { jsonMcItem, parseMcJson, readAnswerList, readCmb, readMcJson } from "./cmb.ts";
export { parsePromptCblue, readPromptCblue } from "./promptcblue.ts";
export {
  loadOpenTask,
  type OpenQuestion,
  type OpenTask,
  parseOpenQuestions,
} from "./open_questions.ts";
export {
  asciiLetters,
  checkOptions,
  jsonItems,
  normalizeAnswer,
  parsePackedOptions,
  readEvalText,
} from "./common.ts";
export {
  loadTask,
  type McTask,
  parseTaskSpecs,
  TASK_KINDS,
  type TaskKind,
  type TaskSpec,
} from "./tasks.ts";
