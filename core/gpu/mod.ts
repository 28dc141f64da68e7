/**
 * `core/gpu`: the WebGPU compat layer.
 *
 * - {@link getGpu} — the shared device: adapter info, backend, software or not, features, limits.
 *   Throws a {@link GpuError} naming what to install when no adapter exists.
 * - Recording: `const rec = beginRecording(gpu)`; kernel wrappers (core/kernels) append dispatches;
 *   `await submit(rec)` submits once and throws on any GPU error; `readTensor` (core/tensor) waits
 *   for the results.
 * - {@link getPipeline} — per-device pipeline cache keyed by kernel, variant and dtype.
 *
 * @module
 */

export {
  createGpu,
  getGpu,
  type Gpu,
  type GpuBackend,
  GpuError,
  type GpuLimits,
  NO_ADAPTER_HELP,
} from "./device.ts";
export {
  beginCapture,
  beginRecording,
  type Capture,
  discardRecording,
  endCapture,
  grid,
  openRecordingCount,
  type PackedParams,
  type ParamValue,
  recordClear,
  recordCopy,
  recordDispatch,
  type Recording,
  replayCapture,
  submit,
  sync,
  uniformParams,
} from "./recording.ts";
export { getPipeline, pipelineCount } from "./pipelines.ts";
export {
  isProfiling,
  type KernelTime,
  kernelTimes,
  profileReport,
  resetProfile,
  setProfiling,
} from "./profile.ts";
