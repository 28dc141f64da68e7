/**
 * `deno task plot RUN_DIR [--out DIR]`: draws the loss curve of a run (ours or an HF Trainer run)
 * from `RUN_DIR/trainer_state.json`, or the newest checkpoint's when the run has none at its top,
 * or from a checkpoint directory itself; writes `loss.svg` and `loss.png` into RUN_DIR (or --out).
 */

import { parseArgs } from "node:util";
import { pathExists } from "../base/mod.ts";
import { findLatestCheckpoint } from "./checkpoint.ts";
import { writeLossPlots } from "./plot/loss_plot.ts";
import { readTrainerState } from "./trainer_state.ts";

/** Finds the trainer state of a run directory (see the module comment). */
export async function findTrainerState(runDir: string): Promise<string> {
  const root = runDir.replace(/\/+$/, "");
  if (await pathExists(`${root}/trainer_state.json`)) return `${root}/trainer_state.json`;
  const latest = await findLatestCheckpoint(root);
  if (latest) return `${latest}/trainer_state.json`;
  throw new Error(
    `${root}: no trainer_state.json (neither at the top nor in a checkpoint-N folder)`,
  );
}

export async function plotMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { out: { type: "string" }, title: { type: "string" }, help: { type: "boolean" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    console.error(`plot: ${(err as Error).message}`);
    return 2;
  }
  if (parsed.values.help || parsed.positionals.length !== 1) {
    console.error("usage: deno task plot RUN_DIR [--out DIR] [--title TEXT]");
    return parsed.values.help ? 0 : 2;
  }
  const runDir = parsed.positionals[0];
  try {
    const statePath = await findTrainerState(runDir);
    const state = await readTrainerState(statePath);
    const out = parsed.values.out ?? runDir;
    await Deno.mkdir(out, { recursive: true });
    const title = parsed.values.title ?? `loss: ${runDir.replace(/\/+$/, "").split("/").pop()}`;
    const files = await writeLossPlots(out, state, title);
    console.log(`${files.svg}\n${files.png}`);
    return 0;
  } catch (err) {
    console.error(`plot: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await plotMain(Deno.args));
