/**
 * The one tokenizer interface the rest of the project programs against: what the engine, the
 * evaluation, the trainer and the bot need of a tokenizer, whatever its kind. ChatGLM-6B's
 * SentencePiece tokenizer (`kind: "chatglm"`) and the byte-level BPE of a Hugging Face
 * `tokenizer.json` (`kind: "bytelevel-bpe"`, Qwen2/2.5, Qwen3, Llama 3) both implement it;
 * kind-specific calls stay on their own types (narrow on `kind`).
 */

export type TokenizerKind = "chatglm" | "bytelevel-bpe";

export interface TokenizerEncodeOptions {
  /**
   * Add the model's own framing tokens (default true): ChatGLM's `[gMASK]` `<sop>` after the text,
   * a post-processor's BOS (Llama 3) before it. False: the text's ids only.
   */
  special?: boolean;
}

export interface TokenizerDecodeOptions {
  /**
   * Drop special tokens (byte-level: added tokens marked special; default false, as transformers'
   * `decode`). ChatGLM's decode always drops its pads and control pieces and ignores this.
   */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  readonly kind: TokenizerKind;
  encode(text: string, options?: TokenizerEncodeOptions): number[];
  decode(ids: readonly number[], options?: TokenizerDecodeOptions): string;
  /**
   * Ids `0 .. vocabSize − 1` are tokens; a model whose embedding has more rows never gets the
   * rest sampled (they decode to nothing: ChatGLM's and Qwen's padded vocabularies).
   */
  readonly vocabSize: number;
  /** Generation ends on any of these (ChatGLM `<eop>`; Qwen `<|im_end|>` and `<|endoftext|>`). */
  readonly endOfTurnIds: readonly number[];
  /** End-of-text / end-of-turn token of tokenizer_config (`eos_token`), or null. */
  readonly eosId: number | null;
  /** Padding id (left-padded batches, right-padded training batches), or null. */
  readonly padId: number | null;
  /** Beginning-of-sequence id (ChatGLM `<sop>`, Llama 3 `<|begin_of_text|>`), or null. */
  readonly bosId: number | null;
  /**
   * The raw UTF-8 bytes `id` stands for when its text is made of bytes that may split a character
   * (every byte-level token; ChatGLM's byte-fallback pieces `<0xE5>`); null when the id decodes to
   * whole characters or to nothing (ChatGLM's word pieces, added and special tokens). The engine
   * uses it to hold back and mask unfinished UTF-8.
   */
  tokenBytes(id: number): Uint8Array | null;
  /** The model's Jinja chat template (tokenizer_config.json `chat_template`), or null. */
  readonly chatTemplate: string | null;
  /** Token strings a chat template may print (`bos_token`, `eos_token`), or null. */
  readonly specialTokenText: { readonly bos: string | null; readonly eos: string | null };
  /** The file it was read from (for messages). */
  readonly source: string;
}
