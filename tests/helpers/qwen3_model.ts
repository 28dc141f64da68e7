/**
 * A Llama-family model directory for tests of the layers above the model: a Qwen3 model with
 * random weights, the real vocabulary (151936 rows, so the real Qwen3 tokenizer fits) and a tiny
 * width (hidden 32, one layer: ~19 MB of f32 in a temp dir). Its answers are noise.
 */
import { writeSafetensors } from "../../core/io/safetensors.ts";
import { readLlamaConfig } from "../../core/models/llama/config.ts";
import { randomLlamaWeights } from "../../core/models/llama/random_init.ts";
import { qwen3TokenizerDir } from "./qwen3_tokenizer.ts";

/** Qwen3's `<|im_end|>` (tokenizer_config's eos) and `<|endoftext|>` (generation_config's too). */
export const IM_END = 151645;
export const ENDOFTEXT = 151643;

/**
 * A Qwen3 model directory in a new temp dir (the caller removes it): tiny width, real
 * vocabulary, random weights, the real tokenizer.
 */
export async function writeQwen3Dir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "medglm-llama-serve-" });
  const config = {
    architectures: ["Qwen3ForCausalLM"],
    attention_bias: false,
    bos_token_id: ENDOFTEXT,
    eos_token_id: IM_END,
    head_dim: 16,
    hidden_act: "silu",
    hidden_size: 32,
    intermediate_size: 64,
    max_position_embeddings: 512,
    model_type: "qwen3",
    num_attention_heads: 2,
    num_hidden_layers: 1,
    num_key_value_heads: 1,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    tie_word_embeddings: true,
    vocab_size: 151936,
  };
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  await Deno.writeTextFile(
    `${dir}/generation_config.json`,
    JSON.stringify({ bos_token_id: ENDOFTEXT, eos_token_id: [IM_END, ENDOFTEXT] }),
  );
  const tok = await qwen3TokenizerDir();
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${tok}/${f}`, `${dir}/${f}`);
  }
  const parsed = await readLlamaConfig(dir);
  const tensors = [...randomLlamaWeights(parsed, 7)].map((t) => ({
    name: t.name,
    dtype: "F32" as const,
    shape: t.shape,
    data: t.data,
  }));
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
  return dir;
}
