/**
 * One set of generation defaults for every front end (terminal, HTTP, page, bot): what a request
 * gets for each sampling setting it leaves out. They come from the model directory's
 * `generation_config.json` (Hugging Face's file) when it has one, else from ours: ChatGLM-6B's
 * chat settings (temperature 0.95, top_p 0.7), so `deno task infer`, `/v1/chat/completions` and
 * the bot sample the same way unless a user says otherwise.
 */
import { isJsonObject, readJsonFile } from "../../base/mod.ts";
import type { SamplingOptions } from "./types.ts";

export interface GenerationDefaults {
  /** 0 is greedy. */
  temperature: number;
  topP: number;
  /** 0: off. */
  topK: number;
  /** 1: off. */
  repetitionPenalty: number;
  /** Longest answer when a request gives no limit (still capped by the context). */
  maxNewTokens: number;
  /** Mask tokens that cannot continue valid UTF-8 (see sampling.ts). */
  validUtf8: boolean;
  /** Where they came from, for messages (`generation_config.json`'s path or "built-in"). */
  source: string;
}

/** Ours: ChatGLM-6B's `chat()` settings; answers up to 512 tokens. */
export const BUILTIN_GENERATION_DEFAULTS: Readonly<GenerationDefaults> = Object.freeze({
  temperature: 0.95,
  topP: 0.7,
  topK: 0,
  repetitionPenalty: 1,
  maxNewTokens: 512,
  validUtf8: false,
  source: "built-in",
});

const FILE = "generation_config.json";

/**
 * The defaults of a model directory: `base` (default: ours) overridden by the fields of
 * `<dir>/generation_config.json` when it exists. Read fields: `do_sample` (false: greedy),
 * `temperature`, `top_p`, `top_k`, `repetition_penalty`, `max_new_tokens`; other fields (ids,
 * `max_length`, which counts the prompt too) are not sampling defaults and are ignored. A field
 * with a wrong type or range is an error naming the file and the field.
 */
export async function readGenerationDefaults(
  dir: string,
  base: Readonly<GenerationDefaults> = BUILTIN_GENERATION_DEFAULTS,
): Promise<GenerationDefaults> {
  const path = `${dir.replace(/\/+$/, "")}/${FILE}`;
  let json;
  try {
    json = await readJsonFile(path);
  } catch (err) {
    if ((err as Error).message === `${path}: not found`) return { ...base };
    throw err;
  }
  return parseGenerationConfig(json, path, base);
}

/** Validates the parsed `generation_config.json` (see {@link readGenerationDefaults}). */
export function parseGenerationConfig(
  json: unknown,
  source: string,
  base: Readonly<GenerationDefaults> = BUILTIN_GENERATION_DEFAULTS,
): GenerationDefaults {
  if (!isJsonObject(json)) throw new Error(`${source}: expected a JSON object`);
  const fail = (field: string, rule: string): never => {
    throw new Error(`${source}: ${field} ${rule} (got ${JSON.stringify(json[field])})`);
  };
  const num = (field: string, ok: (v: number) => boolean, rule: string): number | undefined => {
    const v = json[field];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) fail(field, rule);
    return v as number;
  };
  const out: GenerationDefaults = { ...base, source };
  const t = num("temperature", (v) => v >= 0, "must be a number >= 0");
  if (t !== undefined) out.temperature = t;
  const p = num("top_p", (v) => v > 0 && v <= 1, "must be a number in (0, 1]");
  if (p !== undefined) out.topP = p;
  const k = num("top_k", (v) => Number.isInteger(v) && v >= 0, "must be an integer >= 0");
  if (k !== undefined) out.topK = k;
  const r = num("repetition_penalty", (v) => v > 0, "must be a number > 0");
  if (r !== undefined) out.repetitionPenalty = r;
  const n = num("max_new_tokens", (v) => Number.isInteger(v) && v >= 1, "must be an integer >= 1");
  if (n !== undefined) out.maxNewTokens = n;
  const doSample = json.do_sample;
  if (doSample !== undefined && doSample !== null && typeof doSample !== "boolean") {
    fail("do_sample", "must be true or false");
  }
  // HF: without do_sample, generate() is greedy whatever temperature says.
  if (doSample === false) out.temperature = 0;
  return out;
}

/** `request` with every sampling setting it leaves out taken from `defaults`. */
export function withGenerationDefaults<T extends SamplingOptions & { maxNewTokens?: number }>(
  request: T,
  defaults: Readonly<GenerationDefaults>,
): T {
  return {
    ...request,
    temperature: request.temperature ?? defaults.temperature,
    topP: request.topP ?? defaults.topP,
    topK: request.topK ?? defaults.topK,
    repetitionPenalty: request.repetitionPenalty ?? defaults.repetitionPenalty,
    maxNewTokens: request.maxNewTokens ?? defaults.maxNewTokens,
    validUtf8: request.validUtf8 ?? defaults.validUtf8,
  };
}
