/**
 * `deno task quantize --model DIR --bits 4|8 --out DIR [--group-size G] [--embeddings]
 * [--format torch|safetensors]`: writes an int8/int4 copy of a full-precision ChatGLM-6B model in
 * the original's layout, or of a Llama-family model in ours (core/quant/write.ts), streaming with
 * a progress bar, atomically.
 */

import { parseArgs } from "node:util";
import { FlagError, intFlag } from "../../base/mod.ts";
import type { QuantSpec } from "../quant/format.ts";
import { describeQuant } from "../models/chatglm/quantized.ts";
import { quantizeCheckpoint } from "../quant/write.ts";

export const QUANTIZE_USAGE = `Usage: deno task quantize --model DIR --bits 4|8 --out DIR [options]

Writes an int8/int4 copy of a full-precision model directory: ChatGLM-6B in the layout of THUDM's
chatglm-6b-int8 / -int4 (loads here without options, and in the original); a Llama-family model
(Qwen2/2.5, Qwen3, Llama 3) with its seven projections quantized, recorded as medglm_quantization
in config.json (core/quant/README.md; loads here without options).

  --model DIR          the full-precision model directory (config.json + weights)
  --bits 4|8           bits per weight of the block linear layers
  --out DIR            where to write (must not exist or be empty)
  --group-size G       one scale per G input columns (a multiple of 8, e.g. 32 or 128) instead of
                       one per row; it must divide every quantized weight's input width
                       (ChatGLM: medglm_quantization_group_size in config.json; the original
                       reads only per-row scales)
  --embeddings         quantize the embeddings (and so the tied output layer) per row too, as the
                       original's quantization_embeddings
  --format NAME        torch (pytorch_model.bin) | safetensors; default torch for ChatGLM-6B,
                       safetensors for the Llama family
  -h, --help           show this help
`;

export interface QuantizeFlags {
  model: string;
  out: string;
  spec: QuantSpec;
  /** undefined: the architecture's default. */
  format?: "torch" | "safetensors";
}

export function parseQuantizeFlags(args: string[]): QuantizeFlags | null {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: "string" },
        bits: { type: "string" },
        out: { type: "string" },
        "group-size": { type: "string" },
        embeddings: { type: "boolean", default: false },
        format: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (err) {
    throw new FlagError((err as Error).message);
  }
  if (values.help) return null;
  if (!values.model) throw new FlagError("--model: required (the full-precision model directory)");
  if (!values.out) throw new FlagError("--out: required (the directory to write)");
  if (values.bits !== "4" && values.bits !== "8") {
    throw new FlagError(`--bits: expected 4 or 8 (got ${JSON.stringify(values.bits ?? null)})`);
  }
  const groupSize = intFlag("group-size", values["group-size"], 8) ?? null;
  if (groupSize !== null && groupSize % 8 !== 0) {
    throw new FlagError(`--group-size: expected a multiple of 8 (got ${groupSize})`);
  }
  if (
    values.format !== undefined && values.format !== "torch" && values.format !== "safetensors"
  ) {
    throw new FlagError(`--format: expected torch or safetensors (got "${values.format}")`);
  }
  return {
    model: values.model,
    out: values.out,
    spec: { bits: Number(values.bits) as 4 | 8, groupSize, embeddings: values.embeddings },
    format: values.format as QuantizeFlags["format"],
  };
}

export async function main(args: string[]): Promise<number> {
  let flags: QuantizeFlags | null;
  try {
    flags = parseQuantizeFlags(args);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    console.error(`error: ${err.message}\n\n${QUANTIZE_USAGE}`);
    return 2;
  }
  if (!flags) {
    console.log(QUANTIZE_USAGE);
    return 0;
  }
  try {
    const path = await quantizeCheckpoint(flags.model, flags.out, flags.spec, {
      format: flags.format,
    });
    console.error(`wrote ${path} (${describeQuant(flags.spec)})`);
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
