/**
 * The "small" ChatGLM config the benchmarks share (hidden 1024, 8 layers, 16 heads, vocab 32000):
 * big enough that matmuls dominate, small enough for a software adapter.
 */
import { type ChatGLMConfig, parseChatGLMConfig } from "../core/mod.ts";

export function smallConfig(maxSequenceLength = 512): ChatGLMConfig {
  return parseChatGLMConfig({
    architectures: ["ChatGLMModel"],
    model_type: "chatglm",
    hidden_size: 1024,
    num_attention_heads: 16,
    num_layers: 8,
    inner_hidden_size: 4096,
    vocab_size: 32000,
    layernorm_epsilon: 1e-5,
    max_sequence_length: maxSequenceLength,
    position_encoding_2d: true,
    bos_token_id: 31004,
    eos_token_id: 31005,
    mask_token_id: 31000,
    gmask_token_id: 31001,
    pad_token_id: 3,
  }, "small config");
}
