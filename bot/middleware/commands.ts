/** `/start`, `/help` and `/reset`. */
import { Composer } from "npm:grammy@1.46.0/web";
import { type BotServices, inTurn, type MedContext, notice } from "../context.ts";
import * as texts from "../texts.ts";

export function commands(svc: BotServices): Composer<MedContext> {
  const c = new Composer<MedContext>();
  c.command(
    "start",
    (ctx) => notice(svc, ctx, texts.startText(svc.engine.info.model, svc.engine.info.architecture)),
  );
  c.command("help", (ctx) => notice(svc, ctx, texts.HELP_TEXT));
  c.command("reset", (ctx) =>
    inTurn(ctx, async () => {
      await (await svc.store()).clearHistory(ctx.chat.id);
      await svc.say(ctx, texts.RESET_TEXT);
    }));
  return c;
}
