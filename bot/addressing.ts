/**
 * Whether a group message is meant for the bot: a command addressed to it, a mention, or a reply
 * to one of its messages; and the question without the mention.
 */
import type { Message, UserFromGetMe } from "npm:grammy@1.46.0/types";

/** A command is for us unless it names another bot (`/help@other_bot`). */
export function isCommandForMe(msg: Message, me: UserFromGetMe): boolean {
  const cmd = msg.entities?.find((e) => e.type === "bot_command" && e.offset === 0);
  if (!cmd || !msg.text) return false;
  const at = msg.text.slice(0, cmd.length).split("@")[1];
  return at === undefined || at.toLowerCase() === me.username.toLowerCase();
}

/** In a group: the message mentions the bot or replies to one of its messages. */
export function isAddressed(msg: Message, me: UserFromGetMe): boolean {
  if (msg.reply_to_message?.from?.id === me.id) return true;
  return mentionSpans(msg, me).length > 0;
}

function mentionSpans(msg: Message, me: UserFromGetMe): [number, number][] {
  const text = msg.text ?? msg.caption ?? "";
  const entities = msg.entities ?? msg.caption_entities ?? [];
  const spans: [number, number][] = [];
  for (const e of entities) {
    const piece = text.slice(e.offset, e.offset + e.length);
    if (
      (e.type === "mention" && piece.toLowerCase() === `@${me.username.toLowerCase()}`) ||
      (e.type === "text_mention" && e.user.id === me.id)
    ) spans.push([e.offset, e.offset + e.length]);
  }
  return spans;
}

/** The question without the @mentions of the bot. */
export function stripMentions(msg: Message, me: UserFromGetMe): string {
  let text = msg.text ?? "";
  for (const [from, to] of mentionSpans(msg, me).reverse()) {
    text = text.slice(0, from) + text.slice(to);
  }
  return text;
}
