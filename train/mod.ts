// @medglm/train public entry.
export {};
