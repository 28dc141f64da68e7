/**
 * The `--quantize` flag every command that loads a model takes (infer, serve, bot, eval,
 * export-onnx): `BITS[,group=G][,embeddings]`, e.g. `--quantize 4`, `--quantize 4,group=32`,
 * `--quantize 4,embeddings`. One value, so each CLI adds one flag and passes it through.
 */

import { FlagError } from "../../base/mod.ts";
import type { QuantizeOption } from "../models/chatglm/quantized.ts";

export const QUANTIZE_FLAG_HELP =
  "int8/int4 weights at load: 8 | 4, optionally ,group=G (G a multiple of 8) and ,embeddings";

/** Parses `--quantize`; undefined when absent. */
export function parseQuantizeFlag(raw: string | undefined): QuantizeOption | undefined {
  if (raw === undefined) return undefined;
  const [bitsText, ...rest] = raw.split(",").map((s) => s.trim());
  const fail = (why: string): never => {
    throw new FlagError(
      `--quantize: ${why} (got "${raw}"; expected 8 or 4, optionally ,group=G and ,embeddings)`,
    );
  };
  if (bitsText !== "4" && bitsText !== "8") fail("bits must be 4 or 8");
  let groupSize: number | null = null;
  let embeddings = false;
  for (const part of rest) {
    const g = /^group=(\d+)$/.exec(part);
    if (g) {
      groupSize = Number(g[1]);
      if (groupSize < 8 || groupSize % 8 !== 0) fail("the group size must be a multiple of 8");
    } else if (part === "embeddings") embeddings = true;
    else fail(`unknown option "${part}"`);
  }
  return { bits: Number(bitsText) as 4 | 8, groupSize, embeddings };
}
