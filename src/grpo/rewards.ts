/**
 * Understanding rewards (PairUni §2.2): r_Und = Acc(y_pred, y_true) on multiple-choice answers,
 * with an optional format reward for the `<think>…</think><answer>X</answer>` layout.
 */

/** The understanding prompt text: question, lettered choices, and the answer-format instruction. */
export const DEFAULT_UND_INSTRUCTION =
  '{question}\n{choices}\nOutput the thinking process in <think> </think> and final answer (option letter) in <answer> </answer> tags.';

export function letter(i: number): string {
  return String.fromCharCode(65 + i);
}

/** Renders `{question}` and `{choices}` ("A. …" lines) into the instruction template. */
export function renderQuestion(
  question: string,
  choices: readonly string[],
  template = DEFAULT_UND_INSTRUCTION,
): string {
  const lines = choices.map((c, i) => `${letter(i)}. ${c}`).join('\n');
  return template.replaceAll('{question}', question).replaceAll('{choices}', lines);
}

const ANSWER_TAG = /<answer>([\s\S]*?)<\/answer>/;
const THINK_BLOCK = /<think>[\s\S]*?<\/think>/g;
const FORMAT = /^\s*<think>[\s\S]*?<\/think>\s*<answer>[\s\S]*?<\/answer>\s*$/;
/** An option letter opening the text: "B", "(B) …", "B. …", "B) …", "B: …" (not "I think …"). */
const LEADING_LETTER = /^\s*(?:\(([A-Z])\)|([A-Z])(?=\s*$|[.):,]))/;

/**
 * The option letter a completion answers, or null. Inside `<answer>…</answer>` when present;
 * otherwise the text with any `<think>` block removed. The letter must open the answer text, so
 * prose such as "I think…" does not count as answering "I".
 */
export function parseAnswerLetter(completion: string): string | null {
  const tag = ANSWER_TAG.exec(completion);
  const body = tag ? tag[1] : completion.replace(THINK_BLOCK, '').replace(/<\/?(think|answer)>/g, '');
  const m = LEADING_LETTER.exec(body);
  return m ? (m[1] ?? m[2]) : null;
}

/** 1 when the completion is exactly `<think>…</think><answer>…</answer>` (whitespace allowed). */
export function formatOk(completion: string): boolean {
  return FORMAT.test(completion);
}

export interface UndRewardParts {
  reward: number;
  correct: boolean;
  format: boolean;
  letter: string | null;
}

/** r = Acc + formatWeight · Format. */
export function undReward(completion: string, answer: string, formatWeight = 0): UndRewardParts {
  const l = parseAnswerLetter(completion);
  const correct = l !== null && l === answer.trim().toUpperCase();
  const format = formatOk(completion);
  return {
    reward: (correct ? 1 : 0) + (formatWeight ? formatWeight * (format ? 1 : 0) : 0),
    correct,
    format,
    letter: l,
  };
}
