/**
 * A model's own chat template (the Jinja `chat_template` of its `tokenizer_config.json`), rendered
 * as transformers' `apply_chat_template` does, through `@huggingface/jinja`. The template's
 * `{%-`/`{{-` markers do the whitespace control; nothing is added around the output.
 */

import { Template } from "npm:@huggingface/jinja@0.5.13";

export interface TemplateMessage {
  role: string;
  content: string;
  /** Qwen3's separate reasoning field of an assistant turn. */
  reasoning_content?: string | null;
}

export interface ChatTemplateOptions {
  /** End with the opening of an assistant turn (generation); false for a training example. */
  addGenerationPrompt?: boolean;
  /** Qwen3: false adds an empty think block to the generation prompt; absent adds nothing. */
  enableThinking?: boolean;
  /** Token strings some templates print (`bos_token` in Llama 3's). */
  bosToken?: string | null;
  eosToken?: string | null;
}

export interface ChatTemplate {
  render(messages: readonly TemplateMessage[], options?: ChatTemplateOptions): string;
  readonly source: string;
}

/** Compiles a template once; `source` names it in errors (e.g. the tokenizer_config.json path). */
export function compileChatTemplate(text: string, source = "chat_template"): ChatTemplate {
  let template: Template;
  try {
    template = new Template(text);
  } catch (err) {
    throw new Error(`${source}: the chat template does not parse: ${(err as Error).message}`);
  }
  return {
    source,
    render(messages, options = {}) {
      const vars: Record<string, unknown> = {
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? false,
        bos_token: options.bosToken ?? "",
        eos_token: options.eosToken ?? "",
      };
      if (options.enableThinking !== undefined) vars.enable_thinking = options.enableThinking;
      try {
        return template.render(vars);
      } catch (err) {
        throw new Error(`${source}: rendering the chat template failed: ${(err as Error).message}`);
      }
    },
  };
}
