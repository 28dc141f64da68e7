/**
 * `deno task infer --prompt-ids 1,2,3`: generation from token ids, without a tokenizer or the
 * engine — for model directories that have none (the tiny Llama-family test models) and for
 * checking a model by ids. Any architecture (`loadModel` of core/models/load.ts picks it from
 * config.json); greedy decoding with the KV cache (argmax, first index on ties); stops at an end
 * id of the model or after --max-new-tokens (default 32). Prints the new ids, space-separated.
 */

import { isLlamaModel, loadModel } from "../core/mod.ts";
import type { InferFlags } from "./infer_flags.ts";

export interface IdsIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

export async function runPromptIds(flags: InferFlags, ids: number[], io: IdsIo): Promise<number> {
  if (!flags.model) {
    io.err("error: --prompt-ids needs --model DIR\n");
    return 2;
  }
  let model;
  try {
    model = await loadModel(flags.model, {
      dtype: flags.dtype,
      quantize: flags.quantize,
      adapter: flags.adapter,
      log: (line) => io.err(`${line}\n`),
      progressBar: false,
    });
  } catch (err) {
    io.err(`error: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const eos = new Set(isLlamaModel(model) ? model.config.eosTokenIds : [model.config.eosTokenId]);
    const maxNew = flags.maxNewTokens ?? 32;
    const cache = model.createCache(1, Math.min(model.maxContext, ids.length + maxNew));
    try {
      let logits = await model.prefill([ids], cache);
      const out: number[] = [];
      for (let t = 0; t < maxNew; t++) {
        let best = 0;
        for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        out.push(best);
        if (eos.has(best) || t + 1 === maxNew || ids.length + out.length >= cache.capacity) break;
        logits = await model.decodeStep([best], cache);
      }
      io.out(`${out.join(" ")}\n`);
      return 0;
    } finally {
      cache.free();
    }
  } catch (err) {
    io.err(`error: ${(err as Error).message}\n`);
    return 1;
  } finally {
    model.dispose();
  }
}
