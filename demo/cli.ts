/**
 * `deno task demo [--install] [--out DIR] [--full-epochs N] [--lora-epochs N] [--seed N]
 * [--init-from DIR] [--full-lr LR]`:
 * rebuilds the demo model from scratch (data → full training of the base → LoRA on the topics
 * the base has not seen → a few answers), printing
 * progress throughout; `--install` copies the result into models/demo.
 * `deno task demo --arch qwen3 [--out DIR] [--full-epochs N] [--max-steps N] ...`: the same chain
 * on a small Qwen3-architecture model with a tokenizer learned from the data (demo/qwen3.ts).
 */

import { parseArgs } from "node:util";
import { runDemo } from "./pipeline.ts";
import { runQwen3Demo } from "./qwen3.ts";
import { intFlag, numberFlag } from "../base/mod.ts";

const HELP = `deno task demo — rebuild the demo model from scratch (a demo, not a medical model)

options:
  --arch NAME        chatglm (default: the embedded demo model's architecture) or qwen3 (a small
                     Qwen3 model with a byte-level BPE tokenizer learned from the demo data,
                     trained fully, answering through its chat template; see demo/README.md)
  --out DIR          work folder (default runs/demo-build; runs/demo-qwen3 for --arch qwen3)
  --full-epochs N    epochs of full training (default 20)
  --lora-epochs N    epochs of LoRA training on the new topics (default 10)
  --questions N      training questions answered at the end (default 5)
  --seed N           seed of the initial weights, data order and dropout (default 42)
  --init-from DIR    continue full training from this model directory (an earlier build's
                     model/) instead of random weights
  --full-lr LR       peak learning rate of the full training (default 5e-3)
  --max-steps N      qwen3: stop the training after N optimizer steps (a quick look)
  --install          copy the result into models/demo (chatglm only)
  -h, --help         this help`;

export async function demoMain(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: "string" },
        "full-epochs": { type: "string" },
        "lora-epochs": { type: "string" },
        questions: { type: "string" },
        seed: { type: "string" },
        install: { type: "boolean" },
        "init-from": { type: "string" },
        "full-lr": { type: "string" },
        arch: { type: "string" },
        "max-steps": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    console.error(`demo: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const arch = values.arch ?? "chatglm";
  if (arch !== "chatglm" && arch !== "qwen3") {
    console.error(`demo: --arch: expected chatglm or qwen3 (got "${arch}")`);
    return 2;
  }
  const only = arch === "qwen3"
    ? ["lora-epochs", "install", "init-from"].filter((k) => values[k as keyof typeof values])
    : values["max-steps"] !== undefined
    ? ["max-steps"]
    : [];
  if (only.length) {
    console.error(`demo: --${only[0]} does not apply to --arch ${arch}`);
    return 2;
  }
  try {
    if (arch === "qwen3") return await qwen3Main(values);
    const r = await runDemo({
      out: values.out,
      fullEpochs: intFlag("full-epochs", values["full-epochs"], 1),
      loraEpochs: intFlag("lora-epochs", values["lora-epochs"], 1),
      questions: intFlag("questions", values.questions, 0),
      seed: intFlag("seed", values.seed, 0),
      install: values.install ?? false,
      initFrom: values["init-from"],
      fullLr: numberFlag("full-lr", values["full-lr"], (v) => v > 0, "a number > 0"),
    });
    const mean = r.answers.length
      ? r.answers.reduce((s, a) => s + a.overlap, 0) / r.answers.length
      : 0;
    console.log(
      `demo done in ${r.seconds.toFixed(0)} s: full-training loss ${
        r.fullLoss.first.toFixed(3)
      } → ` +
        `${r.fullLoss.last.toFixed(3)}, LoRA loss ${r.loraLoss.first.toFixed(3)} → ` +
        `${r.loraLoss.last.toFixed(3)}, ${(100 * mean).toFixed(0)}% of the training answers ` +
        `reproduced; model in ${r.modelDir} (adapter ${r.adapterDir})`,
    );
    return 0;
  } catch (err) {
    console.error(`demo: ${(err as Error).message}`);
    return 1;
  }
}

async function qwen3Main(values: Record<string, string | boolean | undefined>): Promise<number> {
  const flag = (k: string) => values[k] as string | undefined;
  const r = await runQwen3Demo({
    out: flag("out"),
    epochs: intFlag("full-epochs", flag("full-epochs"), 1),
    maxSteps: intFlag("max-steps", flag("max-steps"), 1),
    questions: intFlag("questions", flag("questions"), 0),
    seed: intFlag("seed", flag("seed"), 0),
    lr: numberFlag("full-lr", flag("full-lr"), (v) => v > 0, "a number > 0"),
  });
  const mean = r.answers.length
    ? r.answers.reduce((s, a) => s + a.overlap, 0) / r.answers.length
    : 0;
  console.log(
    `demo (qwen3) done in ${r.seconds.toFixed(0)} s: training loss ${r.loss.first.toFixed(3)} → ` +
      `${r.loss.last.toFixed(3)}, ${(100 * mean).toFixed(0)}% of the training answers ` +
      `reproduced; model in ${r.modelDir} (tokenizer of ${r.tokenizerSize} tokens). Try it: ` +
      `deno task infer --model ${r.modelDir} --no-thinking`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await demoMain(Deno.args));
