/**
 * Where the project's shipped demo model and its data build config live (relative to this
 * module, so they resolve however the trainer is started), and the sentence that says what the
 * demo model is.
 */

import { DEMO_MODEL_DIR } from "../../core/mod.ts";

export const DEMO_DATA_CONFIG: string =
  new URL("../../data/configs/demo.json", import.meta.url).pathname;

export const DEMO_NOTICE =
  `using the project's demo model (${DEMO_MODEL_DIR}): a tiny ChatGLM-architecture ` +
  "model trained here on 224 sample Q&A pairs to show the pipeline; it is a demo, not a medical " +
  "model (pass --model DIR for a real checkpoint)";
