/**
 * `deno task data`: builds a data set from a config, or prints the summary of an existing build.
 *
 *   deno task data [--config data/configs/default.json] [--out DIR] [--download] [--quiet]
 *   deno task data --stats out/data/medical
 */

import { parseArgs } from "node:util";
import { buildDataset } from "./build/pipeline.ts";
import { loadConfig, TOKEN_PROMPT_FORMATS, type TokenPromptFormat } from "./build/config.ts";
import { formatBuildSummary, type Manifest, readManifest } from "./build/manifest.ts";
import { intFlag, numberFlag } from "../base/mod.ts";

const HELP = `deno task data — build the instruction data set (JSONL + token shards + manifest)

usage:
  deno task data [options]
  deno task data --stats DIR

options:
  -c, --config FILE     build config (JSON); default data/configs/default.json
  -o, --out DIR         output folder; default out/data/<config name>
      --download        fetch the sources' "download" URLs into the source root first
      --strict          strict JSON: skip a file with a trailing comma instead of repairing it
      --tokenizer DIR   override the config's tokenizer folder (relative to the current folder)
      --no-tokens       skip the token stage (JSONL shards and manifest only)
      --prompt-format F instruction (the seed's template, ChatGLM tokenizer; default) or
                        chat-template (the tokenizer's own chat template: Qwen, Llama 3)
      --seed N          override the config's seed
      --valid-ratio R   override the validation share (e.g. 0.02)
      --warnings N      print at most N warnings per action (default 20; all are counted)
      --no-progress     no progress bars
  -q, --quiet           no progress bars, no warnings; only the summary
      --stats DIR       print the summary of an existing build (its manifest.json) and exit
  -h, --help            this help

Paths inside the config are relative to the config file. Outputs: train-NNNNN.jsonl,
valid-NNNNN.jsonl, train-NNNNN.bin / valid-NNNNN.bin (with "tokens" in the config), manifest.json.`;

/**
 * Why a build has no records. Under `-q` the warnings were not printed, so the message does not
 * point "above": it names the files that gave nothing and where the full list is.
 */
export function noRecordsMessage(m: Manifest, outDir: string, quiet: boolean): string {
  const where = `${outDir}/manifest.json`;
  if (!quiet) return `no records were built (see the warnings above); wrote ${where}`;
  const total = m.warnings.length +
    Object.values(m.warningsOmitted).reduce((a, b) => a + b, 0);
  const skipped = m.files.filter((f) => f.records === 0).slice(0, 5).map((f) => {
    const w = m.warnings.find((x) => x.file === f.file && x.action.startsWith("skipped"));
    return `\n  ${f.file}: ${w ? w.reason : f.kind}`;
  }).join("");
  return `no records were built; ${total} warning(s) hidden by --quiet are listed in ${where} ` +
    `(run without -q to print them)${skipped}`;
}

export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        config: { type: "string", short: "c" },
        out: { type: "string", short: "o" },
        download: { type: "boolean" },
        strict: { type: "boolean" },
        seed: { type: "string" },
        tokenizer: { type: "string" },
        "no-tokens": { type: "boolean" },
        "prompt-format": { type: "string" },
        "valid-ratio": { type: "string" },
        warnings: { type: "string" },
        quiet: { type: "boolean", short: "q" },
        "no-progress": { type: "boolean" },
        stats: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    console.error(`error: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  try {
    if (v.stats !== undefined) {
      console.log(formatBuildSummary(await readManifest(v.stats)));
      return 0;
    }
    const { config, resolved } = await loadConfig(v.config ?? "data/configs/default.json");
    if (v.strict) config.trailingComma = "strict";
    if (v.tokenizer !== undefined) {
      const dir = v.tokenizer.startsWith("/") ? v.tokenizer : `${Deno.cwd()}/${v.tokenizer}`;
      config.tokens = { ...(config.tokens ?? {}), tokenizer: dir };
    }
    if (v["prompt-format"] !== undefined) {
      const f = v["prompt-format"];
      if (!TOKEN_PROMPT_FORMATS.includes(f as TokenPromptFormat)) {
        console.error(
          `error: --prompt-format: expected ${TOKEN_PROMPT_FORMATS.join(" or ")} (got "${f}")`,
        );
        return 2;
      }
      if (!config.tokens) {
        console.error(
          "error: --prompt-format needs a token stage (tokens in the config, or --tokenizer DIR)",
        );
        return 2;
      }
      config.tokens = { ...config.tokens, promptFormat: f as TokenPromptFormat };
    }
    if (v["no-tokens"]) config.tokens = null;
    if (v.seed !== undefined) {
      const n = Number(v.seed);
      config.seed = Number.isInteger(n) && n >= 0 ? n : v.seed;
    }
    const validRatio = numberFlag(
      "valid-ratio",
      v["valid-ratio"],
      (r) => r >= 0 && r < 1,
      "a number in [0, 1)",
    );
    if (validRatio !== undefined) config.split = { ...config.split, validRatio };
    const perAction = intFlag("warnings", v.warnings, 0) ?? 20;
    const quiet = v.quiet ?? false;
    const t0 = performance.now();
    const res = await buildDataset(config, {
      baseDir: resolved.baseDir,
      ...(v.out ? { out: v.out } : {}),
      download: v.download ?? false,
      progress: !quiet && !v["no-progress"],
      printWarnings: quiet ? 0 : perAction,
      log: (
        line,
      ) => (line.startsWith("warning:")
        ? (quiet ? undefined : console.error(line))
        : console.log(line)),
    });
    const secs = (performance.now() - t0) / 1000;
    const n = res.manifest.split.train + res.manifest.split.valid;
    if (n === 0) {
      console.error(`error: ${noRecordsMessage(res.manifest, res.outDir, quiet)}`);
      return 1;
    }
    console.log(
      `\nwrote ${res.outDir} in ${secs.toFixed(1)} s (${
        Math.round(n / Math.max(secs, 1e-9))
      } records/s)`,
    );
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
