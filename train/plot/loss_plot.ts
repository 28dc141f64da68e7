/**
 * The loss curve of a run (train and eval loss vs step) from its trainer state, written as
 * `loss.svg` and `loss.png` (atomically) into the run's output directory, beside the checkpoints.
 */

import { writeFileAtomic } from "../../base/mod.ts";
import { lossSeries, type TrainerState } from "../trainer_state.ts";
import type { PlotSpec } from "./axes.ts";
import { encodePng } from "./png.ts";
import { plotCanvas } from "./png_plot.ts";
import { plotSvg } from "./svg.ts";

export const TRAIN_COLOR = "#1f77b4";
export const EVAL_COLOR = "#d62728";

/** The plot of a trainer state: series "train loss" and "eval loss" (each only when present). */
export function lossPlotSpec(state: Pick<TrainerState, "log_history">, title = "loss"): PlotSpec {
  const { train, eval: evals } = lossSeries(state);
  const series = [];
  if (train.length) {
    series.push({
      name: "train loss",
      color: TRAIN_COLOR,
      points: train.map((p) => ({ x: p.step, y: p.loss })),
      markers: false,
    });
  }
  if (evals.length) {
    series.push({
      name: "eval loss",
      color: EVAL_COLOR,
      points: evals.map((p) => ({ x: p.step, y: p.loss })),
      markers: true,
    });
  }
  return { title, xLabel: "step", yLabel: "loss", series };
}

/** Writes `<dir>/loss.svg` and `<dir>/loss.png`; returns their paths. */
export async function writeLossPlots(
  dir: string,
  state: Pick<TrainerState, "log_history">,
  title = "loss",
): Promise<{ svg: string; png: string }> {
  const spec = lossPlotSpec(state, title);
  if (spec.series.length === 0) {
    throw new Error(`${dir}: the trainer state has no loss values to plot yet`);
  }
  const root = dir.replace(/\/+$/, "");
  const svg = `${root}/loss.svg`, png = `${root}/loss.png`;
  await writeFileAtomic(svg, plotSvg(spec));
  await writeFileAtomic(png, await encodePng(plotCanvas(spec)));
  return { svg, png };
}
