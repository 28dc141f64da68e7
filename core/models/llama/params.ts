/**
 * The Llama-family parameter table (spec §3: tests/fixtures/llama-family/README.md): checkpoint
 * names and shapes from the config, and the check a checkpoint must pass before anything is
 * uploaded (missing, extra or mis-shaped tensors are errors; stored rotary `inv_freq` is skipped).
 */

import type { LlamaConfig } from "./config.ts";

export interface ParamSpec {
  name: string;
  shape: number[];
}

/** The linear modules of one layer, by module-name suffix (the LoRA target names). */
export const LLAMA_LINEARS = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
] as const;

/** [out, in] of each linear module of layer `l`, by full module name. */
export function linearShapes(config: LlamaConfig): Map<string, readonly [number, number]> {
  const { hiddenSize: h, intermediateSize: inner, numHeads, numKvHeads, headDim: d } = config;
  const qo = numHeads * d, kvo = numKvHeads * d;
  const shapes: Record<(typeof LLAMA_LINEARS)[number], [number, number]> = {
    "self_attn.q_proj": [qo, h],
    "self_attn.k_proj": [kvo, h],
    "self_attn.v_proj": [kvo, h],
    "self_attn.o_proj": [h, qo],
    "mlp.gate_proj": [inner, h],
    "mlp.up_proj": [inner, h],
    "mlp.down_proj": [h, inner],
  };
  const out = new Map<string, readonly [number, number]>();
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of LLAMA_LINEARS) out.set(`model.layers.${l}.${m}`, shapes[m]);
  }
  return out;
}

/** Whether linear module `suffix` has a bias under this config. */
export function hasBias(config: LlamaConfig, suffix: string): boolean {
  if (suffix === "self_attn.o_proj") return config.oBias;
  if (suffix.startsWith("self_attn.")) return config.qkvBias;
  return config.mlpBias;
}

/** Every parameter the checkpoint must hold, in name order of the table. */
export function llamaParameters(config: LlamaConfig): ParamSpec[] {
  const { hiddenSize: h, vocabSize: V, headDim: d } = config;
  const out: ParamSpec[] = [{ name: "model.embed_tokens.weight", shape: [V, h] }];
  const linears = linearShapes(config);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    for (const suffix of LLAMA_LINEARS) {
      const shape = linears.get(`${p}.${suffix}`)!;
      out.push({ name: `${p}.${suffix}.weight`, shape: [...shape] });
      if (hasBias(config, suffix)) out.push({ name: `${p}.${suffix}.bias`, shape: [shape[0]] });
    }
    if (config.qkNorm) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [d] });
      out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [d] });
    }
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
  }
  out.push({ name: "model.norm.weight", shape: [h] });
  if (!config.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [V, h] });
  return out;
}

/**
 * Stored tensors that are not parameters: rotary tables of older Llama-era files (always
 * recomputed) and, for a tied model, a duplicate `lm_head.weight` (checked equal at load time).
 */
export function isIgnoredTensor(name: string, config: LlamaConfig): boolean {
  if (/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(name)) return true;
  return config.tieWordEmbeddings && name === "lm_head.weight";
}

/** Throws naming every missing, extra and mis-shaped tensor (up to a few of each). */
export function checkParameters(
  config: LlamaConfig,
  stored: readonly { name: string; shape: readonly number[] }[],
  source: string,
): void {
  const expected = new Map(llamaParameters(config).map((p) => [p.name, p.shape]));
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const t of stored) {
    if (isIgnoredTensor(t.name, config)) {
      if (t.name === "lm_head.weight") {
        const want = [config.vocabSize, config.hiddenSize];
        if (t.shape.join(",") !== want.join(",")) {
          problems.push(`lm_head.weight is [${t.shape}], expected [${want}]`);
        }
      }
      continue;
    }
    const want = expected.get(t.name);
    if (!want) {
      problems.push(`unexpected tensor ${t.name} [${t.shape}]`);
      continue;
    }
    seen.add(t.name);
    if (t.shape.join(",") !== want.join(",")) {
      problems.push(`${t.name} is [${t.shape}], expected [${want}]`);
    }
  }
  for (const name of expected.keys()) if (!seen.has(name)) problems.push(`missing tensor ${name}`);
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ");
    const more = problems.length > 8 ? ` (and ${problems.length - 8} more)` : "";
    throw new Error(
      `${source}: the checkpoint does not match config.json (${config.modelType}): ${shown}${more}`,
    );
  }
}
