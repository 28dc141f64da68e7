/**
 * Admin middleware: who may talk to the bot. In groups only messages addressed to it (a mention, a
 * reply to it, a command for it); then the allowlist. A user off the allowlist is told once, then
 * not again for `refusalIntervalMs` (the counter lives in the store, so it holds across replicas).
 */
import { Composer } from "npm:grammy@1.46.0/web";
import { isAddressed, isCommandForMe } from "../addressing.ts";
import { type BotServices, isGroupChat, type MedContext, notice } from "../context.ts";
import * as texts from "../texts.ts";

export function admission(svc: BotServices): Composer<MedContext> {
  const c = new Composer<MedContext>();
  c.on("message", async (ctx, next) => {
    const msg = ctx.message;
    if (!ctx.from || ctx.from.is_bot) return;
    if (isGroupChat(ctx) && !isCommandForMe(msg, ctx.me) && !isAddressed(msg, ctx.me)) return;
    if (svc.allow.size > 0 && !svc.allow.has(ctx.from.id)) {
      svc.log("info", `refused user ${ctx.from.id} (not on the allowlist)`);
      const store = await svc.store();
      const verdict = await store.takeRate(`refusal:${ctx.from.id}`, {
        max: 1,
        windowMs: svc.refusalIntervalMs,
      });
      if (verdict.ok) notice(svc, ctx, texts.REFUSAL_TEXT);
      return;
    }
    await next();
  });
  return c;
}
