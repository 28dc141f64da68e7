/**
 * The trainer's configuration: named presets, a JSON file (`--config file.json`) and command-line
 * flags, merged in that order (flags override the file, the file overrides the preset), every
 * field checked with an error that names the flag or the file and field.
 *
 * JSON files use the field names of {@link TrainConfig} (camelCase, e.g. `"loraR": 8`,
 * `"targetModules": ["query_key_value"]`) plus `"preset"`; flags are the same names in kebab-case
 * (`--lora-r 8`, `--target-modules query_key_value,dense`).
 */

import { parseArgs } from "node:util";
import { SCHEDULE_KINDS, type ScheduleKind } from "./schedule.ts";
import { parseQuantizeFlag, quantSpecOf } from "../core/mod.ts";

export interface TrainConfig {
  /** The preset the values started from. */
  preset: string;
  /** HF model directory (config.json + weights). */
  model: string | null;
  /** A data directory built by `deno task data` (train/valid shards + manifest). */
  data: string | null;
  /** Where checkpoints, trainer_state.json and the loss plots go. */
  outputDir: string;
  /** Start LoRA from this PEFT adapter directory instead of a fresh adapter. */
  adapterInit: string | null;
  /** Full fine-tuning: every base parameter trainable (f32), no adapter. */
  full: boolean;
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  /** Linear modules that get LoRA (peft's matching: equal or ends with "." + entry). */
  targetModules: string[];
  /** Peak learning rate. */
  lr: number;
  scheduler: ScheduleKind;
  warmupSteps: number;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  /** Global-norm clipping; 0 disables. */
  maxGradNorm: number;
  /** Examples per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimizer step. */
  gradAccumulation: number;
  epochs: number;
  /** Stop after this many optimizer steps (overrides epochs); null = run the epochs. */
  maxSteps: number | null;
  /** Evaluate on the validation shards every N optimizer steps; 0 = only at the end. */
  evalSteps: number;
  /** At most this many validation batches per evaluation; 0 = all. */
  evalBatches: number;
  /** Also evaluate before the first step of a fresh run (HF's `eval_on_start`): the "before". */
  evalOnStart: boolean;
  saveSteps: number;
  loggingSteps: number;
  /** Examples are cut to this many tokens. */
  maxLength: number;
  /** Keep the newest K checkpoints (plus the best by eval loss); 0 = keep all. */
  keepCheckpoints: number;
  seed: number;
  /** Storage dtype of the frozen base weights ("f16" = f16 where the adapter supports it). */
  dtype: "f16" | "f32";
  /** Recompute each layer's activations in the backward pass (gradient checkpointing). */
  recompute: boolean;
  /**
   * QLoRA-style: quantize the frozen base at load (`--quantize 4|8[,group=G]`, the syntax of
   * core/quant/flag.ts); null = the checkpoint as stored (a pre-quantized one stays quantized).
   */
  quantize: string | null;
  /** Resume: null = fresh run, "" = newest checkpoint in outputDir, else that checkpoint dir. */
  resume: string | null;
  /** Print the memory plan and exit. */
  dryRun: boolean;
}

/** The seed project's training set-up (ChatGLM-LoRA-medical, HF Trainer + peft). */
const CHATGLM_LORA_MEDICAL: TrainConfig = {
  preset: "chatglm-lora-medical",
  model: null,
  data: null,
  outputDir: "runs/chatglm-lora-medical",
  adapterInit: null,
  full: false,
  loraR: 8,
  loraAlpha: 32,
  loraDropout: 0.1,
  targetModules: ["query_key_value"],
  lr: 5e-4,
  scheduler: "cosine",
  warmupSteps: 1000,
  // HF TrainingArguments defaults, which the seed did not change
  weightDecay: 0,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  maxGradNorm: 1,
  batchSize: 8,
  gradAccumulation: 8,
  epochs: 3,
  maxSteps: null,
  evalSteps: 50,
  evalBatches: 0,
  evalOnStart: false,
  saveSteps: 100,
  loggingSteps: 10,
  maxLength: 512,
  keepCheckpoints: 3,
  seed: 42,
  // the seed trained with fp16: here f16 weights where supported, f32 LoRA and optimizer state
  dtype: "f16",
  recompute: false,
  quantize: null,
  resume: null,
  dryRun: false,
};

/**
 * The quick start (`deno task train`): a LoRA that teaches the tiny demo model the sample topics
 * its base never saw (data/configs/demo.json), evaluated on reworded questions of those topics
 * before and during training. A strong adapter (every linear layer, r 16, lr 1e-2) because the
 * model is tiny and the run short: about ten epochs of the 76 new-topic records (runs on a CPU
 * adapter).
 */
const DEMO: TrainConfig = {
  ...CHATGLM_LORA_MEDICAL,
  preset: "demo",
  model: "models/demo",
  outputDir: "runs/demo",
  loraR: 16,
  loraAlpha: 32,
  loraDropout: 0.05,
  targetModules: ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
  lr: 1e-2,
  warmupSteps: 5,
  weightDecay: 0,
  batchSize: 4,
  gradAccumulation: 2,
  epochs: 1,
  maxSteps: 100,
  evalSteps: 25,
  evalBatches: 0,
  evalOnStart: true,
  saveSteps: 50,
  loggingSteps: 5,
  maxLength: 128,
  keepCheckpoints: 2,
  dtype: "f32",
};

/**
 * The seed's medical recipe carried over to the Llama family (Qwen2/2.5, Qwen3, Llama 3): the
 * same data, lr, schedule, batch and LoRA r/alpha/dropout; LoRA on the attention projections
 * (ChatGLM's fused `query_key_value` is q, k and v together; `o_proj` as the usual Llama-family
 * choice). Its data set is built with the model's chat template as the training format
 * (`deno task data --tokenizer DIR --prompt-format chat-template`).
 */
const MEDICAL_LORA: TrainConfig = {
  ...CHATGLM_LORA_MEDICAL,
  preset: "medical-lora",
  outputDir: "runs/medical-lora",
  targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"],
};

export const PRESETS: Readonly<Record<string, Readonly<TrainConfig>>> = {
  "chatglm-lora-medical": CHATGLM_LORA_MEDICAL,
  "medical-lora": MEDICAL_LORA,
  demo: DEMO,
};

export const DEFAULT_PRESET = "chatglm-lora-medical";

/** A copy of a named preset; throws naming the known presets. */
export function preset(name: string): TrainConfig {
  const p = PRESETS[name];
  if (!p) {
    throw new Error(
      `unknown preset ${JSON.stringify(name)} (known: ${Object.keys(PRESETS).join(", ")})`,
    );
  }
  return structuredClone(p) as TrainConfig;
}

// --- field table ---------------------------------------------------------------------------------

type Kind =
  | { t: "int"; min: number; nullable?: boolean }
  | { t: "number"; min: number; max?: number; minExclusive?: boolean; maxExclusive?: boolean }
  | { t: "string"; nullable: boolean }
  | { t: "bool" }
  | { t: "list" }
  | { t: "enum"; values: readonly string[] }
  | { t: "resume" }
  | { t: "quantize" };

const FIELDS: Record<Exclude<keyof TrainConfig, "preset">, Kind> = {
  model: { t: "string", nullable: true },
  data: { t: "string", nullable: true },
  outputDir: { t: "string", nullable: false },
  adapterInit: { t: "string", nullable: true },
  full: { t: "bool" },
  loraR: { t: "int", min: 1 },
  loraAlpha: { t: "number", min: 0, minExclusive: true },
  loraDropout: { t: "number", min: 0, max: 1, maxExclusive: true },
  targetModules: { t: "list" },
  lr: { t: "number", min: 0, minExclusive: true },
  scheduler: { t: "enum", values: SCHEDULE_KINDS },
  warmupSteps: { t: "int", min: 0 },
  weightDecay: { t: "number", min: 0 },
  adamBeta1: { t: "number", min: 0, max: 1, maxExclusive: true },
  adamBeta2: { t: "number", min: 0, max: 1, maxExclusive: true },
  adamEpsilon: { t: "number", min: 0, minExclusive: true },
  maxGradNorm: { t: "number", min: 0 },
  batchSize: { t: "int", min: 1 },
  gradAccumulation: { t: "int", min: 1 },
  epochs: { t: "number", min: 0, minExclusive: true },
  maxSteps: { t: "int", min: 1, nullable: true },
  evalSteps: { t: "int", min: 0 },
  evalBatches: { t: "int", min: 0 },
  evalOnStart: { t: "bool" },
  saveSteps: { t: "int", min: 1 },
  loggingSteps: { t: "int", min: 1 },
  maxLength: { t: "int", min: 2 },
  keepCheckpoints: { t: "int", min: 0 },
  seed: { t: "int", min: 0 },
  dtype: { t: "enum", values: ["f16", "f32"] },
  recompute: { t: "bool" },
  quantize: { t: "quantize" },
  resume: { t: "resume" },
  dryRun: { t: "bool" },
};

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** The flag of a field (`loraR` → `--lora-r`). */
export function flagOf(field: string): string {
  return "--" + kebab(field);
}

/** Checks one value from a JSON file (already parsed) against the field's kind. */
function fromJson(field: string, kind: Kind, value: unknown, where: string): unknown {
  const bad = (what: string): never => {
    throw new Error(
      `${where}: field ${JSON.stringify(field)} ${what} (got ${JSON.stringify(value)})`,
    );
  };
  switch (kind.t) {
    case "int":
      if (value === null && kind.nullable) return null;
      if (typeof value !== "number" || !Number.isInteger(value)) bad("must be an integer");
      return checkRange(value as number, kind, bad);
    case "number":
      if (typeof value !== "number" || !Number.isFinite(value)) bad("must be a number");
      return checkRange(value as number, kind, bad);
    case "string":
      if (value === null && kind.nullable) return null;
      if (typeof value !== "string" || value === "") bad("must be a non-empty string");
      return value;
    case "bool":
      if (typeof value !== "boolean") bad("must be true or false");
      return value;
    case "list":
      if (!Array.isArray(value) || value.length === 0) bad("must be a non-empty list of names");
      for (const v of value as unknown[]) {
        if (typeof v !== "string" || v === "") bad("must hold non-empty strings");
      }
      return [...value as string[]];
    case "enum":
      if (!kind.values.includes(value as string)) bad(`must be one of ${kind.values.join(", ")}`);
      return value;
    case "quantize":
      if (value === null) return null;
      if (typeof value !== "string" && typeof value !== "number") {
        bad('must be null or a quantization such as "4" or "4,group=32"');
      }
      return checkQuantize(String(value), (why) => bad(why));
    case "resume":
      if (value === null || value === false) return null;
      if (value === true) return "";
      if (typeof value !== "string") bad("must be true, false, null or a checkpoint directory");
      return value;
  }
}

function checkRange(v: number, kind: Kind, bad: (what: string) => never): number {
  if (kind.t !== "int" && kind.t !== "number") return v;
  const k = kind as { min: number; max?: number; minExclusive?: boolean; maxExclusive?: boolean };
  if (k.minExclusive ? !(v > k.min) : !(v >= k.min)) {
    bad(`must be ${k.minExclusive ? ">" : ">="} ${k.min}`);
  }
  if (k.max !== undefined && (k.maxExclusive ? !(v < k.max) : !(v <= k.max))) {
    bad(`must be ${k.maxExclusive ? "<" : "<="} ${k.max}`);
  }
  return v;
}

/** Converts one flag's string value to the field's type. */
function fromFlag(field: string, kind: Kind, value: string | boolean): unknown {
  const flag = flagOf(field);
  const bad = (what: string): never => {
    throw new Error(`${flag}: ${what} (got ${JSON.stringify(value)})`);
  };
  if (kind.t === "bool" || kind.t === "resume") {
    if (kind.t === "resume") return value === true ? "" : value;
    return value;
  }
  const s = String(value).trim();
  switch (kind.t) {
    case "int": {
      if (kind.nullable && (s === "none" || s === "-1")) return null;
      if (!/^[+-]?\d+$/.test(s)) bad("must be an integer");
      return checkRange(Number(s), kind, bad);
    }
    case "number": {
      const n = Number(s);
      if (s === "" || !Number.isFinite(n)) bad("must be a number");
      return checkRange(n, kind, bad);
    }
    case "string":
      if (s === "") bad("must not be empty");
      return s;
    case "list": {
      const items = s.split(",").map((x) => x.trim());
      if (items.length === 0 || items.some((x) => x === "")) {
        bad("must be a comma-separated list of names");
      }
      return items;
    }
    case "enum":
      if (!kind.values.includes(s)) bad(`must be one of ${kind.values.join(", ")}`);
      return s;
    case "quantize":
      if (s === "none") return null;
      return checkQuantize(s, (why) => {
        throw new Error(why);
      });
  }
}

/**
 * Validates a `--quantize` value with the one parser every command uses; returns it normalized.
 * `,embeddings` quantizes the embeddings and the tied head too (frozen like the rest: dx flows
 * through the packed head; tests/qlora_grad.test.ts), which saves the float table and, on a
 * software adapter, its texture copy (2 GiB at ChatGLM-6B's size).
 */
function checkQuantize(value: string, bad: (why: string) => never): string {
  try {
    quantSpecOf(parseQuantizeFlag(value)!);
  } catch (err) {
    return bad((err as Error).message);
  }
  return value.split(",").map((p) => p.trim()).join(",");
}

// --- parsing -------------------------------------------------------------------------------------

export interface ParsedTrainArgs {
  config: TrainConfig;
  /** Where each field's value came from: "preset", the file path, or the flag. */
  sources: Record<string, string>;
  /** `--help` was given. */
  help: boolean;
}

/** Parses flags; reads `--config FILE` when given. Throws errors naming the flag/file/field. */
export async function loadTrainConfig(args: readonly string[]): Promise<ParsedTrainArgs> {
  const flags = parseTrainFlags(args);
  let file: { path: string; json: unknown } | null = null;
  if (flags.configFile !== null) {
    const path = flags.configFile;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      throw new Error(`--config ${path}: cannot read it (${(err as Error).message})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
    }
    file = { path, json };
  }
  return { ...resolveTrainConfig(flags.values, file), help: flags.help };
}

/** Flag values (converted and range-checked) and the `--config` path. */
export interface TrainFlags {
  values: Partial<TrainConfig>;
  configFile: string | null;
  help: boolean;
}

/**
 * `--resume` takes an optional directory: `--resume` alone (or followed by another flag) means
 * the newest checkpoint in the output directory.
 */
function normalizeResume(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--resume" && (i + 1 >= args.length || args[i + 1].startsWith("-"))) {
      out.push("--resume=");
    } else out.push(a);
  }
  return out;
}

export function parseTrainFlags(args: readonly string[]): TrainFlags {
  const options: Record<string, { type: "string" | "boolean" }> = {
    config: { type: "string" },
    preset: { type: "string" },
    help: { type: "boolean" },
  };
  for (const [field, kind] of Object.entries(FIELDS)) {
    options[kebab(field)] = { type: kind.t === "bool" ? "boolean" : "string" };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: normalizeResume(args),
      options,
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    throw new Error(`train: ${(err as Error).message} (see --help)`);
  }
  const values: Partial<TrainConfig> = {};
  for (const [flag, raw] of Object.entries(parsed.values)) {
    if (flag === "config" || flag === "help" || raw === undefined) continue;
    if (flag === "preset") {
      values.preset = String(raw);
      continue;
    }
    const field = camel(flag) as keyof typeof FIELDS;
    (values as Record<string, unknown>)[field] = fromFlag(
      field,
      FIELDS[field],
      raw as string | boolean,
    );
  }
  return {
    values,
    configFile: typeof parsed.values.config === "string" ? parsed.values.config : null,
    help: parsed.values.help === true,
  };
}

/** Merges preset < file < flags and validates the result. */
export function resolveTrainConfig(
  flagValues: Partial<TrainConfig>,
  file: { path: string; json: unknown } | null,
): { config: TrainConfig; sources: Record<string, string> } {
  let fileValues: Record<string, unknown> = {};
  if (file) {
    const { path, json } = file;
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      throw new Error(`${path}: expected a JSON object of training settings`);
    }
    for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
      if (key === "preset") {
        if (typeof value !== "string") throw new Error(`${path}: field "preset" must be a string`);
        fileValues.preset = value;
        continue;
      }
      const kind = (FIELDS as Record<string, Kind>)[key];
      if (!kind) {
        const hint = closest(key, [...Object.keys(FIELDS), "preset"]);
        throw new Error(
          `${path}: unknown field ${JSON.stringify(key)}${
            hint ? ` (did you mean "${hint}"?)` : ""
          }`,
        );
      }
      fileValues[key] = fromJson(key, kind, value, path);
    }
  } else fileValues = {};
  const presetName = (flagValues.preset ?? fileValues.preset ?? DEFAULT_PRESET) as string;
  const config = preset(presetName);
  const sources: Record<string, string> = {};
  for (const key of Object.keys(FIELDS)) sources[key] = `preset ${presetName}`;
  for (const [k, v] of Object.entries(fileValues)) {
    (config as unknown as Record<string, unknown>)[k] = v;
    sources[k] = file!.path;
  }
  for (const [k, v] of Object.entries(flagValues)) {
    (config as unknown as Record<string, unknown>)[k] = v;
    sources[k] = k === "preset" ? "--preset" : flagOf(k);
  }
  config.preset = presetName;
  validateTrainConfig(config, sources);
  return { config, sources };
}

/** Cross-field checks, naming where the offending value came from. */
export function validateTrainConfig(c: TrainConfig, sources: Record<string, string> = {}): void {
  const from = (f: string) => sources[f] ?? flagOf(f);
  if (!c.full && c.targetModules.length === 0) {
    throw new Error(
      `targetModules (${from("targetModules")}): LoRA needs at least one target module`,
    );
  }
  if (c.full && c.quantize !== null) {
    throw new Error(
      `--full (set by ${from("full")}) cannot be combined with --quantize (set by ${
        from("quantize")
      }): ` +
        "an int8/int4 base is frozen; train LoRA on it (leave out --full), or fine-tune the " +
        "full-precision model without --quantize",
    );
  }
  if (c.full && c.adapterInit !== null) {
    throw new Error(`--adapter-init (${from("adapterInit")}) cannot be combined with --full`);
  }
  if (!c.dryRun && c.model === null) {
    throw new Error("--model is required: an HF model directory (config.json + weights)");
  }
  // The demo preset builds its own data set from data/configs/demo.json on first use.
  if (!c.dryRun && c.data === null && c.preset !== "demo") {
    throw new Error("--data is required: a data directory built by `deno task data`");
  }
}

function closest(word: string, candidates: string[]): string | null {
  let best: string | null = null, bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

/** The help text: every flag with its preset default. */
export function trainHelp(): string {
  const p = PRESETS[DEFAULT_PRESET];
  const lines = [
    "usage: deno task train [--preset NAME] [--config FILE.json] [flags]",
    "",
    "Settings merge preset < config file < flags. JSON files use the camelCase field names.",
    `presets: ${Object.keys(PRESETS).join(", ")} (default ${DEFAULT_PRESET})`,
    "",
  ];
  for (const [field, kind] of Object.entries(FIELDS)) {
    const value = (p as unknown as Record<string, unknown>)[field];
    const arg = kind.t === "bool" ? "" : kind.t === "resume" ? " [DIR]" : " VALUE";
    lines.push(`  ${(flagOf(field) + arg).padEnd(28)} default ${JSON.stringify(value)}`);
  }
  return lines.join("\n");
}
