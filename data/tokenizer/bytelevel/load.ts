/**
 * `loadByteLevelTokenizer(dir)`: the tokenizer of a model directory holding a Hugging Face
 * `tokenizer.json` (and usually `tokenizer_config.json`, whose special tokens and chat template it
 * takes).
 */

import {
  type ByteLevelTokenizer,
  type ByteLevelTokenizerOptions,
  createByteLevelTokenizer,
} from "./tokenizer.ts";

/** tokenizer.json of real models is 2–20 MB; refuse files far past that before reading them. */
const MAX_TOKENIZER_JSON_BYTES = 256 * 1024 * 1024;
const MAX_CONFIG_JSON_BYTES = 16 * 1024 * 1024;

async function readJson(path: string, limit: number): Promise<unknown> {
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new Error(`${path}: no such file`);
    throw err;
  }
  if (size > limit) throw new Error(`${path}: ${size} bytes, over the limit of ${limit} bytes`);
  const text = await Deno.readTextFile(path);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

/** Whether `dir` has a `tokenizer.json` (the byte-level tokenizer's file). */
export async function hasTokenizerJson(dir: string): Promise<boolean> {
  try {
    return (await Deno.stat(`${dir}/tokenizer.json`)).isFile;
  } catch {
    return false;
  }
}

export async function loadByteLevelTokenizer(
  dir: string,
  options: ByteLevelTokenizerOptions = {},
): Promise<ByteLevelTokenizer> {
  const root = dir.replace(/\/+$/, "") || dir;
  const json = await readJson(`${root}/tokenizer.json`, MAX_TOKENIZER_JSON_BYTES);
  let config: Record<string, unknown> = {};
  const configPath = `${root}/tokenizer_config.json`;
  try {
    await Deno.stat(configPath);
    const c = await readJson(configPath, MAX_CONFIG_JSON_BYTES);
    if (typeof c !== "object" || c === null || Array.isArray(c)) {
      throw new Error(`${configPath}: not a JSON object`);
    }
    config = c as Record<string, unknown>;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return createByteLevelTokenizer(json, config, `${root}/tokenizer.json`, options);
}
