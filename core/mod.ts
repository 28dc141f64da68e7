// @medglm/core: the tensor core — WebGPU device, tensors, WGSL kernels, nn layers, models,
// PEFT adapters and checkpoint IO.
export * from "./gpu/mod.ts";
export * from "./tensor/mod.ts";
export * from "./kernels/mod.ts";
export * from "./io/mod.ts";
export * from "./nn/mod.ts";
export * from "./models/mod.ts";
export * from "./adapters/mod.ts";
export * from "./onnx/mod.ts";
export * from "./random.ts";
export * from "./autograd/mod.ts";
