/**
 * Prompt templates for semantic completion (paper §2.1.1, Appendix G structure: JSON answer, four
 * options with one correct letter, a ~30-word detailed prompt, class-dependent question style, a
 * self-check before answering). The wording is ours.
 *
 * Each direction has one version string covering its generation and checking texts. It is part of
 * every cache key: change any text below → bump the version, or old cached outcomes are reused.
 */
import type { GenerationRecord, UnderstandingRecord } from '../data/schemas.js';
import type { LoadedImage } from './images.js';
import type { Direction } from './types.js';

/** The prompt template version of each direction; part of every cache key. */
export const TEMPLATE_VERSIONS: Record<Direction, string> = {
  u2c: 'u2c-1',
  g2qa: 'g2qa-1',
};

export type MessagePart = { type: 'text'; text: string } | { type: 'image'; image: LoadedImage };
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string | MessagePart[];
}

/** Prompt classes of generation data, each with its own question style (Appendix G). */
export type PromptClass = 'one_object' | 'two_object' | 'text' | 'ai_generated' | 'general';

/** Maps free-form `category` values ("One object", "two_objects", "OCR", "AI-generated") to a class. */
export function promptClassOf(category: string | undefined): PromptClass {
  const c = (category ?? '').toLowerCase().replace(/[^a-z0-9]/g, '');
  if (/^(one|single|1)objects?$/.test(c)) return 'one_object';
  if (/^(two|2)objects?$/.test(c)) return 'two_object';
  if (c === 'text' || c === 'ocr' || c === 'textrendering') return 'text';
  if (/^(aigenerated|aigc|ai|synthetic|generated)(images?)?$/.test(c)) return 'ai_generated';
  return 'general';
}

const CLASS_STYLE: Record<PromptClass, string> = {
  one_object:
    'The prompt is about a single object. Ask about at least two of its properties at once (for example its colour together with how many there are, or its shape together with its colour).',
  two_object:
    'The prompt is about two objects. Ask about how they relate: where one is relative to the other, combined with their colours or their counts. The question must involve more than one attribute.',
  text: 'The prompt asks for rendered text. Ask which exact text appears. Make the wrong options near-misses of the right one: swapped, dropped or look-alike letters, or words that sound the same.',
  ai_generated:
    'The prompt describes a synthetic, possibly unusual scene. Ask something that needs close looking: a texture, a pattern, an odd detail or an abstract relation between elements. No yes/no questions and nothing a glance would answer.',
  general:
    'Ask about the most specific visual details the prompt states: objects, counts, colours, positions, text or style.',
};

export function letters(n: number): string[] {
  return Array.from({ length: n }, (_, i) => String.fromCharCode(65 + i));
}

function formatChoices(choices: string[]): string {
  return choices.map((c, i) => `${letters(choices.length)[i]}. ${c}`).join('\n');
}

function withImage(image: LoadedImage | undefined, text: string): MessagePart[] | string {
  return image
    ? [
        { type: 'image', image },
        { type: 'text', text },
      ]
    : text;
}

// ---------------------------------------------------------------- understanding → caption

export function u2cGenerate(
  rec: UnderstandingRecord,
  image: LoadedImage,
  words: { min: number; max: number },
  redo?: Redo,
): ChatMessage[] {
  const system = [
    'You write text-to-image prompts for annotated photographs.',
    'You get a picture plus a multiple-choice question about it whose correct option is marked.',
    `Write one prompt of about 30 words (never fewer than ${words.min} or more than ${words.max}) from which an image generator could redraw this picture so that the same question keeps the same correct answer.`,
    'Rules:',
    '1. State explicitly every visual fact the question depends on: counts as numbers, colours, written text, relative positions, sizes.',
    '2. Describe only what the picture shows. Do not add objects, people, text or attributes that are not visible.',
    '3. Do not mention the question, the options or the answer letter, and do not write the prompt as a question.',
    '4. Before answering, list the facts the question depends on and make sure each one appears in the prompt and agrees with the picture.',
    'Answer with one JSON object and nothing else, in this shape:',
    '{"facts": ["<fact the question depends on>", "..."], "prompt": "<the text-to-image prompt>"}',
  ].join('\n');
  const ans = rec.choices[rec.answer.charCodeAt(0) - 65] ?? '';
  const user = [
    `Question: ${rec.question}`,
    `Options:\n${formatChoices(rec.choices)}`,
    `Correct option: ${rec.answer}. ${ans}`,
    ...redoLines(redo),
  ].join('\n\n');
  return [
    { role: 'system', content: system },
    { role: 'user', content: withImage(image, user) },
  ];
}

export function u2cCheck(rec: UnderstandingRecord, image: LoadedImage, caption: string): ChatMessage[] {
  const system = [
    'You are a strict reviewer of text-to-image prompts written for a photograph.',
    'You get the picture, a multiple-choice question about it with its correct option, and a candidate prompt.',
    'Mark the prompt "inconsistent" if any of these holds:',
    '- it names an object, person, count, colour, text or spatial relation that the picture contradicts or does not show;',
    '- it leaves out, or states differently, a fact needed to arrive at the marked correct option.',
    'Wording, style and harmless extra detail that the picture does show are not problems.',
    'Answer with one JSON object and nothing else:',
    '{"verdict": "consistent" or "inconsistent", "problems": ["<one short sentence per problem; empty when consistent>"]}',
  ].join('\n');
  const ans = rec.choices[rec.answer.charCodeAt(0) - 65] ?? '';
  const user = [
    `Question: ${rec.question}`,
    `Options:\n${formatChoices(rec.choices)}`,
    `Correct option: ${rec.answer}. ${ans}`,
    `Candidate prompt: ${caption}`,
  ].join('\n\n');
  return [
    { role: 'system', content: system },
    { role: 'user', content: withImage(image, user) },
  ];
}

// ---------------------------------------------------------------- generation → question/answer

export function g2qaGenerate(rec: GenerationRecord, image: LoadedImage | undefined, redo?: Redo): ChatMessage[] {
  const cls = promptClassOf(rec.category);
  const system = [
    'You write multiple-choice questions that test whether an image matches its text-to-image prompt.',
    image
      ? 'You get the prompt and the image made from it (or matched to it). The correct option must hold for both.'
      : 'You get the prompt only. The correct option must follow from what the prompt states.',
    CLASS_STYLE[cls],
    'Rules:',
    '1. Target what the prompt actually specifies; never ask about something it leaves open.',
    '2. Give exactly four options, A to D. Exactly one is correct; the other three are plausible but contradicted by the prompt. All four must differ.',
    '3. The question must not give the answer away.',
    '4. Before answering, check that the correct option is supported and that no other option could also be defended.',
    'Answer with one JSON object and nothing else, in this shape:',
    '{"question": "<question>", "choices": {"A": "<option>", "B": "<option>", "C": "<option>", "D": "<option>"}, "answer": "<A, B, C or D>"}',
  ].join('\n');
  const user = [
    `Prompt class: ${cls.replace('_', ' ')}`,
    `Text-to-image prompt: ${rec.prompt}`,
    ...redoLines(redo),
  ].join('\n\n');
  return [
    { role: 'system', content: system },
    { role: 'user', content: withImage(image, user) },
  ];
}

export function g2qaCheck(
  rec: GenerationRecord,
  image: LoadedImage | undefined,
  qa: { question: string; choices: string[]; answer: string },
): ChatMessage[] {
  const system = [
    'You are a strict reviewer of multiple-choice questions derived from a text-to-image prompt.',
    image
      ? 'You get the prompt, the matching image and a candidate question.'
      : 'You get the prompt and a candidate question.',
    'Mark the question "inconsistent" if any of these holds:',
    `- the marked option is not supported by the prompt${image ? ' or is contradicted by the image' : ''};`,
    '- another option is equally defensible;',
    '- it asks about something the prompt does not specify;',
    '- the question itself reveals the answer.',
    'Answer with one JSON object and nothing else:',
    '{"verdict": "consistent" or "inconsistent", "problems": ["<one short sentence per problem; empty when consistent>"]}',
  ].join('\n');
  const ans = qa.choices[qa.answer.charCodeAt(0) - 65] ?? '';
  const user = [
    `Text-to-image prompt: ${rec.prompt}`,
    `Question: ${qa.question}`,
    `Options:\n${formatChoices(qa.choices)}`,
    `Marked correct option: ${qa.answer}. ${ans}`,
  ].join('\n\n');
  return [
    { role: 'system', content: system },
    { role: 'user', content: withImage(image, user) },
  ];
}

// ---------------------------------------------------------------- feedback turns

/**
 * The drafts the checker rejected so far (oldest first) and its objections to each. All of them go
 * back to the model, so each regeneration request differs from the previous ones.
 */
export type Redo = { draft: string; problems: string[] }[];

function redoLines(redo: Redo | undefined): string[] {
  if (!redo?.length) return [];
  const lines = redo.map(
    (r, i) =>
      `Rejected answer ${i + 1}:\n${r.draft}\nReviewer's objections:\n${r.problems.map((p) => `- ${p}`).join('\n')}`,
  );
  return [`Earlier answers were rejected by a reviewer.`, ...lines, 'Write a new answer that fixes every objection.'];
}

/** Follows an output that failed validation, so the model can correct exactly that. */
export function formatFeedback(error: string): string {
  return [
    `That reply was not accepted: ${error}`,
    'Reply again with only the JSON object in the required shape: no other text, no comments.',
  ].join('\n');
}
