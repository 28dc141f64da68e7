/**
 * `deno task eval`: the base model and each adapter side by side on medical multiple-choice
 * benchmarks and the held-out split of our data. Prints one table, writes `results.json` and
 * `comparison.svg` atomically; per-question results are cached under `OUT/cache/<model-hash>/`
 * so `--resume` continues an interrupted run.
 */

import {
  attachAdapter,
  type CausalLM,
  detachAdapter,
  isLlamaModel,
  linearModules,
  loadLoraAdapter,
  loadModel,
  modelTypeOf,
  parseQuantizeFlag,
  type QuantizeOption,
  type WeightDtype,
} from "../core/mod.ts";
import { parseArgs } from "node:util";
import { type AnyTokenizer, createPromptBuilder, loadTokenizer } from "../data/mod.ts";
import { buildEngine, type Engine } from "../serve/mod.ts";
import {
  type EvalSettings,
  evaluateVariant,
  type ScorerName,
  type VariantResult,
} from "./evaluate.ts";
import { loadTask, type McTask, parseTaskSpecs } from "./formats/tasks.ts";
import { variantHash } from "./identity.ts";
import { fromCausalLM, promptEncoder } from "./model.ts";
import { type HeldoutExample, readHeldout } from "./open_qa.ts";
import { loadOpenTask, type OpenTask } from "./formats/open_questions.ts";
import type { McPromptStyle } from "./prompts.ts";
import { comparisonTable, RESULTS_FORMAT, writeComparison } from "./report/comparison.ts";
import { formatIssue } from "./types.ts";
import { intFlag } from "../base/mod.ts";

export const HELP = `deno task eval — base model vs adapters on medical benchmarks

usage:
  deno task eval --model DIR [--adapter DIR ...] --tasks KIND:PATH[,KIND:PATH...] [options]

tasks (comma-separated KIND:PATH):
  cmmlu:DIR        CMMLU layout: DIR/test/*.csv (+ DIR/dev/*.csv for k-shot), or one CSV file
  ceval:DIR        C-Eval layout: DIR/val/*_val.csv (+ DIR/dev/*_dev.csv)
  cmb:DIR          CMB: *question*.json (+ *answer*.json joined on id), or one JSON file
  cmexam:PATH      CMExam-style JSON / JSON Lines (question, options, answer)
  mmcu:PATH        MMCU JSON (类别/题目/选项/答案), a file or a folder
  promptcblue:PATH PromptCBLUE JSON Lines (its multiple-choice part), a file or a folder
  heldout:DIR      the held-out split of a \`deno task data\` build: loss, perplexity and, with
                   an engine, ROUGE-L / BLEU-4 of greedy answers (--limit N: the first N
                   examples in the build's file order)
  open:FILE        open questions without reference answers (JSON array / JSON Lines of
                   {question, ...}, e.g. Huatuo's benchmark/question.json): each variant's
                   greedy answers go to OUT/answers/<task>.<variant>.jsonl for later judging

options:
  --model DIR          base model directory (config.json, weights, tokenizer files)
  --adapter DIR        a PEFT LoRA adapter to compare with the base (repeatable)
  --tasks LIST         see above
  --scorer NAME        loglik (option log-likelihood, default) or generate (answer extraction)
  --shots K            dev examples per prompt (default 0)
  --template NAME      plain (default) or chat (shots as earlier chat rounds)
  --limit N            first N questions of each task, in file order (and the first N held-out
                       examples and open questions)
  --batch-size N       rows per forward pass / generations in flight (default 8)
  --max-length N       longest scored row in tokens (default: the model's max context)
  --max-new-tokens N   answer length for --scorer generate (default 32)
  --open-max-new-tokens N  answer length for held-out open questions (default 256)
  --dtype f32|f16      base weight storage (default: f16 with shader-f16; on a software
                       adapter f32 when it fits half of memory: gpu-info)
  --quantize SPEC      int8/int4 base weights at load: 8 | 4[,group=G][,embeddings]
  --out DIR            output folder (default out/eval)
  --resume             reuse cached per-question results in OUT/cache (default: start fresh)
  --no-progress        no progress bars
  --issues N           print at most N skipped-item reasons per task (default 10; all in JSON)
  -h, --help           this help
`;

export interface EvalCliOptions {
  model: string;
  adapters: string[];
  taskSpecs: ReturnType<typeof parseTaskSpecs>;
  heldout: string[];
  /** `open:FILE` tasks: open questions answered into files. */
  open: string[];
  settings: EvalSettings;
  dtype?: WeightDtype;
  quantize?: QuantizeOption;
  issues: number;
}

/** Parses and checks the flags; null for --help. Throws with a message naming the flag. */
export function parseEvalArgs(args: string[]): EvalCliOptions | null {
  const { values: v } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      adapter: { type: "string", multiple: true },
      tasks: { type: "string" },
      scorer: { type: "string" },
      shots: { type: "string" },
      template: { type: "string" },
      limit: { type: "string" },
      "batch-size": { type: "string" },
      "max-length": { type: "string" },
      "max-new-tokens": { type: "string" },
      "open-max-new-tokens": { type: "string" },
      dtype: { type: "string" },
      quantize: { type: "string" },
      out: { type: "string" },
      resume: { type: "boolean" },
      "no-progress": { type: "boolean" },
      issues: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (v.help) return null;
  if (!v.model) throw new Error("--model DIR is required");
  if (!v.tasks) {
    throw new Error("--tasks is required (e.g. --tasks cmmlu:data/cmmlu)");
  }
  const scorer = (v.scorer ?? "loglik") as ScorerName;
  if (scorer !== "loglik" && scorer !== "generate") {
    throw new Error(
      `--scorer: expected loglik or generate, got ${JSON.stringify(v.scorer)}`,
    );
  }
  const template = (v.template ?? "plain") as McPromptStyle;
  if (template !== "plain" && template !== "chat") {
    throw new Error(
      `--template: expected plain or chat, got ${JSON.stringify(v.template)}`,
    );
  }
  if (v.dtype !== undefined && v.dtype !== "f32" && v.dtype !== "f16") {
    throw new Error(
      `--dtype: expected f32 or f16, got ${JSON.stringify(v.dtype)}`,
    );
  }
  const parts = v.tasks.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const heldout = parts.filter((p) => p.toLowerCase().startsWith("heldout:"))
    .map((p) => p.slice(8));
  if (heldout.some((p) => p === "")) {
    throw new Error("--tasks: heldout needs a build folder");
  }
  const open = parts.filter((p) => p.toLowerCase().startsWith("open:")).map((p) => p.slice(5));
  if (open.some((p) => p === "")) throw new Error("--tasks: open needs a question file");
  const mc = parts.filter((p) =>
    !p.toLowerCase().startsWith("heldout:") && !p.toLowerCase().startsWith("open:")
  );
  const adapters = v.adapter ?? [];
  const names = adapters.map(adapterName);
  const dup = names.find((n, i) => names.indexOf(n) !== i || n === "base");
  if (dup) {
    throw new Error(
      `--adapter: two variants would be named ${JSON.stringify(dup)}`,
    );
  }
  return {
    model: v.model,
    adapters,
    taskSpecs: mc.length ? parseTaskSpecs(mc.join(",")) : [],
    heldout,
    open,
    dtype: v.dtype as WeightDtype | undefined,
    quantize: parseQuantizeFlag(v.quantize),
    issues: intFlag("issues", v.issues, 0) ?? 10,
    settings: {
      scorer,
      shots: intFlag("shots", v.shots, 0) ?? 0,
      template,
      limit: intFlag("limit", v.limit, 1),
      batchSize: intFlag("batch-size", v["batch-size"], 1) ?? 8,
      maxLength: intFlag("max-length", v["max-length"], 2),
      maxNewTokens: intFlag("max-new-tokens", v["max-new-tokens"], 1) ?? 32,
      openMaxNewTokens: intFlag("open-max-new-tokens", v["open-max-new-tokens"], 1) ?? 256,
      resume: v.resume ?? false,
      outDir: v.out ?? "out/eval",
      progress: v["no-progress"] ? false : undefined,
    },
  };
}

/** The column name of an adapter: its folder name. */
export function adapterName(dir: string): string {
  return dir.replace(/\/+$/, "").split("/").pop() || dir;
}

/** Loads, evaluates and releases each variant in turn: the base, then every adapter. */
export async function runEvaluation(
  opts: EvalCliOptions,
  log: (line: string) => void = (l) => console.error(l),
): Promise<
  {
    variants: VariantResult[];
    table: string;
    files: { json: string; svg: string };
  }
> {
  const tasks: McTask[] = [];
  for (const spec of opts.taskSpecs) {
    const t = await loadTask(spec);
    tasks.push(t);
    log(
      `${t.name}: ${t.items.length} questions, ${t.dev.length} dev examples from ${spec.path}` +
        (t.issues.length ? `, ${t.issues.length} skipped:` : ""),
    );
    for (const issue of t.issues.slice(0, opts.issues)) {
      log(`  ${formatIssue(issue)}`);
    }
    if (t.issues.length > opts.issues) {
      log(`  … ${t.issues.length - opts.issues} more in results.json`);
    }
  }
  const openTasks: OpenTask[] = [];
  for (const path of opts.open) {
    const names = openTasks.map((t) => t.name);
    let t = await loadOpenTask(path);
    if (names.includes(t.name)) t = { ...t, name: `${t.name}#${openTasks.length + 1}` };
    openTasks.push(t);
    log(
      `${t.name}: ${t.questions.length} open questions from ${path}` +
        (t.issues.length ? `, ${t.issues.length} skipped:` : ""),
    );
    for (const issue of t.issues.slice(0, opts.issues)) log(`  ${formatIssue(issue)}`);
    if (t.issues.length > opts.issues) {
      log(`  … ${t.issues.length - opts.issues} more in results.json`);
    }
  }
  const modelDir = opts.model.replace(/\/+$/, "") || opts.model;
  let tokenizer: AnyTokenizer;
  try {
    await modelTypeOf(modelDir); // an unknown architecture is refused here, naming the known ones
    tokenizer = await loadTokenizer(modelDir);
  } catch (err) {
    throw new Error(
      `--model ${modelDir}: cannot load the tokenizer: ${(err as Error).message}`,
    );
  }
  const heldout: HeldoutExample[] = [];
  for (const dir of opts.heldout) {
    heldout.push(
      ...await readHeldout(dir, {
        limit: opts.settings.limit,
        // A build without token shards is tokenized here with the seed's instruction template,
        // which is ChatGLM's; other models read the token shards of a build made with their
        // tokenizer (`deno task data --tokenizer DIR`).
        tokenizer: tokenizer.kind === "chatglm" ? tokenizer : undefined,
      }),
    );
  }
  if (opts.heldout.length) {
    log(`held-out: ${heldout.length} examples from ${opts.heldout.join(", ")}`);
  }
  const settings = opts.settings;
  const needEngine = settings.scorer === "generate" || heldout.length > 0 ||
    openTasks.length > 0;
  // The prompts of the model's own chat template (Qwen, Llama 3), when its tokenizer has one:
  // `--template chat` multiple-choice prompts are rendered with it, as the engine renders
  // conversations. ChatGLM keeps its `[Round i]` chat format.
  const builder = tokenizer.kind === "chatglm" ? null : createPromptBuilder(tokenizer);
  const templated = builder?.format === "chat-template" && settings.template === "chat";
  const load = async (adapter?: string): Promise<CausalLM> => {
    try {
      return await loadModel(modelDir, {
        dtype: opts.dtype,
        quantize: opts.quantize,
        maxBatch: settings.batchSize,
        log,
        progressBar: settings.progress,
        ...(adapter ? { adapter } : {}),
      });
    } catch (err) {
      throw new Error(
        adapter
          ? `--adapter ${adapter}: ${(err as Error).message}`
          : `--model ${modelDir}: cannot load the model: ${(err as Error).message}`,
      );
    }
  };
  let base: CausalLM | null = await load();
  // Rows longer than the model's context cannot run: longer prompts keep their end.
  const evalSettings: EvalSettings = {
    ...settings,
    maxLength: Math.min(settings.maxLength ?? base.maxContext, base.maxContext),
  };
  const variants: VariantResult[] = [];
  try {
    for (const adapter of [undefined, ...opts.adapters]) {
      const name = adapter ? adapterName(adapter) : "base";
      let model: CausalLM;
      if (!adapter) model = base!;
      else if (base === null || isLlamaModel(base)) {
        // A Llama-family model takes its adapter at load (one model in memory at a time).
        base?.dispose();
        base = null;
        model = await load(adapter);
      } else {
        const glm = base;
        const lora = await loadLoraAdapter(adapter, {
          linearModules: linearModules(glm.config),
          name: modelDir,
        }).catch((err) => {
          throw new Error(`--adapter ${adapter}: ${(err as Error).message}`);
        });
        attachAdapter(glm, lora);
        model = glm;
      }
      let engine: Engine | undefined;
      try {
        if (needEngine) {
          engine = buildEngine({
            model,
            tokenizer,
            maxBatch: settings.batchSize,
            ownsModel: false,
          });
        }
        const { result } = await evaluateVariant(
          {
            name,
            hash: await variantHash(modelDir, adapter),
            model: fromCausalLM(model),
            engine,
            tokenizer: promptEncoder(tokenizer, templated),
            ...(templated && builder ? { chatPrompt: (m) => builder.text(m) } : {}),
          },
          tasks,
          heldout,
          evalSettings,
          openTasks,
        );
        variants.push(result);
      } finally {
        await engine?.close();
        if (adapter && isLlamaModel(model)) model.dispose();
        else if (adapter && !isLlamaModel(model)) detachAdapter(model);
      }
    }
  } finally {
    base?.dispose();
  }
  const table = comparisonTable(variants);
  const { outDir: _o, resume: _r, progress: _p, ...kept } = evalSettings;
  const files = await writeComparison(settings.outDir, {
    format: RESULTS_FORMAT,
    settings: kept,
    tasks: tasks.map((t) => ({
      name: t.name,
      kind: t.kind,
      path: t.path,
      questions: settings.limit !== undefined
        ? Math.min(settings.limit, t.items.length)
        : t.items.length,
      skipped: t.issues.length,
    })),
    ...(openTasks.length
      ? {
        open: openTasks.map((t) => ({
          name: t.name,
          path: t.path,
          questions: settings.limit !== undefined
            ? Math.min(settings.limit, t.questions.length)
            : t.questions.length,
          skipped: t.issues.length,
        })),
      }
      : {}),
    variants,
    issues: [...tasks, ...openTasks].flatMap((t) =>
      t.issues.map((i) => `${t.name}: ${formatIssue(i)}`)
    ),
  });
  return { variants, table, files };
}

export async function main(args: string[]): Promise<number> {
  let opts: EvalCliOptions | null;
  try {
    opts = parseEvalArgs(args);
  } catch (err) {
    console.error(`error: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (!opts) {
    console.log(HELP);
    return 0;
  }
  try {
    const { table, files } = await runEvaluation(opts);
    console.log(table);
    console.log(`\nwrote ${files.json} and ${files.svg}`);
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
