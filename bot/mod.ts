// @medglm/bot public entry.
export {};
