/**
 * OpenAI-style chat messages → ChatGLM's (query, history).
 *
 * Choices (ChatGLM-6B has no system role and strictly alternating turns):
 * - `system` messages are collected and prepended, each followed by a newline, to the next user
 *   message (for the usual leading system prompt: the first user question). A system message
 *   with no user message after it is an error.
 * - Consecutive messages of the same role are merged, joined by a newline.
 * - An assistant message before any user message (a greeting) is paired with an empty question.
 * - The last message (after merging) must be a user message: it becomes the query.
 * - Any other role, or content that is not a string, is an error naming the message index.
 */

export interface ChatMessageLike {
  role: "system" | "user" | "assistant";
  content: string;
}

export class ChatMessagesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChatMessagesError";
  }
}

export function messagesToChat(
  messages: readonly ChatMessageLike[],
): { query: string; history: [string, string][] } {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new ChatMessagesError("messages: at least one message is required");
  }
  // Merge into alternating turns first.
  const turns: { role: "user" | "assistant"; content: string; index: number }[] = [];
  let pendingSystem: string[] = [];
  let pendingSystemIndex = -1;
  messages.forEach((m, i) => {
    if (typeof m !== "object" || m === null) {
      throw new ChatMessagesError(`messages[${i}]: expected an object with role and content`);
    }
    const role = (m as { role?: unknown }).role;
    const content = (m as { content?: unknown }).content;
    if (role !== "system" && role !== "user" && role !== "assistant") {
      throw new ChatMessagesError(
        `messages[${i}]: unknown role ${JSON.stringify(role)} (expected system, user or assistant)`,
      );
    }
    if (typeof content !== "string") {
      throw new ChatMessagesError(`messages[${i}] (${role}): content must be a string`);
    }
    if (role === "system") {
      if (pendingSystem.length === 0) pendingSystemIndex = i;
      pendingSystem.push(content);
      return;
    }
    let text = content;
    if (role === "user" && pendingSystem.length > 0) {
      text = pendingSystem.map((s) => s + "\n").join("") + text;
      pendingSystem = [];
    }
    const last = turns[turns.length - 1];
    if (last && last.role === role) last.content += "\n" + text;
    else turns.push({ role, content: text, index: i });
  });
  if (pendingSystem.length > 0) {
    throw new ChatMessagesError(
      `messages[${pendingSystemIndex}] (system): no user message follows this system message`,
    );
  }
  const last = turns[turns.length - 1];
  if (!last || last.role !== "user") {
    const i = messages.length - 1;
    throw new ChatMessagesError(
      `messages[${i}] (${messages[i].role}): the last message must be a user message`,
    );
  }
  const history: [string, string][] = [];
  let t = 0;
  if (turns[0].role === "assistant") {
    history.push(["", turns[0].content]);
    t = 1;
  }
  for (; t + 1 < turns.length; t += 2) history.push([turns[t].content, turns[t + 1].content]);
  return { query: last.content, history };
}
