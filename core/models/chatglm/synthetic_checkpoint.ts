/**
 * A ChatGLM-6B checkpoint with random weights in the real release layout, written without
 * downloading anything: `config.json` (the real keys and key order), `pytorch_model-0000k-of-0000n
 * .bin` torch zips (or `model-0000k-of-0000n.safetensors`) with their index, the rotary `inv_freq`
 * buffers, and tokenizer files. Shards are written one after another and each tensor is made when
 * the writer reaches it, so making a 12.5 GB checkpoint needs memory for about one tensor.
 *
 * Values: weight matrices and the embedding normal(0, std) (drawn from a 65536-entry table of
 * normal quantiles so that gigabytes are made in seconds), linear biases 0, LayerNorm weights 1 and
 * biases 0. The same seed gives the same bytes.
 */

import { createRng, writeFileAtomic, writeJsonAtomic } from "../../../base/mod.ts";
import { type Dtype, f32ToBytes } from "../../io/dtype.ts";
import { writeSafetensors } from "../../io/safetensors.ts";
import { writeTorchStateDict } from "../../io/torch_writer.ts";
import { parseChatGLMConfig } from "./config.ts";
import { parameterTable } from "./params.ts";

export type SyntheticFormat = "bin" | "safetensors";
export type SyntheticDtype = "F16" | "F32" | "BF16";

/** Sizes of a preset; everything else comes from the real config. */
export interface ChatGLMSizes {
  hiddenSize: number;
  numHeads: number;
  innerHiddenSize: number;
  vocabSize: number;
  numLayers: number;
  maxSequenceLength: number;
}

/** ChatGLM-6B (v1, final revision) as released: 28 layers, 12.5 GB in f16. */
export const CHATGLM_6B: ChatGLMSizes = {
  hiddenSize: 4096,
  numHeads: 32,
  innerHiddenSize: 16384,
  vocabSize: 130528,
  numLayers: 28,
  maxSequenceLength: 2048,
};

export const PRESETS: Record<string, ChatGLMSizes> = {
  "chatglm-6b": CHATGLM_6B,
  // The test fixture's width (hidden 64, 4 heads, FFN 256, vocab 130528 keeps the real ids).
  "tiny": {
    hiddenSize: 64,
    numHeads: 4,
    innerHiddenSize: 256,
    vocabSize: 130528,
    numLayers: 2,
    maxSequenceLength: 256,
  },
};

/** The real checkpoint's shard size (13.4 GB of tensors in 8 shards). */
export const REAL_SHARD_BYTES = 1_680_000_000;

export interface SyntheticCheckpointOptions {
  sizes: ChatGLMSizes;
  format?: SyntheticFormat;
  dtype?: SyntheticDtype;
  /** Number of shards (default: as many ~1.68 GB shards as the real release uses per byte). */
  shards?: number;
  seed?: number;
  /** Standard deviation of the weight matrices (default 0.02, as HF initialises them). */
  std?: number;
  /** Leave `lm_head.weight` out (a checkpoint whose output layer is tied to the embeddings). */
  omitLmHead?: boolean;
  /**
   * A SentencePiece `ice_text.model` to ship (bytes). Padded with filler pieces so that its
   * control tokens get the real ids (130000 …) when it is smaller than the real one (and the
   * vocabulary holds those ids; a smaller vocabulary keeps the small tokenizer's ids).
   */
  tokenizerModel?: Uint8Array;
  /** Called after each tensor is written (bytes of that tensor, bytes in all). */
  onTensor?: (name: string, bytes: number, totalBytes: number) => void;
}

export interface SyntheticCheckpoint {
  dir: string;
  files: string[];
  tensorBytes: number;
}

/** The project's small tokenizer's special ids (for a vocabulary too small for the real ones). */
const SMALL_TOKENIZER_IDS = { mask: 1656, gmask: 1657, bos: 1660, eos: 1661 };

/** Whether a vocabulary holds the real tokenizer's ids (`<eop>` = 130005). */
export function hasRealTokenIds(sizes: ChatGLMSizes): boolean {
  return sizes.vocabSize > 130005;
}

/**
 * The real `config.json` for these sizes, keys in the release's order. A vocabulary too small for
 * the real special ids gets the project's small tokenizer's ids instead.
 */
export function chatglmConfigJson(
  sizes: ChatGLMSizes,
  torchDtype: string,
): Record<string, unknown> {
  const real = hasRealTokenIds(sizes);
  if (!real && sizes.vocabSize < 2000) {
    throw new Error(`vocab_size ${sizes.vocabSize} is below the small tokenizer's 2000 pieces`);
  }
  return {
    _name_or_path: "THUDM/chatglm-6b",
    architectures: ["ChatGLMModel"],
    auto_map: {
      AutoConfig: "configuration_chatglm.ChatGLMConfig",
      AutoModel: "modeling_chatglm.ChatGLMForConditionalGeneration",
      AutoModelForSeq2SeqLM: "modeling_chatglm.ChatGLMForConditionalGeneration",
    },
    bos_token_id: real ? 130004 : SMALL_TOKENIZER_IDS.bos,
    eos_token_id: real ? 130005 : SMALL_TOKENIZER_IDS.eos,
    mask_token_id: real ? 130000 : SMALL_TOKENIZER_IDS.mask,
    gmask_token_id: real ? 130001 : SMALL_TOKENIZER_IDS.gmask,
    pad_token_id: 3,
    hidden_size: sizes.hiddenSize,
    inner_hidden_size: sizes.innerHiddenSize,
    layernorm_epsilon: 1e-5,
    max_sequence_length: sizes.maxSequenceLength,
    model_type: "chatglm",
    num_attention_heads: sizes.numHeads,
    num_layers: sizes.numLayers,
    position_encoding_2d: true,
    torch_dtype: torchDtype,
    transformers_version: "4.27.1",
    use_cache: true,
    vocab_size: sizes.vocabSize,
  };
}

const TORCH_DTYPE: Record<SyntheticDtype, string> = {
  F16: "float16",
  F32: "float32",
  BF16: "bfloat16",
};

interface PlannedTensor {
  name: string;
  shape: number[];
  kind: "matrix" | "zeros" | "ones" | "inv_freq";
  bytes: number;
}

/** Every stored tensor in the release's order, with the rotary buffers after each attention. */
function plannedTensors(sizes: ChatGLMSizes, dtype: SyntheticDtype, omitLmHead: boolean) {
  const config = parseChatGLMConfig(chatglmConfigJson(sizes, "float16"), "preset");
  const el = dtype === "F32" ? 4 : 2;
  const out: PlannedTensor[] = [];
  const r = config.headDim / 2;
  for (const p of parameterTable(config)) {
    if (omitLmHead && p.name === "lm_head.weight") continue;
    const kind = p.shape.length === 2
      ? "matrix"
      : p.name.endsWith("layernorm.weight")
      ? "ones"
      : "zeros";
    out.push({ ...p, kind, bytes: p.shape.reduce((a, b) => a * b, 1) * el });
    const m = /^transformer\.layers\.(\d+)\.attention\.query_key_value\.bias$/.exec(p.name);
    if (m) {
      out.push({
        name: `transformer.layers.${m[1]}.attention.rotary_emb.inv_freq`,
        shape: [r / 2],
        kind: "inv_freq",
        bytes: (r / 2) * el,
      });
    }
  }
  return out;
}

/** Splits tensors into `n` consecutive groups of about equal bytes. */
function splitShards(tensors: PlannedTensor[], n: number): PlannedTensor[][] {
  const total = tensors.reduce((a, t) => a + t.bytes, 0);
  const shards: PlannedTensor[][] = [[]];
  let acc = 0;
  for (const t of tensors) {
    const cur = shards[shards.length - 1];
    // Start the next shard once this one holds its share (never leave a shard empty).
    if (cur.length > 0 && shards.length < n && acc + t.bytes / 2 > (total * shards.length) / n) {
      shards.push([]);
    }
    shards[shards.length - 1].push(t);
    acc += t.bytes;
  }
  return shards;
}

/** Random element bits from a table of normal quantiles (fast: one table lookup per element). */
class NormalSource {
  readonly #table16: Uint16Array;
  readonly #table32: Float32Array;
  readonly #rng;
  constructor(seed: number, std: number, readonly dtype: SyntheticDtype) {
    this.#rng = createRng(seed);
    const rng = createRng(seed ^ 0x5eed);
    const values = new Float32Array(65536);
    for (let i = 0; i < values.length; i++) {
      const u = 1 - rng.next(), v = rng.next();
      values[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
    this.#table32 = values;
    this.#table16 = dtype === "F32"
      ? new Uint16Array(0)
      : new Uint16Array(f32ToBytes(values, dtype).buffer);
  }
  fill(numel: number): Uint8Array {
    const rng = this.#rng;
    if (this.dtype === "F32") {
      const out = new Float32Array(numel);
      const t = this.#table32;
      for (let i = 0; i < numel; i += 2) {
        const r = rng.nextU32();
        out[i] = t[r & 0xffff];
        if (i + 1 < numel) out[i + 1] = t[r >>> 16];
      }
      return new Uint8Array(out.buffer);
    }
    const out = new Uint16Array(numel);
    const t = this.#table16;
    for (let i = 0; i < numel; i += 2) {
      const r = rng.nextU32();
      out[i] = t[r & 0xffff];
      if (i + 1 < numel) out[i + 1] = t[r >>> 16];
    }
    return new Uint8Array(out.buffer);
  }
}

function constantBytes(numel: number, value: number, dtype: SyntheticDtype): Uint8Array {
  return f32ToBytes(new Float32Array(numel).fill(value), dtype);
}

function invFreqBytes(n: number, dtype: SyntheticDtype): Uint8Array {
  const v = new Float32Array(n);
  // r = 2n rotary dims: 1 / 10000^(2i / r) (the original's buffer, never loaded by the model).
  for (let i = 0; i < n; i++) v[i] = 1 / Math.pow(10000, (2 * i) / (2 * n));
  return f32ToBytes(v, dtype);
}

function pad5(n: number): string {
  return String(n).padStart(5, "0");
}

/**
 * Writes the checkpoint into `dir` (created if missing). Files are written atomically; the index
 * and config come last, so an interrupted run never leaves a directory that looks complete.
 */
export async function writeSyntheticCheckpoint(
  dir: string,
  options: SyntheticCheckpointOptions,
): Promise<SyntheticCheckpoint> {
  const format = options.format ?? "bin";
  const dtype = options.dtype ?? "F16";
  const sizes = options.sizes;
  const planned = plannedTensors(sizes, dtype, options.omitLmHead ?? false);
  const totalBytes = planned.reduce((a, t) => a + t.bytes, 0);
  const n = options.shards ?? Math.max(1, Math.round(totalBytes / REAL_SHARD_BYTES));
  if (!Number.isInteger(n) || n < 1 || n > planned.length) {
    throw new Error(`shards must be an integer from 1 to ${planned.length} (got ${n})`);
  }
  const groups = splitShards(planned, n);
  await Deno.mkdir(dir, { recursive: true });
  const source = new NormalSource(options.seed ?? 1234, options.std ?? 0.02, dtype);
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  const ext = format === "bin" ? "bin" : "safetensors";
  const stem = format === "bin" ? "pytorch_model" : "model";
  for (let s = 0; s < groups.length; s++) {
    const file = groups.length === 1
      ? `${stem}.${ext}`
      : `${stem}-${pad5(s + 1)}-of-${pad5(groups.length)}.${ext}`;
    const make = (t: PlannedTensor) => () => {
      const numel = t.shape.reduce((a, b) => a * b, 1);
      const bytes = t.kind === "matrix"
        ? source.fill(numel)
        : t.kind === "ones"
        ? constantBytes(numel, 1, dtype)
        : t.kind === "zeros"
        ? constantBytes(numel, 0, dtype)
        : invFreqBytes(numel, dtype);
      options.onTensor?.(t.name, t.bytes, totalBytes);
      return bytes;
    };
    const path = `${dir}/${file}`;
    if (format === "bin") {
      await writeTorchStateDict(
        path,
        groups[s].map((t) => ({
          name: t.name,
          shape: t.shape,
          dtype: dtype as Dtype,
          data: make(t),
        })),
      );
    } else {
      await writeSafetensors(
        path,
        groups[s].map((t) => ({
          name: t.name,
          shape: t.shape,
          dtype: dtype as Dtype,
          data: make(t),
        })),
        { format: "pt" },
      );
    }
    files.push(file);
    for (const t of groups[s]) weightMap[t.name] = file;
  }
  if (groups.length > 1) {
    const sorted: Record<string, string> = {};
    for (const k of Object.keys(weightMap).sort()) sorted[k] = weightMap[k];
    const index = `${stem}.${ext}.index.json`;
    await writeJsonAtomic(`${dir}/${index}`, {
      metadata: { total_size: totalBytes },
      weight_map: sorted,
    });
    files.push(index);
  }
  if (options.tokenizerModel) {
    await writeFileAtomic(
      `${dir}/ice_text.model`,
      hasRealTokenIds(sizes)
        ? padSentencePieceModel(options.tokenizerModel, REAL_CONTROL_ID)
        : options.tokenizerModel,
    );
    await writeJsonAtomic(`${dir}/tokenizer_config.json`, TOKENIZER_CONFIG);
    files.push("ice_text.model", "tokenizer_config.json");
  }
  await writeJsonAtomic(`${dir}/config.json`, chatglmConfigJson(sizes, TORCH_DTYPE[dtype]));
  files.push("config.json");
  return { dir, files, tensorBytes: totalBytes };
}

/** The real tokenizer's first control token (`[MASK]` = 130000). */
export const REAL_CONTROL_ID = 130000;

const TOKENIZER_CONFIG = {
  name_or_path: "THUDM/chatglm-6b",
  bos_token: "<sop>",
  eos_token: "<eop>",
  end_token: "</s>",
  gmask_token: "[gMASK]",
  mask_token: "[MASK]",
  pad_token: "<pad>",
  unk_token: "<unk>",
  remove_space: false,
  do_lower_case: false,
  tokenizer_class: "ChatGLMTokenizer",
  num_image_tokens: 0,
  auto_map: { AutoTokenizer: ["tokenization_chatglm.ChatGLMTokenizer", null] },
};

// --- SentencePiece padding ----------------------------------------------------------------------

const PIECE_CONTROL = 3;
/** float32 -1e9, little-endian: lower than any real piece's score. */
const FILLER_SCORE = [...new Uint8Array(new Float32Array([-1e9]).buffer)];

function readVarint(b: Uint8Array, p: number): [number, number] {
  let v = 0, mul = 1;
  for (;;) {
    if (p >= b.length) throw new Error("truncated varint in the SentencePiece model");
    const x = b[p++];
    v += (x & 0x7f) * mul;
    if (x < 0x80) return [v, p];
    mul *= 128;
  }
}

function writeVarint(v: number, out: number[]): void {
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** The type field (3) of one serialized SentencePiece piece (default NORMAL = 1). */
function pieceType(piece: Uint8Array): number {
  let p = 0, type = 1;
  while (p < piece.length) {
    const [tag, q] = readVarint(piece, p);
    p = q;
    const wire = tag & 7;
    if (wire === 0) {
      const [v, r] = readVarint(piece, p);
      if (tag >>> 3 === 3) type = v;
      p = r;
    } else if (wire === 2) {
      const [len, r] = readVarint(piece, p);
      p = r + len;
    } else if (wire === 5) p += 4;
    else if (wire === 1) p += 8;
    else throw new Error(`piece field wire type ${wire}`);
  }
  return type;
}

/**
 * Inserts filler pieces (`<pad_N>`, type NORMAL with a score no merge ever reaches, so text is
 * never segmented into them) before the model's first control piece so that it lands on
 * `controlId`, as in the real tokenizer whose 130000 text pieces come first. They decode as
 * their own text, so a random model's answer shows which ids it picked. A model already that
 * large is returned unchanged.
 */
export function padSentencePieceModel(model: Uint8Array, controlId: number): Uint8Array {
  const fields: { field: number; start: number; end: number }[] = [];
  let p = 0;
  while (p < model.length) {
    const start = p;
    const [tag, q] = readVarint(model, p);
    p = q;
    const wire = tag & 7;
    if (wire === 2) {
      const [len, r] = readVarint(model, p);
      p = r + len;
    } else if (wire === 0) p = readVarint(model, p)[1];
    else if (wire === 5) p += 4;
    else if (wire === 1) p += 8;
    else throw new Error(`not a SentencePiece model (wire type ${wire})`);
    if (p > model.length) throw new Error("truncated SentencePiece model");
    fields.push({ field: tag >>> 3, start, end: p });
  }
  let firstControl = -1, pieceIndex = 0;
  for (const f of fields) {
    if (f.field !== 1) continue;
    const [, q] = readVarint(model, f.start);
    const [, bodyStart] = readVarint(model, q);
    if (firstControl < 0 && pieceType(model.subarray(bodyStart, f.end)) === PIECE_CONTROL) {
      // <unk>, <s>, </s> are control pieces too at the very start; the block to move is the
      // one after the text pieces.
      if (pieceIndex > 4) firstControl = pieceIndex;
    }
    pieceIndex++;
  }
  if (firstControl < 0 || firstControl >= controlId) return model;
  const padding: number[] = [];
  const enc = new TextEncoder();
  for (let i = 0; i < controlId - firstControl; i++) {
    const text = enc.encode(`<pad_${i}>`);
    const body: number[] = [0x0a];
    writeVarint(text.length, body);
    body.push(...text);
    body.push(0x15, ...FILLER_SCORE); // type NORMAL is the default: no type field

    padding.push(0x0a);
    writeVarint(body.length, padding);
    padding.push(...body);
  }
  const pad = new Uint8Array(padding);
  const out = new Uint8Array(model.length + pad.length);
  let o = 0;
  pieceIndex = 0;
  for (const f of fields) {
    if (f.field === 1 && pieceIndex++ === firstControl) {
      out.set(pad, o);
      o += pad.length;
    }
    out.set(model.subarray(f.start, f.end), o);
    o += f.end - f.start;
  }
  return out;
}
