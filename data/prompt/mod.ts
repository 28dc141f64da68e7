// Prompt formats shared by training, the terminal, the HTTP API and the bot.
export {
  buildChatInput,
  buildChatPrompt,
  buildPrompt,
  type ChatHistory,
  type ChatInput,
  PROMPT_TEMPLATES,
  type PromptTemplate,
} from "./chat.ts";
export {
  buildInstructionContext,
  buildTrainExample,
  IGNORE_INDEX,
  type InstructionRecord,
  type TrainExample,
  type TrainExampleOptions,
  type TrainRecord,
} from "./instruction.ts";
export { type ChatMessageLike, ChatMessagesError, messagesToChat } from "./messages.ts";
export { processResponse } from "./response.ts";
export {
  type ChatTemplate,
  type ChatTemplateOptions,
  compileChatTemplate,
  type TemplateMessage,
} from "./chat_template.ts";
export {
  createPromptBuilder,
  PROMPT_FORMATS,
  type PromptBuilder,
  type PromptBuilderOptions,
  type PromptFormat,
} from "./builder.ts";
export {
  buildTemplateTrainExample,
  recordMessages,
  type TemplateTrainRecord,
} from "./template_example.ts";
