/**
 * The side-by-side report of model variants: the text table (accuracy per subject with counts,
 * per task, overall, held-out perplexity / ROUGE-L / BLEU-4), `results.json` and the bar chart.
 * Everything is derived from the results alone, so the same results give byte-identical files.
 */

import { writeFileAtomic, writeJsonAtomic } from "../../base/mod.ts";
import type { EvalSettings, Score, VariantResult } from "../evaluate.ts";
import { type EvalIssue, formatIssue } from "../types.ts";
import { barChartSvg, SERIES_COLORS } from "./bar_chart.ts";

export const RESULTS_FORMAT = "medglm-eval/1";

function cell(s: Score | undefined, unparsed: boolean): string {
  if (!s || s.total === 0) return "–";
  let out = `${(100 * s.accuracy).toFixed(1)}% (${s.correct}/${s.total})`;
  if (unparsed && s.unparsed > 0) out += ` ${s.unparsed} unparsed`;
  // prompts cut to the context were scored without their start: say how many
  if ((s.truncated ?? 0) > 0) out += ` ${s.truncated} cut`;
  if ((s.errors ?? 0) > 0) out += ` ${s.errors} failed`;
  return out;
}

/** `A 24% B 31% C 45%`: how often each answer was predicted. */
export function letterShares(s: Score | undefined): string {
  const entries = Object.entries(s?.letters ?? {});
  const n = entries.reduce((a, [, c]) => a + c, 0);
  if (n === 0) return "–";
  return entries.map(([l, c]) => `${l} ${Math.round((100 * c) / n)}%`).join(" ");
}

function rowKeys(
  variants: readonly VariantResult[],
): { task: string; subject: string }[] {
  const seen = new Set<string>();
  const out: { task: string; subject: string }[] = [];
  for (const v of variants) {
    for (const s of v.subjects) {
      const k = `${s.task}\u0000${s.subject}`;
      if (!seen.has(k)) {
        seen.add(k);
        out.push({ task: s.task, subject: s.subject });
      }
    }
  }
  return out;
}

const fixed = (v: number | undefined, d: number) =>
  v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(d);

/** The comparison as an aligned plain-text table. */
export function comparisonTable(variants: readonly VariantResult[]): string {
  const unparsed = variants.some((v) => v.overall.unparsed > 0);
  const rows: string[][] = [["task / subject", ...variants.map((v) => v.name)]];
  const tasks = [...new Set(rowKeys(variants).map((k) => k.task))];
  for (const task of tasks) {
    const subjects = rowKeys(variants).filter((k) => k.task === task);
    for (const k of subjects) {
      rows.push([
        `${task} / ${k.subject}`,
        ...variants.map((v) =>
          cell(
            v.subjects.find((s) => s.task === task && s.subject === k.subject),
            unparsed,
          )
        ),
      ]);
    }
    if (subjects.length > 1) {
      rows.push([
        `${task} (all)`,
        ...variants.map((v) => cell(v.tasks[task], unparsed)),
      ]);
    }
    rows.push([`${task} answers`, ...variants.map((v) => letterShares(v.tasks[task]))]);
  }
  rows.push(["overall", ...variants.map((v) => cell(v.overall, unparsed))]);
  if (variants.some((v) => v.heldout)) {
    rows.push([
      "held-out loss",
      ...variants.map((v) => fixed(v.heldout?.loss, 4)),
    ]);
    rows.push([
      "held-out perplexity",
      ...variants.map((v) => fixed(v.heldout?.perplexity, 3)),
    ]);
    if (variants.some((v) => (v.heldout?.truncated ?? 0) > 0)) {
      rows.push([
        "held-out cut to context",
        ...variants.map((v) => `${v.heldout?.truncated ?? 0} of ${v.heldout?.examples ?? 0}`),
      ]);
    }
    if (variants.some((v) => v.heldout?.rougeL !== undefined)) {
      rows.push([
        "held-out ROUGE-L",
        ...variants.map((v) => fixed(v.heldout?.rougeL, 2)),
      ]);
      rows.push([
        "held-out BLEU-4",
        ...variants.map((v) => fixed(v.heldout?.bleu4, 2)),
      ]);
    }
  }
  const openTasks = [...new Set(variants.flatMap((v) => Object.keys(v.open ?? {})))];
  for (const t of openTasks) {
    rows.push([
      `${t} answers (to judge)`,
      ...variants.map((v) => {
        const o = v.open?.[t];
        if (!o) return "–";
        return `${o.questions - o.errors}/${o.questions} → ${o.file}`;
      }),
    ]);
  }
  // CJK characters take two columns in a terminal
  const width = (s: string) =>
    [...s].reduce((w, ch) => w + (/[\u1100-\uffff]/.test(ch) ? 2 : 1), 0);
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => width(r[c]))));
  const line = (r: string[]) =>
    r.map((s, c) => s + " ".repeat(widths[c] - width(s))).join("  ").trimEnd();
  const sep = widths.map((w) => "-".repeat(w)).join("  ");
  const warnings = variants.flatMap((v) => v.warnings ?? []).map((w) => `warning: ${w}`);
  return [
    line(rows[0]),
    sep,
    ...rows.slice(1).map(line),
    ...(warnings.length ? ["", ...warnings] : []),
  ]
    .join("\n");
}

/** The bar chart: accuracy per subject and overall, one bar per variant. */
export function comparisonSvg(variants: readonly VariantResult[]): string {
  const keys = rowKeys(variants);
  const groups = [...keys.map((k) => `${k.task}/${k.subject}`), "overall"];
  return barChartSvg({
    title: "Accuracy by subject",
    yLabel: "accuracy (%)",
    groups,
    series: variants.map((v, i) => ({
      name: v.name,
      color: SERIES_COLORS[i % SERIES_COLORS.length],
      values: [
        ...keys.map((k) => {
          const s = v.subjects.find((x) => x.task === k.task && x.subject === k.subject);
          return s && s.total ? 100 * s.accuracy : NaN;
        }),
        v.overall.total ? 100 * v.overall.accuracy : NaN,
      ],
    })),
  });
}

export interface ResultsFile {
  format: string;
  settings: Omit<EvalSettings, "outDir" | "resume" | "progress">;
  tasks: {
    name: string;
    kind: string;
    path: string;
    questions: number;
    skipped: number;
  }[];
  /** Open-question tasks (answers written for later judging). */
  open?: { name: string; path: string; questions: number; skipped: number }[];
  variants: VariantResult[];
  issues: string[];
}

/** NaN is not JSON: accuracies of empty sets become null. */
function jsonSafe(v: unknown): unknown {
  return JSON.parse(
    JSON.stringify(
      v,
      (_k, x) => (typeof x === "number" && !Number.isFinite(x) ? null : x),
    ),
  );
}

/** Writes `results.json` and `comparison.svg` atomically into `outDir`. */
export async function writeComparison(
  outDir: string,
  results: ResultsFile,
): Promise<{ json: string; svg: string }> {
  const dir = outDir.replace(/\/+$/, "") || outDir;
  await Deno.mkdir(dir, { recursive: true });
  const json = `${dir}/results.json`, svg = `${dir}/comparison.svg`;
  await writeJsonAtomic(json, jsonSafe(results));
  await writeFileAtomic(svg, comparisonSvg(results.variants));
  return { json, svg };
}

export function issueLines(issues: readonly EvalIssue[]): string[] {
  return issues.map(formatIssue);
}
