/**
 * `deno task train [flags]`: parses the config (preset < --config file < flags); `--help` prints
 * every flag with its default; `--dry-run` prints the memory plan and exits; otherwise runs
 * `train(config)`. Without `--model` it trains the project's demo model (and says so).
 */

import { loadTrainConfig, trainHelp } from "./config.ts";
import { adapterLimits, dryRunReport } from "./dry_run.ts";
import { train } from "./train.ts";

/**
 * With no model named anywhere (flag, preset or config file) the shipped demo model is trained
 * with the demo preset (a short run that fits a CPU), rather than the 6B preset's schedule on a
 * model that is not there.
 */
export function withDemoDefault(args: string[]): string[] {
  const names = (flag: string) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
  return names("--model") || names("--preset") || names("--config")
    ? args
    : ["--preset", "demo", ...args];
}

export async function trainMain(argv: string[]): Promise<number> {
  const args = withDemoDefault(argv);
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
  const config = parsed.config;
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
