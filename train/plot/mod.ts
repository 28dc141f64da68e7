/**
 * `train/plot`: the loss curve as SVG and PNG (own SVG writer, rasterizer, bitmap font and PNG
 * encoder), written beside the checkpoints.
 *
 * @module
 */

export { layout, niceTicks, type PlotSpec, type Series } from "./axes.ts";
export { EVAL_COLOR, lossPlotSpec, TRAIN_COLOR, writeLossPlots } from "./loss_plot.ts";
export { crc32, encodePng, PNG_SIGNATURE } from "./png.ts";
export { plotCanvas } from "./png_plot.ts";
export { plotSvg } from "./svg.ts";
