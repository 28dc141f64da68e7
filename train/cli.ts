/**
 * `deno task train [flags]`: parses the config (preset < --config file < flags); `--help` prints
 * every flag with its default; `--dry-run` prints the memory plan and exits; otherwise runs
 * `train(config)`. Without `--model` it trains the project's demo model (and says so).
 */

import { loadTrainConfig, trainHelp } from "./config.ts";
import { adapterLimits, dryRunReport } from "./dry_run.ts";
import { train } from "./train.ts";

export async function trainMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = await loadTrainConfig(args);
  } catch (err) {
    if (args.includes("--help")) {
      console.log(trainHelp());
      return 0;
    }
    console.error(`train: ${(err as Error).message}`);
    return 2;
  }
  if (parsed.help) {
    console.log(trainHelp());
    return 0;
  }
  let config = parsed.config;
  // No --model and no chosen preset: train the shipped demo model with the demo preset (a short
  // run that fits a CPU), rather than the 6B preset's schedule on a model that is not there.
  if (config.model === null && !args.some((a) => a === "--preset" || a.startsWith("--preset="))) {
    const fromFile = parsed.sources.model !== "preset chatglm-lora-medical";
    if (!fromFile) config = (await loadTrainConfig(["--preset", "demo", ...args])).config;
  }
  if (config.dryRun) {
    try {
      console.log(await dryRunReport(config, await adapterLimits()));
      return 0;
    } catch (err) {
      console.error(`train --dry-run: ${(err as Error).message}`);
      return 1;
    }
  }
  try {
    const result = await train(config);
    return result.interrupted ? 130 : 0;
  } catch (err) {
    console.error(`train: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await trainMain(Deno.args));
