/**
 * PEFT LoRA adapter configuration (`adapter_config.json`, README §7): validation, the scaling,
 * target matching, tensor key names, and the JSON peft writes.
 */

import { readJsonFile, writeFileAtomic } from "../../base/mod.ts";

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: string[];
  useRslora: boolean;
  baseModelNameOrPath: string | null;
  taskType: string | null;
  /** The parsed JSON as read, so a save keeps keys we do not interpret. */
  raw: Record<string, unknown>;
}

/**
 * Our own adapter_config.json key: the base the adapter was trained on, `{"bits": 4|8,
 * "group_size": G|null}` for an int8/int4 base (QLoRA-style); the trainer leaves it out for a float
 * base (null is read as float too). peft ≥ 0.14 drops config keys it does not know (its forward
 * compatibility, huggingface/peft#2038); older peft raises a TypeError on any unknown key, so for
 * those the key must be deleted, which is why a float run does not write it. The adapter serves on
 * either base (a LoRA delta does not depend on how the frozen weights are stored); the key only
 * tells which base its training saw.
 */
export const BASE_QUANTIZATION_KEY = "medglm_base_quantization";

export interface BaseQuantization {
  bits: 4 | 8;
  groupSize: number | null;
}

/** The key's JSON value for a base (null: float weights). */
export function baseQuantizationValue(
  spec: BaseQuantization | null,
): { bits: number; group_size: number | null } | null {
  return spec ? { bits: spec.bits, group_size: spec.groupSize } : null;
}

/** The base an adapter records (undefined: not recorded); throws on a malformed value. */
export function baseQuantizationOf(
  config: Pick<LoraConfig, "raw">,
  source = "adapter_config.json",
): BaseQuantization | null | undefined {
  const v = config.raw[BASE_QUANTIZATION_KEY];
  if (v === undefined) return undefined;
  if (v === null) return null;
  const o = v as Record<string, unknown>;
  const g = o?.group_size;
  if (
    typeof v !== "object" || Array.isArray(v) || (o.bits !== 4 && o.bits !== 8) ||
    !(g === null || g === undefined || (Number.isInteger(g) && (g as number) > 0))
  ) {
    throw new Error(
      `${source}: ${BASE_QUANTIZATION_KEY} must be null or {"bits": 4|8, "group_size": G|null} ` +
        `(got ${JSON.stringify(v)})`,
    );
  }
  return { bits: o.bits as 4 | 8, groupSize: (g as number | null | undefined) ?? null };
}

/** `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA. */
export function loraScaling(config: Pick<LoraConfig, "r" | "loraAlpha" | "useRslora">): number {
  return config.useRslora ? config.loraAlpha / Math.sqrt(config.r) : config.loraAlpha / config.r;
}

/** Reads and validates `<dir>/adapter_config.json` (size-capped; errors name the file). */
export async function readLoraConfig(dir: string): Promise<LoraConfig> {
  const path = `${dir.replace(/\/+$/, "")}/adapter_config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a PEFT adapter directory needs adapter_config.json",
  });
  return parseLoraConfig(json, path);
}

const isEmpty = (v: unknown): boolean =>
  v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0) ||
  (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);

const ifSet = (why: string) => (v: unknown): string | null =>
  isEmpty(v)
    ? null
    : `${v === true ? "is true" : `is set (${JSON.stringify(v).slice(0, 80)})`}: ${why}`;

/**
 * peft LoraConfig options (as of peft 0.17–0.20) that change what the adapter computes. Loading
 * such an adapter as plain LoRA would give other outputs than peft's, so each is refused by name.
 * Options that only affect training or initialisation of a fresh adapter (dropout, EVA, LoRA-GA,
 * VeLoRA's backward, runtime settings) are not listed: the saved weights already hold their effect.
 */
const UNSUPPORTED_OPTIONS: { key: string; refuse: (v: unknown) => string | null }[] = [
  { key: "use_dora", refuse: ifSet("DoRA adapters are not supported") },
  {
    key: "alora_invocation_tokens",
    refuse: ifSet(
      "activated LoRA (aLoRA) applies the adapter only from its invocation tokens on; not " +
        "supported (loading it as plain LoRA would change every answer)",
    ),
  },
  { key: "rank_pattern", refuse: ifSet("per-module ranks are not supported") },
  { key: "alpha_pattern", refuse: ifSet("per-module alphas are not supported") },
  {
    key: "layers_to_transform",
    refuse: ifSet("adapters on a subset of layers are not supported"),
  },
  { key: "layers_pattern", refuse: ifSet("not supported") },
  {
    key: "exclude_modules",
    refuse: ifSet("excluding modules from target_modules is not supported"),
  },
  {
    key: "target_parameters",
    refuse: ifSet("LoRA on bare parameters (not linear modules) is not supported"),
  },
  { key: "lora_bias", refuse: ifSet("a bias on lora_B is not supported") },
  {
    key: "trainable_token_indices",
    refuse: ifSet("trainable token embeddings are not supported"),
  },
  { key: "use_bdlora", refuse: ifSet("block-diagonal LoRA (BD-LoRA) is not supported") },
  { key: "use_qalora", refuse: ifSet("QALoRA (pooled inputs) is not supported") },
  {
    key: "layer_replication",
    refuse: ifSet("stacking replicated base layers is not supported"),
  },
  { key: "arrow_config", refuse: ifSet("Arrow routing between adapters is not supported") },
  {
    key: "monteclora_config",
    refuse: ifSet("MonteCLoRA's sampled adapters are not supported"),
  },
  {
    key: "init_lora_weights",
    // PiSSA, OLoRA, CorDA and LoftQ change the base weights when the adapter is made; peft
    // converts such adapters to plain LoRA on save (and then writes `true`) only when asked to.
    refuse: (v) =>
      typeof v === "string" && /^(pissa|olora|corda|loftq)/.test(v)
        ? `is ${JSON.stringify(v)}: this adapter needs the base weights its initialisation ` +
          "changed; save it with peft's path_initial_model_for_weight_conversion to get a plain " +
          "LoRA adapter"
        : null,
  },
];

/** Validates a parsed adapter config; refuses what this project does not implement. */
export function parseLoraConfig(json: unknown, source = "adapter_config.json"): LoraConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object`);
  }
  const c = json as Record<string, unknown>;
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };
  if (c.peft_type !== "LORA") {
    fail(`peft_type ${JSON.stringify(c.peft_type)} is not supported (only "LORA")`);
  }
  for (const option of UNSUPPORTED_OPTIONS) {
    const reason = option.refuse(c[option.key]);
    if (reason) fail(`${option.key} ${reason}`);
  }
  if (c.bias !== undefined && c.bias !== "none") {
    fail(`bias ${JSON.stringify(c.bias)} is not supported (only "none")`);
  }
  if (!isEmpty(c.modules_to_save)) {
    fail(`modules_to_save ${JSON.stringify(c.modules_to_save)} is not supported`);
  }
  if (c.fan_in_fan_out === true) {
    fail("fan_in_fan_out is true: not supported (ChatGLM is [out, in])");
  }
  if (typeof c.target_modules === "string") {
    fail(
      `target_modules is the string ${JSON.stringify(c.target_modules)}, which peft treats as a ` +
        "regular expression; give a list of module names",
    );
  }
  if (
    !Array.isArray(c.target_modules) || c.target_modules.length === 0 ||
    !c.target_modules.every((t) => typeof t === "string" && t.length > 0)
  ) {
    fail(
      `target_modules must be a non-empty list of module names (got ${
        JSON.stringify(c.target_modules)
      })`,
    );
  }
  if (typeof c.r !== "number" || !Number.isInteger(c.r) || c.r < 1) {
    fail(`r must be a positive integer (got ${JSON.stringify(c.r)})`);
  }
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) {
    fail(`lora_alpha must be a number (got ${JSON.stringify(c.lora_alpha)})`);
  }
  const dropout = c.lora_dropout ?? 0;
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) {
    fail(`lora_dropout must be a number in [0, 1) (got ${JSON.stringify(c.lora_dropout)})`);
  }
  if (c.use_rslora !== undefined && typeof c.use_rslora !== "boolean") {
    fail(`use_rslora must be true or false (got ${JSON.stringify(c.use_rslora)})`);
  }
  baseQuantizationOf({ raw: c }, source); // a malformed record is an error, not ignored
  return {
    r: c.r as number,
    loraAlpha: alpha as number,
    loraDropout: dropout as number,
    targetModules: [...c.target_modules as string[]],
    useRslora: c.use_rslora === true,
    baseModelNameOrPath: typeof c.base_model_name_or_path === "string"
      ? c.base_model_name_or_path
      : null,
    taskType: typeof c.task_type === "string" ? c.task_type : null,
    raw: { ...c },
  };
}

/** peft's rule: the full module name equals an entry or ends with "." + entry. */
export function isTargetModule(moduleName: string, targets: readonly string[]): boolean {
  return targets.some((t) => moduleName === t || moduleName.endsWith("." + t));
}

/** File key of a LoRA matrix: `base_model.model.<module>.lora_A.weight`. */
export function loraTensorKey(moduleName: string, which: "A" | "B"): string {
  return `base_model.model.${moduleName}.lora_${which}.weight`;
}

/** Splits a file key back into module name and A/B; null if it is not a LoRA key. */
export function parseLoraTensorKey(key: string): { module: string; which: "A" | "B" } | null {
  const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key);
  return m ? { module: m[1], which: m[2] as "A" | "B" } : null;
}

/**
 * The JSON of `adapter_config.json` as peft 0.3 writes it (`json.dumps(indent=2, sort_keys=True)`):
 * the keys peft 0.3 writes, plus any extra keys the config was read with.
 */
export function loraConfigJson(config: LoraConfig): string {
  const obj: Record<string, unknown> = {
    base_model_name_or_path: config.baseModelNameOrPath,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    lora_alpha: config.loraAlpha,
    lora_dropout: config.loraDropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: config.r,
    target_modules: config.targetModules,
    task_type: config.taskType ?? "CAUSAL_LM",
  };
  for (const [k, v] of Object.entries(config.raw)) if (!(k in obj)) obj[k] = v;
  if (config.useRslora) obj.use_rslora = true;
  return pythonJsonDumps(sortKeysDeep(obj), 2) + "\n";
}

/**
 * Writes `<dir>/adapter_config.json` atomically: the one writer of adapter configs (the adapter
 * save and the demo's install both come here, so the file always has peft's layout).
 */
export async function writeLoraConfig(dir: string, config: LoraConfig): Promise<void> {
  await writeFileAtomic(`${dir.replace(/\/+$/, "")}/adapter_config.json`, loraConfigJson(config));
}

function sortKeysDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeysDeep);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sortKeysDeep(o[k])]));
  }
  return v;
}

/**
 * Python's `json.dumps(v, indent=n)`: JSON.stringify's layout matches it; in addition non-ASCII
 * is escaped (ensure_ascii) and `lora_dropout`, a float in peft, keeps its decimal point (0.0).
 */
function pythonJsonDumps(v: unknown, indent: number): string {
  const text = JSON.stringify(v, null, indent)
    .replace(/("lora_dropout": )(-?\d+)(,?)$/m, "$1$2.0$3");
  return text.replace(
    /[\u007f-\uffff]/g,
    (ch) => "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}
