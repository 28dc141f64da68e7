/**
 * The parameter table of ChatGLM-6B (v1): checkpoint names and shapes (README §2), derived from
 * the config, and the check that a checkpoint holds exactly these tensors.
 */

import type { ChatGLMConfig } from "./config.ts";

/** The embedding table, also the output layer when `lm_head.weight` is absent (tied). */
export const WORD_EMBEDDINGS = "transformer.word_embeddings.weight";
export const LM_HEAD = "lm_head.weight";

export interface ParamSpec {
  name: string;
  shape: number[];
}

/** The four linear modules of a block, in the order peft targets name them. */
export const LINEAR_MODULES = [
  "attention.query_key_value",
  "attention.dense",
  "mlp.dense_h_to_4h",
  "mlp.dense_4h_to_h",
] as const;
export type LinearModule = typeof LINEAR_MODULES[number];

/** Full module name of a block's linear layer, e.g. `transformer.layers.0.attention.dense`. */
export function linearModuleName(layer: number, module: LinearModule): string {
  return `transformer.layers.${layer}.${module}`;
}

/** [out, in] of a block's linear layer. */
export function linearShape(config: ChatGLMConfig, module: LinearModule): [number, number] {
  const h = config.hiddenSize, inner = config.innerHiddenSize;
  switch (module) {
    case "attention.query_key_value":
      return [3 * h, h];
    case "attention.dense":
      return [h, h];
    case "mlp.dense_h_to_4h":
      return [inner, h];
    case "mlp.dense_4h_to_h":
      return [h, inner];
  }
}

/** Every parameter the model loads, in checkpoint order (embedding, layers, final norm, head). */
export function parameterTable(config: ChatGLMConfig): ParamSpec[] {
  const h = config.hiddenSize;
  const out: ParamSpec[] = [{
    name: "transformer.word_embeddings.weight",
    shape: [config.vocabSize, h],
  }];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `transformer.layers.${l}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [h] });
    out.push({ name: `${p}input_layernorm.bias`, shape: [h] });
    for (const m of LINEAR_MODULES) {
      if (m === "mlp.dense_h_to_4h") {
        out.push({ name: `${p}post_attention_layernorm.weight`, shape: [h] });
        out.push({ name: `${p}post_attention_layernorm.bias`, shape: [h] });
      }
      const [o, i] = linearShape(config, m);
      out.push({ name: `${p}${m}.weight`, shape: [o, i] });
      out.push({ name: `${p}${m}.bias`, shape: [o] });
    }
  }
  out.push({ name: "transformer.final_layernorm.weight", shape: [h] });
  out.push({ name: "transformer.final_layernorm.bias", shape: [h] });
  out.push({ name: "lm_head.weight", shape: [config.vocabSize, h] });
  return out;
}

/**
 * The stored rotary `inv_freq` buffers: the original never loads them (it computes its own,
 * float16-rounded table), so they are skipped, never required.
 */
export function isIgnoredTensor(name: string, config: ChatGLMConfig): boolean {
  const m = /^transformer\.layers\.(\d+)\.attention\.rotary_emb\.inv_freq$/.exec(name);
  return m !== null && Number(m[1]) < config.numLayers;
}

/**
 * Checks a checkpoint's tensor list against the table: every parameter present with its shape,
 * nothing else (except the ignored `inv_freq` buffers). `source` names the checkpoint in errors.
 *
 * `lm_head.weight` may be absent: the original ties the output layer to the embeddings, and the
 * pre-quantized releases store only the embeddings. Then `tiedHead` is true, unless config.json
 * sets `tie_word_embeddings` to false, which makes the absence an error.
 */
export function checkParameters(
  config: ChatGLMConfig,
  tensors: Iterable<{ name: string; shape: readonly number[] }>,
  source: string,
): { tiedHead: boolean } {
  const expected = new Map(parameterTable(config).map((p) => [p.name, p.shape]));
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const t of tensors) {
    if (isIgnoredTensor(t.name, config)) continue;
    const shape = expected.get(t.name);
    if (!shape) {
      problems.push(`unexpected tensor ${t.name} ${JSON.stringify(t.shape)}`);
      continue;
    }
    seen.add(t.name);
    if (shape.length !== t.shape.length || shape.some((v, i) => v !== t.shape[i])) {
      problems.push(
        `${t.name} has shape ${JSON.stringify(t.shape)}, config.json implies ${
          JSON.stringify(shape)
        }`,
      );
    }
  }
  const tiedHead = !seen.has(LM_HEAD) && config.tieWordEmbeddings !== false;
  for (const name of expected.keys()) {
    if (seen.has(name) || (name === LM_HEAD && tiedHead)) continue;
    problems.push(
      name === LM_HEAD
        ? `missing tensor ${LM_HEAD} (config.json sets tie_word_embeddings to false, so the ` +
          `output layer cannot reuse ${WORD_EMBEDDINGS})`
        : `missing tensor ${name}`,
    );
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ");
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : "";
    throw new Error(`${source}: weights do not match config.json: ${shown}${more}`);
  }
  return { tiedHead };
}

/** Every linear module a LoRA adapter may target, with its [out, in] shape. */
export function linearModules(config: ChatGLMConfig): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of LINEAR_MODULES) out.set(linearModuleName(l, m), linearShape(config, m));
  }
  return out;
}
