/**
 * Free-text questions: the per-user rate limit (a counter in the store, shared by replicas), the
 * queue cap, then the answer in the chat's turn. Other commands and non-text messages get help.
 */
import { Composer } from "npm:grammy@1.46.0/web";
import { stripMentions } from "../addressing.ts";
import { answer } from "../answer.ts";
import { type BotServices, inTurn, type MedContext, notice } from "../context.ts";
import * as texts from "../texts.ts";

export function questions(svc: BotServices): Composer<MedContext> {
  const c = new Composer<MedContext>();
  c.on("message:text", async (ctx) => {
    const text = ctx.message.text;
    // Commands of other bots, or ones we do not know.
    if (text.startsWith("/")) {
      if (ctx.chat.type === "private") notice(svc, ctx, texts.HELP_TEXT);
      return;
    }
    const question = stripMentions(ctx.message, ctx.me).trim();
    if (!question) {
      notice(svc, ctx, texts.HELP_TEXT);
      return;
    }
    const verdict = await (await svc.store()).takeRate(`question:${ctx.from.id}`, svc.rateLimit);
    if (!verdict.ok) {
      if (verdict.first) {
        notice(svc, ctx, texts.rateLimitedText(Math.ceil(verdict.retryInMs / 1000)));
      }
      return;
    }
    if (svc.slots.waiting >= svc.maxQueued) {
      notice(svc, ctx, texts.BUSY_TEXT);
      return;
    }
    inTurn(ctx, () => answer(svc, ctx, question));
  });
  c.on("message", (ctx) => {
    if (ctx.chat.type === "private") notice(svc, ctx, texts.NOT_TEXT);
  });
  return c;
}
