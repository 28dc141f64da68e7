/**
 * The prompt flags `deno task infer` and `deno task serve` share: `--prompt-format` with the
 * values of the one prompt builder (data/prompt/builder.ts: `chat`, `instruction`,
 * `chat-template`), the same flag name the data build takes, `--prompt-template` kept as its
 * older spelling, and `--enable-thinking` / `--no-thinking` for chat templates that read
 * `enable_thinking` (Qwen3's).
 */
import { PROMPT_FORMATS, type PromptFormat } from "../data/mod.ts";
import { FlagError } from "../base/mod.ts";

/** The parseArgs option table of these flags. */
export const PROMPT_FLAG_OPTIONS = {
  "prompt-format": { type: "string" },
  "prompt-template": { type: "string" },
  "enable-thinking": { type: "boolean" },
  "no-thinking": { type: "boolean" },
} as const;

const USAGE: [string, string[]][] = [
  ["--prompt-format NAME", [
    "chat (ChatGLM's) | instruction (the seed's fine-tuning template) |",
    "chat-template (the tokenizer's own Jinja template: Qwen, Llama 3);",
    "default: what the model's config.json declares (medglm_prompt_template),",
    "else its chat template when the tokenizer has one, else chat",
    "(--prompt-template NAME is the same flag)",
  ]],
  ["--enable-thinking", [
    "chat-template with enable_thinking (Qwen3): the model may reason in a",
    "<think> block first (the template's default)",
  ]],
  ["--no-thinking", [
    "chat-template with enable_thinking false (Qwen3): the prompt closes an",
    "empty think block, the model answers directly",
  ]],
];

/** The usage lines of these flags, descriptions starting at column `column` (as the CLI's). */
export function promptFlagsUsage(column: number): string {
  return USAGE.flatMap(([flag, lines]) =>
    lines.map((line, i) => (i === 0 ? `  ${flag}` : "").padEnd(column) + line)
  ).join("\n");
}

export interface PromptFlags {
  /** Absent: what the model directory declares (see loadEngine). */
  promptTemplate?: PromptFormat;
  /** Absent: the template's own default. */
  enableThinking?: boolean;
}

export function parsePromptFlags(values: {
  "prompt-format"?: string;
  "prompt-template"?: string;
  "enable-thinking"?: boolean;
  "no-thinking"?: boolean;
}): PromptFlags {
  const format = values["prompt-format"], alias = values["prompt-template"];
  if (format !== undefined && alias !== undefined && format !== alias) {
    throw new FlagError(
      `--prompt-format ${format} and --prompt-template ${alias} disagree (they are one flag: ` +
        "give one)",
    );
  }
  const value = format ?? alias;
  const name = format !== undefined ? "--prompt-format" : "--prompt-template";
  if (value !== undefined && !PROMPT_FORMATS.includes(value as PromptFormat)) {
    throw new FlagError(`${name}: expected ${PROMPT_FORMATS.join(" or ")} (got "${value}")`);
  }
  if (values["enable-thinking"] && values["no-thinking"]) {
    throw new FlagError("--enable-thinking and --no-thinking: give one of them");
  }
  const enableThinking = values["enable-thinking"]
    ? true
    : values["no-thinking"]
    ? false
    : undefined;
  if (enableThinking !== undefined && value !== undefined && value !== "chat-template") {
    throw new FlagError(
      `--${enableThinking ? "enable" : "no"}-thinking applies to the chat-template prompt ` +
        `format only (got ${name} ${value})`,
    );
  }
  // enableThinking only when given, so the flag objects of earlier releases compare unchanged
  return {
    promptTemplate: value as PromptFormat | undefined,
    ...(enableThinking === undefined ? {} : { enableThinking }),
  };
}
