/**
 * `loadTokenizer(dir)`: the tokenizer of a model directory, picked by the files it holds —
 * `tokenizer.json` (Hugging Face tokenizers: the byte-level BPE of Qwen2/2.5, Qwen3, Llama 3) or
 * ChatGLM-6B's SentencePiece `ice_text.model` (or the `vocab_file` its tokenizer_config names).
 * A byte-level tokenizer also takes the end-of-turn ids of `generation_config.json`'s
 * `eos_token_id` (often a list: Qwen `[<|im_end|>, <|endoftext|>]`).
 */

import { isAbsolute, join } from "node:path";
import { isJsonObject, readJsonFile } from "../../base/mod.ts";
import { loadTokenizer as loadChatGLMTokenizer } from "./chatglm/load.ts";
import type { ChatGLMTokenizer } from "./chatglm/tokenizer.ts";
import { loadByteLevelTokenizer } from "./bytelevel/load.ts";
import type { ByteLevelTokenizer } from "./bytelevel/tokenizer.ts";

/** Every tokenizer `loadTokenizer` returns: the common interface, narrowed by `kind`. */
export type AnyTokenizer = ChatGLMTokenizer | ByteLevelTokenizer;

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Which tokenizer a directory holds, or null (with what was looked for in the error). */
export async function detectTokenizerKind(
  dir: string,
): Promise<"bytelevel-bpe" | "chatglm" | null> {
  if (await isFile(join(dir, "tokenizer.json"))) return "bytelevel-bpe";
  if (await isFile(join(dir, "ice_text.model"))) return "chatglm";
  // A ChatGLM tokenizer_config may name its SentencePiece file (vocab_file).
  const cfgPath = join(dir, "tokenizer_config.json");
  if (await isFile(cfgPath)) {
    const cfg = await readJsonFile(cfgPath).catch(() => null);
    const vf = isJsonObject(cfg) ? cfg.vocab_file : undefined;
    if (typeof vf === "string" && vf && await isFile(isAbsolute(vf) ? vf : join(dir, vf))) {
      return "chatglm";
    }
  }
  return null;
}

/**
 * generation_config.json's `eos_token_id` (a number or a list) as a list; [] when the file or the
 * field is absent. A field of the wrong type is an error naming the file.
 */
export async function generationEndIds(dir: string): Promise<number[]> {
  const path = join(dir, "generation_config.json");
  if (!(await isFile(path))) return [];
  const json = await readJsonFile(path);
  if (!isJsonObject(json)) throw new Error(`${path}: expected a JSON object`);
  const v = json.eos_token_id;
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      throw new Error(
        `${path}: eos_token_id must be a token id or a list of them (got ${JSON.stringify(v)})`,
      );
    }
  }
  return list as number[];
}

/**
 * The tokenizer of a model directory (see the module comment). Errors name the directory and the
 * files looked for.
 */
export async function loadTokenizer(dir: string): Promise<AnyTokenizer> {
  const root = dir.replace(/\/+$/, "") || dir;
  const kind = await detectTokenizerKind(root);
  if (kind === "bytelevel-bpe") {
    return await loadByteLevelTokenizer(root, {
      endOfTurnIds: await generationEndIds(root),
      endOfTurnSource: `${root}/generation_config.json eos_token_id`,
    });
  }
  if (kind === "chatglm") return await loadChatGLMTokenizer(root);
  throw new Error(
    `${root}: no tokenizer found (looked for tokenizer.json — Qwen/Llama byte-level BPE — and ` +
      "ice_text.model — ChatGLM-6B SentencePiece); copy the tokenizer files of the model into " +
      "the directory",
  );
}
