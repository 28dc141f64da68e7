/**
 * `core/adapters`: PEFT LoRA adapters — config validation, load (safetensors or .bin), save in
 * peft's layout, merge-and-unload and merged-model export.
 *
 * @module
 */

export {
  isTargetModule,
  type LoraConfig,
  loraConfigJson,
  loraScaling,
  loraTensorKey,
  parseLoraConfig,
  parseLoraTensorKey,
  readLoraConfig,
  writeLoraConfig,
} from "./peft_config.ts";
export {
  buildLoraAdapter,
  initLoraAdapter,
  loadLoraAdapter,
  type LoraAdapter,
  type LoraBase,
  type LoraModuleWeights,
  saveLoraAdapter,
} from "./lora_weights.ts";
export { exportMergedModel, type ExportMergedOptions, mergeLoraWeight } from "./merge.ts";
