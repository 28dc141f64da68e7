/**
 * `--dry-run` of `deno task infer` and `deno task serve`: prints the model's memory plan for f16,
 * int8 and int4 weights from its config.json alone (core's `dryRunPlans`: no weights, tokenizer
 * or GPU needed) and exits.
 */

import { DEMO_MODEL_DIR, type DryRunOptions, dryRunPlans } from "../core/mod.ts";

export async function printDryRun(
  model: string | undefined,
  options: DryRunOptions,
  io: { out: (s: string) => void; err: (s: string) => void },
): Promise<number> {
  try {
    io.out(`${(await dryRunPlans(model ?? DEMO_MODEL_DIR, options)).text}\n`);
    return 0;
  } catch (err) {
    io.err(`error: --dry-run: ${(err as Error).message}\n`);
    return 1;
  }
}
