// @medglm/train: the LoRA and full fine-tuning trainer.
export * from "./lib.ts";
