/** The web chat page, as a string the app serves at `/`. */
export { CHAT_PAGE_HTML, CHAT_PAGE_SECURITY_POLICY } from "./chat_page.ts";
