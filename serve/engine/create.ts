/**
 * `createEngine`: the one entry point for an engine, over a loaded model (or decoder) or over a
 * model directory that it loads first. It sits above engine.ts and load.ts so that neither imports
 * the other.
 */

import { buildEngine, type CreateEngineOptions, type LocalEngine } from "./engine.ts";
import { loadEngine, type LoadEngineOptions } from "./load.ts";

/**
 * The engine over a loaded model and tokenizer (`{ model, tokenizer }`, or `{ decoder, tokenizer }`
 * for another backend). Given a model *directory* instead (`{ model: "dir", adapter?, backend? }`,
 * or no model: the demo model), it loads everything first: see `loadEngine`.
 */
export function createEngine(opts: CreateEngineOptions): LocalEngine;
export function createEngine(opts: LoadEngineOptions): Promise<LocalEngine>;
export function createEngine(
  opts: CreateEngineOptions | LoadEngineOptions,
): LocalEngine | Promise<LocalEngine> {
  const o = opts as CreateEngineOptions;
  if ((typeof o.model === "object" && o.model !== null) || o.decoder) return buildEngine(o);
  return loadEngine(opts as LoadEngineOptions);
}
