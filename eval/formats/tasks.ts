/**
 * A benchmark task from a `kind:PATH` spec (the CLI's `--tasks`): its evaluation items, the dev
 * items k-shot prompts draw from, and every reported problem. Files are read in sorted order, so
 * the item order (and with it every result) does not depend on the file system.
 */

import type { EvalIssue, McItem } from "../types.ts";
import { readMcCsv } from "./cmmlu.ts";
import { readCmb, readMcJson } from "./cmb.ts";
import { readPromptCblue } from "./promptcblue.ts";

export const TASK_KINDS = [
  "cmmlu",
  "ceval",
  "cmb",
  "cmexam",
  "mmcu",
  "promptcblue",
] as const;
export type TaskKind = typeof TASK_KINDS[number];

export interface TaskSpec {
  kind: TaskKind;
  path: string;
  /** Defaults to `kind`; made unique by the spec parser. */
  name: string;
}

export interface McTask {
  name: string;
  kind: TaskKind;
  path: string;
  items: McItem[];
  /** Examples for k-shot prompts (CMMLU `dev/`, C-Eval `dev/`); empty for the other formats. */
  dev: McItem[];
  issues: EvalIssue[];
}

/** `cmmlu:DIR,cmb:DIR` → specs; a repeated kind gets `#2`, `#3` appended to its name. */
export function parseTaskSpecs(text: string): TaskSpec[] {
  const specs: TaskSpec[] = [];
  const counts = new Map<string, number>();
  for (
    const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")
  ) {
    const colon = part.indexOf(":");
    if (colon <= 0 || colon === part.length - 1) {
      throw new Error(`--tasks: ${JSON.stringify(part)} is not KIND:PATH`);
    }
    const kind = part.slice(0, colon).toLowerCase();
    if (!(TASK_KINDS as readonly string[]).includes(kind)) {
      throw new Error(
        `--tasks: unknown task kind ${JSON.stringify(kind)} (one of ${TASK_KINDS.join(", ")})`,
      );
    }
    const n = (counts.get(kind) ?? 0) + 1;
    counts.set(kind, n);
    specs.push({
      kind: kind as TaskKind,
      path: part.slice(colon + 1),
      name: n === 1 ? kind : `${kind}#${n}`,
    });
  }
  if (specs.length === 0) throw new Error("--tasks: no task given");
  return specs;
}

async function statOrThrow(path: string): Promise<Deno.FileInfo> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    throw new Error(`${path}: cannot open: ${(err as Error).message}`);
  }
}

/** Files of `dir` ending in `ext`, sorted by name (none when the folder does not exist). */
async function listFiles(dir: string, ext: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.toLowerCase().endsWith(ext)) {
        out.push(`${dir}/${e.name}`);
      }
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw new Error(`${dir}: cannot list: ${(err as Error).message}`);
  }
  return out.sort();
}

async function readCsvFiles(
  paths: string[],
): Promise<{ items: McItem[]; issues: EvalIssue[] }> {
  const items: McItem[] = [];
  const issues: EvalIssue[] = [];
  for (const p of paths) {
    const r = await readMcCsv(p);
    items.push(...r.items);
    issues.push(...r.issues);
  }
  return { items, issues };
}

async function readJsonFiles(
  paths: string[],
  read: (p: string) => Promise<{ items: McItem[]; issues: EvalIssue[] }>,
): Promise<{ items: McItem[]; issues: EvalIssue[] }> {
  const items: McItem[] = [];
  const issues: EvalIssue[] = [];
  const seen = new Set<string>();
  for (const p of paths) {
    const r = await read(p);
    issues.push(...r.issues);
    for (const it of r.items) {
      if (seen.has(it.id)) {
        const [file, line] = [
          it.origin.replace(/:\d+$/, ""),
          Number(it.origin.split(":").pop()),
        ];
        issues.push({
          file,
          line,
          reason: `duplicate id ${it.id} (already read from another file)`,
        });
        continue;
      }
      seen.add(it.id);
      items.push(it);
    }
  }
  return { items, issues };
}

/** Reads one task. */
export async function loadTask(spec: TaskSpec): Promise<McTask> {
  const root = spec.path.replace(/\/+$/, "") || spec.path;
  const info = await statOrThrow(root);
  const base = { name: spec.name, kind: spec.kind, path: spec.path };
  switch (spec.kind) {
    case "cmmlu":
    case "ceval": {
      if (info.isFile) {
        return { ...base, ...(await readCsvFiles([root])), dev: [] };
      }
      // C-Eval hides its test answers, so its evaluation split is `val`.
      const evalDir = spec.kind === "ceval" ? "val" : "test";
      const files = await listFiles(`${root}/${evalDir}`, ".csv");
      const main = files.length ? files : await listFiles(root, ".csv");
      if (main.length === 0) {
        throw new Error(`${root}: no ${evalDir}/*.csv or *.csv files`);
      }
      const t = await readCsvFiles(main);
      const d = await readCsvFiles(await listFiles(`${root}/dev`, ".csv"));
      return {
        ...base,
        items: t.items,
        dev: d.items,
        issues: [...t.issues, ...d.issues],
      };
    }
    case "cmb": {
      if (info.isFile) return { ...base, ...(await readCmb(root)), dev: [] };
      const files = await listFiles(root, ".json");
      const questions = files.filter((f) => /question/i.test(f.split("/").pop()!));
      const answers = files.filter((f) => /answer/i.test(f.split("/").pop()!));
      if (questions.length !== 1) {
        throw new Error(
          `${root}: expected one *question*.json file, found ${questions.length}` +
            (questions.length ? ` (${questions.join(", ")})` : ""),
        );
      }
      if (answers.length > 1) {
        throw new Error(
          `${root}: more than one *answer*.json file (${answers.join(", ")})`,
        );
      }
      return { ...base, ...(await readCmb(questions[0], answers[0])), dev: [] };
    }
    case "cmexam":
    case "mmcu": {
      const files = info.isFile ? [root] : [
        ...(await listFiles(root, ".json")),
        ...(await listFiles(root, ".jsonl")),
      ].sort();
      if (files.length === 0) throw new Error(`${root}: no .json/.jsonl files`);
      return {
        ...base,
        ...(await readJsonFiles(files, (p) => readMcJson(p, spec.kind))),
        dev: [],
      };
    }
    case "promptcblue": {
      const files = info.isFile ? [root] : [
        ...(await listFiles(root, ".json")),
        ...(await listFiles(root, ".jsonl")),
      ].sort();
      if (files.length === 0) throw new Error(`${root}: no .json/.jsonl files`);
      return {
        ...base,
        ...(await readJsonFiles(files, readPromptCblue)),
        dev: [],
      };
    }
  }
}
