/** Loads the ChatGLM tokenizer of a model directory (`tokenizer_config.json` + `ice_text.model`). */
import { basename, isAbsolute, join } from "node:path";
import { type ChatGLMTokenizer, createTokenizer, type TokenizerConfig } from "./tokenizer.ts";

export interface LoadTokenizerOptions {
  /** Overrides `num_image_tokens` from `tokenizer_config.json`. */
  numImageTokens?: number;
}

export async function loadTokenizer(
  dir: string,
  opts: LoadTokenizerOptions = {},
): Promise<ChatGLMTokenizer> {
  const configPath = join(dir, "tokenizer_config.json");
  let config: TokenizerConfig = {};
  let raw: string | undefined;
  try {
    raw = await Deno.readTextFile(configPath);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(`${configPath}: cannot read tokenizer config: ${(e as Error).message}`);
    }
  }
  if (raw !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (e) {
      throw new Error(`${configPath}: not valid JSON: ${(e as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error(`${configPath}: expected a JSON object`);
    }
    config = parsed as TokenizerConfig;
    for (
      const k of [
        "bos_token",
        "eos_token",
        "end_token",
        "gmask_token",
        "mask_token",
        "pad_token",
        "unk_token",
      ] as const
    ) {
      const v = (config as Record<string, unknown>)[k];
      // transformers also allows {"content": "..."} (AddedToken dicts).
      if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
        (config as Record<string, unknown>)[k] = (v as { content: string }).content;
      } else if (v !== undefined && v !== null && typeof v !== "string") {
        throw new Error(`${configPath}: field ${k} must be a string`);
      } else if (v === null) delete (config as Record<string, unknown>)[k];
    }
    const nit = (config as Record<string, unknown>).num_image_tokens;
    if (nit !== undefined && (typeof nit !== "number" || !Number.isInteger(nit) || nit < 0)) {
      throw new Error(`${configPath}: field num_image_tokens must be a non-negative integer`);
    }
  }
  const vocabFile = (config as Record<string, unknown>).vocab_file;
  const modelName = typeof vocabFile === "string" && vocabFile ? vocabFile : "ice_text.model";
  // A config copied from another machine may carry an absolute path: look next to it instead.
  const modelPath = join(dir, isAbsolute(modelName) ? basename(modelName) : modelName);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(modelPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${modelPath}: tokenizer model not found (expected a SentencePiece file)`);
    }
    throw new Error(`${modelPath}: cannot read tokenizer model: ${(e as Error).message}`);
  }
  return createTokenizer(bytes, {
    source: modelPath,
    config,
    numImageTokens: opts.numImageTokens,
  });
}
