/**
 * `deno task make-checkpoint --preset chatglm-6b --layers N --out DIR [--format bin|safetensors]`:
 * a checkpoint with random weights in the real ChatGLM-6B release layout, for trying the real
 * sizes without downloading them (core/models/chatglm/synthetic_checkpoint.ts). Streams shard by
 * shard: memory stays near one tensor (~1 GiB for the f16 embedding at full width).
 */

import { parseArgs } from "node:util";
import { createProgress, FlagError, intFlag, numberFlag } from "../../base/mod.ts";
import {
  PRESETS,
  type SyntheticDtype,
  type SyntheticFormat,
  writeSyntheticCheckpoint,
} from "../models/chatglm/synthetic_checkpoint.ts";

export const MAKE_CHECKPOINT_USAGE = `usage: deno task make-checkpoint --out DIR [options]

Writes random weights in the real ChatGLM-6B layout: config.json, pytorch_model-0000k-of-0000n.bin
shards (or model-0000k-of-0000n.safetensors) with the index, the rotary buffers, and tokenizer files
(the project's small tokenizer, padded so that its control tokens have the real ids 130000 ...;
with --vocab below 130006 it keeps its own ids, and config.json says so).

  --out DIR                 where to write (created; existing files of the same names are replaced)
  --preset NAME             chatglm-6b (default: hidden 4096, FFN 16384, vocab 130528, 32 heads) or tiny
  --layers N                number of blocks (default: the preset's, 28 for chatglm-6b)
  --hidden N, --ffn N, --heads N, --vocab N   override the preset's sizes
  --format bin|safetensors  default bin (torch.save zips, as released)
  --dtype f16|f32|bf16      default f16
  --shards N                default: ~1.68 GB per shard, as released (8 for the full model)
  --seed N                  default 1234 (same seed, same bytes)
  --no-lm-head              leave lm_head.weight out (output layer tied to the embeddings)
  --tokenizer FILE          the ice_text.model to ship (default: models/demo/ice_text.model)
  -h, --help
`;

export interface MakeCheckpointFlags {
  out: string;
  preset: string;
  layers?: number;
  hidden?: number;
  ffn?: number;
  heads?: number;
  vocab?: number;
  format: SyntheticFormat;
  dtype: SyntheticDtype;
  shards?: number;
  seed: number;
  omitLmHead: boolean;
  tokenizer?: string;
}

export function parseMakeCheckpointFlags(args: string[]): MakeCheckpointFlags | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        out: { type: "string" },
        preset: { type: "string", default: "chatglm-6b" },
        layers: { type: "string" },
        hidden: { type: "string" },
        ffn: { type: "string" },
        heads: { type: "string" },
        vocab: { type: "string" },
        format: { type: "string", default: "bin" },
        dtype: { type: "string", default: "f16" },
        shards: { type: "string" },
        seed: { type: "string" },
        "no-lm-head": { type: "boolean", default: false },
        tokenizer: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    throw new FlagError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) return "help";
  if (!v.out) throw new FlagError("--out DIR is required");
  if (!(v.preset! in PRESETS)) {
    throw new FlagError(
      `--preset: expected one of ${Object.keys(PRESETS).join(", ")} (got "${v.preset}")`,
    );
  }
  if (v.format !== "bin" && v.format !== "safetensors") {
    throw new FlagError(`--format: expected bin or safetensors (got "${v.format}")`);
  }
  const dtype = { f16: "F16", f32: "F32", bf16: "BF16" }[v.dtype!] as SyntheticDtype | undefined;
  if (!dtype) throw new FlagError(`--dtype: expected f16, f32 or bf16 (got "${v.dtype}")`);
  return {
    out: v.out,
    preset: v.preset!,
    layers: intFlag("layers", v.layers, 1, 1000),
    hidden: intFlag("hidden", v.hidden, 4, 65536),
    ffn: intFlag("ffn", v.ffn, 1, 262144),
    heads: intFlag("heads", v.heads, 1, 1024),
    vocab: intFlag("vocab", v.vocab, 1, 1 << 22),
    format: v.format,
    dtype,
    shards: intFlag("shards", v.shards, 1, 10000),
    seed: numberFlag("seed", v.seed, Number.isSafeInteger, "an integer") ?? 1234,
    omitLmHead: v["no-lm-head"]!,
    tokenizer: v.tokenizer,
  };
}

async function readTokenizer(path?: string): Promise<Uint8Array> {
  if (path) return await Deno.readFile(path);
  const url = new URL("../../models/demo/ice_text.model", import.meta.url);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: cannot read the default tokenizer (${res.status})`);
  return new Uint8Array(await res.arrayBuffer());
}

export async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseMakeCheckpointFlags(args);
  } catch (err) {
    if (err instanceof FlagError) {
      console.error(`make-checkpoint: ${err.message}\n\n${MAKE_CHECKPOINT_USAGE}`);
      return 2;
    }
    throw err;
  }
  if (flags === "help") {
    console.log(MAKE_CHECKPOINT_USAGE);
    return 0;
  }
  const base = PRESETS[flags.preset];
  const sizes = {
    ...base,
    numLayers: flags.layers ?? base.numLayers,
    hiddenSize: flags.hidden ?? base.hiddenSize,
    innerHiddenSize: flags.ffn ?? base.innerHiddenSize,
    numHeads: flags.heads ?? base.numHeads,
    vocabSize: flags.vocab ?? base.vocabSize,
  };
  try {
    const tokenizerModel = await readTokenizer(flags.tokenizer);
    let bar: ReturnType<typeof createProgress> | undefined;
    const t0 = performance.now();
    const made = await writeSyntheticCheckpoint(flags.out, {
      sizes,
      format: flags.format,
      dtype: flags.dtype,
      shards: flags.shards,
      seed: flags.seed,
      omitLmHead: flags.omitLmHead,
      tokenizerModel,
      onTensor: (_name, bytes, total) => {
        bar ??= createProgress({ label: "writing weights", total, unit: "B" });
        bar.tick(bytes);
      },
    });
    bar?.done();
    const gb = (made.tensorBytes / 1e9).toFixed(2);
    console.error(
      `make-checkpoint: ${flags.out}: ${made.files.length} files, ${gb} GB of tensors in ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    return 0;
  } catch (err) {
    console.error(`make-checkpoint: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
