/**
 * The label that is not scored: positions whose label is IGNORE_INDEX add nothing to the loss
 * (PyTorch's `ignore_index`; the ChatGLM spec's −100, tests/fixtures/chatglm6b-tiny/README.md §8).
 * Data building writes it into label masks, the training batch pads with it, the loss skips it.
 */
export const IGNORE_INDEX = -100;
