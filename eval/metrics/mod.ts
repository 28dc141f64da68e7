/** Overlap metrics for open questions, character level for Chinese. */
export { metricTokens } from "./tokens.ts";
export { lcsLength, type RougeL, rougeL, rougeLTokens } from "./rouge.ts";
export { bleu4, bleuTokens, ngramMatches } from "./bleu.ts";
